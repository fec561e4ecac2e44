"""SqliteStore: the Store on one SQLite file (WAL), safe across threads and processes; the local default."""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from mailbridge import clock
from mailbridge.errors import NotFoundError, StoreUnavailableError
from mailbridge.store import check_field, check_filters, counter_value, same_value, type_rank
from mailbridge.store.base import Document, Filter, Store

BUSY_TIMEOUT_SECONDS = 30.0
_SCHEMA = """CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,          -- the JSON document, "id" included
    expires_at REAL,             -- epoch seconds; NULL never expires
    PRIMARY KEY (collection, id))"""
_LIVE = "collection = ? AND id = ? AND (expires_at IS NULL OR expires_at > ?)"
# Firestore's order of types, so that both backends sort mixed values alike.
_RANK = ("CASE json_type(data, {p}) WHEN 'null' THEN 0 WHEN 'true' THEN 1 WHEN 'false' THEN 1 "
         "WHEN 'integer' THEN 2 WHEN 'real' THEN 2 WHEN 'text' THEN 3 WHEN 'array' THEN 4 ELSE 5 END")
_VALUE = "CASE json_type(data, {p}) WHEN 'null' THEN 0 ELSE json_extract(data, {p}) END"


class SqliteStore(Store):
    """The Store on the SQLite file at `path` (its folder is created if missing).

    One connection per thread (re-opened after a fork); writes that read first run in
    `BEGIN IMMEDIATE`, so concurrent writers, in threads or processes, queue on the file lock.
    """

    def __init__(self, path: str | os.PathLike):
        self._path = str(path)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._ready = False

    # -- reads ---------------------------------------------------------------------------

    def get(self, collection: str, doc_id: str) -> Document | None:
        with self._errors():
            row = self._conn().execute(f"SELECT data FROM documents WHERE {_LIVE}",
                                       (collection, doc_id, clock.now())).fetchone()
        return json.loads(row[0]) if row else None

    def get_many(self, collection: str, doc_ids: Sequence[str]) -> dict[str, Document]:
        ids = list(dict.fromkeys(doc_ids))
        found: dict[str, Document] = {}
        now = clock.now()
        with self._errors():
            for start in range(0, len(ids), 500):   # stay far below SQLite's variable limit
                chunk = ids[start:start + 500]
                rows = self._conn().execute(
                    f"SELECT id, data FROM documents WHERE collection = ? AND id IN "
                    f"({','.join('?' * len(chunk))}) AND (expires_at IS NULL OR expires_at > ?)",
                    (collection, *chunk, now)).fetchall()
                found.update((row[0], json.loads(row[1])) for row in rows)
        return found

    def query(self, collection: str, where: Iterable[Filter] = (), *, order_by: str | None = None,
              descending: bool = False, limit: int | None = None,
              start_after: tuple[Any, str] | None = None) -> list[Document]:
        sql = ["SELECT data FROM documents WHERE collection = ? AND (expires_at IS NULL OR expires_at > ?)"]
        args: list[Any] = [collection, clock.now()]
        for field, op, value in check_filters(where):
            clause, clause_args = _filter_sql(_path(field), op, value)
            sql.append(f"AND {clause}")
            args += clause_args
        direction, cmp = ("DESC", "<") if descending else ("ASC", ">")
        if order_by is not None:
            path = _path(order_by)
            rank, value = _RANK.format(p="?"), _VALUE.format(p="?")
            sql.append("AND json_type(data, ?) IS NOT NULL")   # as Firestore: no field, not listed
            args.append(path)
            if start_after is not None:
                sql.append(f"AND ({rank}, {value}, id) {cmp} (?, ?, ?)")
                args += [path, path, path, *_sort_key(start_after[0]), start_after[1]]
            sql.append(f"ORDER BY {rank} {direction}, {value} {direction}, id {direction}")
            args += [path, path, path]
        else:
            if start_after is not None:
                sql.append(f"AND id {cmp} ?")
                args.append(start_after[1])
            sql.append(f"ORDER BY id {direction}")
        if limit is not None:
            sql.append("LIMIT ?")
            args.append(int(limit))
        with self._errors():
            rows = self._conn().execute(" ".join(sql), args).fetchall()
        return [json.loads(row[0]) for row in rows]

    # -- writes --------------------------------------------------------------------------

    def put(self, collection: str, doc_id: str, data: Document, *, expires_at: float | None = None) -> Document:
        doc = _with_id(data, doc_id)
        with self._errors():
            self._conn().execute(
                "INSERT INTO documents (collection, id, data, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
                (collection, doc_id, _dumps(doc), expires_at))
        return doc

    def create(self, collection: str, doc_id: str, data: Document, *, expires_at: float | None = None) -> bool:
        # One statement, so atomic without a transaction: an expired row is overwritten, a live one kept.
        with self._errors():
            cursor = self._conn().execute(
                "INSERT INTO documents (collection, id, data, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at "
                "WHERE documents.expires_at IS NOT NULL AND documents.expires_at <= ?",
                (collection, doc_id, _dumps(_with_id(data, doc_id)), expires_at, clock.now()))
        return cursor.rowcount == 1

    def update(self, collection: str, doc_id: str, changes: Document) -> Document:
        with self._write() as conn:
            row = conn.execute(f"SELECT data FROM documents WHERE {_LIVE}",
                               (collection, doc_id, clock.now())).fetchone()
            if row is None:
                raise NotFoundError(f"{collection} document not found")
            doc = _with_id({**json.loads(row[0]), **changes}, doc_id)
            conn.execute("UPDATE documents SET data = ? WHERE collection = ? AND id = ?",
                         (_dumps(doc), collection, doc_id))
        return doc

    def delete(self, collection: str, doc_id: str) -> bool:
        return self.take(collection, doc_id) is not None

    def take(self, collection: str, doc_id: str) -> Document | None:
        # DELETE … RETURNING is one atomic statement: only one caller gets the row back.
        with self._errors():
            row = self._conn().execute(
                "DELETE FROM documents WHERE collection = ? AND id = ? RETURNING data, expires_at",
                (collection, doc_id)).fetchone()
        if row is None or (row[1] is not None and row[1] <= clock.now()):
            return None
        return json.loads(row[0])

    def compare_and_set(self, collection: str, doc_id: str, field: str, expected: Any,
                        data: Document, *, expires_at: float | None = None) -> bool:
        parts = check_field(field)
        with self._write() as conn:
            row = conn.execute(f"SELECT data FROM documents WHERE {_LIVE}",
                               (collection, doc_id, clock.now())).fetchone()
            current = _nested(json.loads(row[0]), parts) if row else None
            if not same_value(current, expected):
                return False
            conn.execute(
                "INSERT INTO documents (collection, id, data, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
                (collection, doc_id, _dumps(_with_id(data, doc_id)), expires_at))
        return True

    def increment(self, collection: str, doc_id: str, field: str, amount: int = 1, *,
                  expires_at: float | None = None) -> int:
        with self._write() as conn:
            row = conn.execute(f"SELECT data, expires_at FROM documents WHERE {_LIVE}",
                               (collection, doc_id, clock.now())).fetchone()
            doc, expiry = (json.loads(row[0]), row[1]) if row else ({}, expires_at)
            value = counter_value(doc.get(field)) + amount
            doc = _with_id({**doc, field: value}, doc_id)
            conn.execute(
                "INSERT INTO documents (collection, id, data, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
                (collection, doc_id, _dumps(doc), expiry))
        return value

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for conn in connections:
            conn.close()

    # -- plumbing ------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid():   # forked: the parent's connections must not be used here
            with self._lock:
                self._pid, self._connections, self._local = os.getpid(), [], threading.local()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, so transactions are exactly the BEGINs we write.
        conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        with self._lock:
            if not self._ready:
                _prepare(conn)
                self._ready = True
        conn.execute("PRAGMA synchronous = NORMAL")     # safe with WAL; skips an fsync per commit
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"store unavailable (sqlite {type(exc).__name__}: {exc})") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A read-then-write transaction: BEGIN IMMEDIATE takes the write lock before the read."""
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


def _prepare(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL and create the table, once per store, retrying a busy file.

    Changing the journal mode answers SQLITE_BUSY at once, without the busy handler, while
    another process holds the file, hence the loop.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")   # persistent in the file; readers never block writers
            conn.execute(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _filter_sql(path: str, op: str, value: Any) -> tuple[str, list[Any]]:
    """SQL for one checked filter, comparing only values of the same type (as Firestore does)."""
    if op == "in":
        if not value:
            return "0", []
        clauses = [_filter_sql(path, "==", v) for v in value]
        return "(" + " OR ".join(c for c, _ in clauses) + ")", [a for _, args in clauses for a in args]
    if op == "!=":
        # Firestore: `!=` never matches a missing field or null, and matches values of other types.
        present = "json_type(data, ?) NOT IN ('null')"
        if value is None:
            return present, [path]
        eq, eq_args = _filter_sql(path, "==", value)
        return f"({present} AND NOT {eq})", [path, *eq_args]
    if value is None:          # == None: a present null (check_filters refused ranges on None)
        return "json_type(data, ?) = 'null'", [path]
    if isinstance(value, bool):
        if op == "==":
            return f"json_type(data, ?) = '{'true' if value else 'false'}'", [path]
        types, value = "('true', 'false')", int(value)
    elif isinstance(value, str):
        types = "('text')"
    else:
        types = "('integer', 'real')"
    return f"(json_type(data, ?) IN {types} AND json_extract(data, ?) {op} ?)", [path, path, value]


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return 0, 0
    if isinstance(value, bool):
        return 1, int(value)
    if isinstance(value, (list, dict)):
        return type_rank(value), _dumps(value)
    return type_rank(value), value


def _path(field: str) -> str:
    return "$." + ".".join(check_field(field))


def _nested(doc: Document, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _with_id(data: Document, doc_id: str) -> Document:
    return {**data, "id": doc_id}


def _dumps(doc: Any) -> str:
    # allow_nan=False: SQLite's JSON functions reject NaN, so refuse it before it is stored.
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
