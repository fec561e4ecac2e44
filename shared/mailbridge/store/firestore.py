"""FirestoreStore: the Store on Cloud Firestore (or its emulator); atomic ops are server-checked preconditions."""
from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from mailbridge import clock
from mailbridge.errors import NotFoundError, StoreUnavailableError
from mailbridge.store import RANGE_OPS, check_field, check_filters, counter_value, same_value, type_rank
from mailbridge.store.base import Document, Filter, Store

TTL_FIELD = "ttl"          # infra/ declares a TTL policy on this field for every collection
MAX_ATTEMPTS = 50          # tries on contention (the library's 5 is too few for 8 racing writers)
_DECODE = re.compile(r"\.([01])")


def encode_id(doc_id: str) -> str:
    """A valid Firestore document id for any non-empty string, keeping the order of ids.

    "." -> ".0" and "/" -> ".1" everywhere; a leading "^" -> "^0" and "_" -> "^1" (so no id is
    ".", ".." or "__x__"). Each code sorts where its character did and none is a prefix of
    another, so encoded ids sort as the raw ids do and `__name__` order is id order.
    """
    if not isinstance(doc_id, str) or not doc_id:
        raise ValueError("document ids are non-empty strings")
    out = doc_id.replace(".", ".0").replace("/", ".1")
    if out[0] in "^_":
        out = ("^0" if out[0] == "^" else "^1") + out[1:]
    return out


def decode_id(encoded: str) -> str:
    """The raw id `encode_id` made `encoded` from."""
    head = ""
    if encoded[:2] in ("^0", "^1"):
        head, encoded = ("^" if encoded[1] == "0" else "_"), encoded[2:]
    return head + _DECODE.sub(lambda m: "./"[int(m.group(1))], encoded)


class FirestoreStore(Store):
    """The Store on Firestore `database` of `project` (default: the library's, which honours
    GOOGLE_CLOUD_PROJECT and FIRESTORE_EMULATOR_HOST). The client is built on first use.

    The expiry lives in the Timestamp field `ttl` (so `ttl` is refused as a top-level data
    field) and is stripped from returned documents; reads drop expired documents themselves,
    since Firestore's TTL deletes them only within ~24 h.
    """

    def __init__(self, project: str | None = None, database: str = "(default)", client: Any = None):
        self._project = project
        self._database = database or "(default)"
        self._client = client
        self._owns_client = client is None   # a client passed in is the caller's to close
        self._lock = threading.Lock()

    @property
    def client(self) -> firestore.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    with _errors():
                        self._client = firestore.Client(project=self._project, database=self._database)
        return self._client

    # -- reads ---------------------------------------------------------------------------

    def get(self, collection: str, doc_id: str) -> Document | None:
        with _errors():
            snap = self._ref(collection, doc_id).get()
        return _live(snap, clock.now())

    def get_many(self, collection: str, doc_ids: Sequence[str]) -> dict[str, Document]:
        ids = list(dict.fromkeys(doc_ids))
        if not ids:
            return {}
        now = clock.now()
        with _errors():
            snaps = list(self.client.get_all([self._ref(collection, i) for i in ids]))
        docs = (_live(snap, now) for snap in snaps)
        return {doc["id"]: doc for doc in docs if doc is not None}

    def query(self, collection: str, where: Iterable[Filter] = (), *, order_by: str | None = None,
              descending: bool = False, limit: int | None = None,
              start_after: tuple[Any, str] | None = None) -> list[Document]:
        filters = check_filters(where)
        if order_by is not None:
            check_field(order_by)
        if any(op == "in" and not value for _, op, value in filters) or limit == 0:
            return []
        base = self.client.collection(collection)
        for field, op, value in filters:
            base = base.where(filter=FieldFilter(field, op, value))
        unequal = {field for field, op, _ in filters if op in RANGE_OPS or op == "!="}
        with _errors():
            if unequal - {order_by} or (descending and not order_by):
                # Firestore orders by every inequality field before the id, and the emulator
                # refuses descending id scans, so it cannot serve "order_by, then id" here:
                # read all matches and order them as the contract says.
                return _in_memory(base.stream(), order_by, descending, limit, start_after)
            return self._paged(base, order_by, descending, limit, start_after)

    def _paged(self, base: Any, order_by: str | None, descending: bool, limit: int | None,
               start_after: tuple[Any, str] | None) -> list[Document]:
        direction = firestore.Query.DESCENDING if descending else firestore.Query.ASCENDING
        query = base.order_by(order_by, direction=direction) if order_by else base
        query = query.order_by("__name__", direction=direction)
        cursor: Any = None
        if start_after is not None:
            name = encode_id(start_after[1])
            cursor = [start_after[0], name] if order_by else [name]
        found: list[Document] = []
        while True:   # expired documents are dropped here, so a page may need topping up
            page = query.start_after(cursor) if cursor is not None else query
            wanted = None if limit is None else limit - len(found)
            snaps = list((page.limit(wanted) if wanted else page).stream())
            now = clock.now()
            found += [doc for doc in (_live(s, now) for s in snaps) if doc is not None]
            if wanted is None or len(found) >= limit or len(snaps) < wanted:
                return found
            cursor = snaps[-1]

    # -- writes --------------------------------------------------------------------------

    def put(self, collection: str, doc_id: str, data: Document, *, expires_at: float | None = None) -> Document:
        fields = _fields(data, doc_id, expires_at)
        with _errors():
            self._ref(collection, doc_id).set(fields)
        return _with_id(data, doc_id)

    def create(self, collection: str, doc_id: str, data: Document, *, expires_at: float | None = None) -> bool:
        ref, fields = self._ref(collection, doc_id), _fields(data, doc_id, expires_at)
        with _errors():
            try:   # the common case, one round trip: nothing there yet
                ref.create(fields)
                return True
            except gexc.AlreadyExists:
                pass   # live, or expired and not yet deleted by the TTL policy
        return self._swap(ref, lambda snap, doc: (None, False) if doc is not None else (fields, True))

    def update(self, collection: str, doc_id: str, changes: Document) -> Document:
        def merge(snap: Any, doc: Document | None) -> tuple[Document, Document]:
            if doc is None:
                raise NotFoundError(f"{collection} document not found")
            doc = _with_id({**doc, **changes}, doc_id)
            return _fields(doc, doc_id, None, keep=(snap.to_dict() or {}).get(TTL_FIELD)), doc
        return self._swap(self._ref(collection, doc_id), merge)

    def delete(self, collection: str, doc_id: str) -> bool:
        return self.take(collection, doc_id) is not None

    def take(self, collection: str, doc_id: str) -> Document | None:
        # A delete conditioned on the update time we read: of many callers, one delete succeeds.
        ref = self._ref(collection, doc_id)
        with _errors():
            for _ in range(MAX_ATTEMPTS):
                snap = ref.get()
                if not snap.exists:
                    return None
                try:
                    ref.delete(option=self.client.write_option(last_update_time=snap.update_time))
                except gexc.FailedPrecondition:
                    continue   # changed or taken since the read: look again
                return _live(snap, clock.now())
        raise StoreUnavailableError("store busy: contention on one document")

    def compare_and_set(self, collection: str, doc_id: str, field: str, expected: Any,
                        data: Document, *, expires_at: float | None = None) -> bool:
        parts, fields = check_field(field), _fields(data, doc_id, expires_at)

        def swap(snap: Any, current: Any) -> tuple[Document | None, bool]:
            for part in parts:
                current = current.get(part) if isinstance(current, dict) else None
            return (fields, True) if same_value(current, expected) else (None, False)
        return self._swap(self._ref(collection, doc_id), swap)

    def increment(self, collection: str, doc_id: str, field: str, amount: int = 1, *,
                  expires_at: float | None = None) -> int:
        # Counters are hot: a server-side Increment on a live document (no lock, no retry
        # storm); creating or restarting an expired one is conditioned on what was read.
        ref = self._ref(collection, doc_id)
        with _errors():
            for _ in range(MAX_ATTEMPTS):
                snap = ref.get()
                if _live(snap, clock.now()) is not None:
                    counter_value((snap.to_dict() or {}).get(field))   # refuse a non-integer field
                    try:   # update() requires the document to exist
                        result = ref.update({FieldPath(field).to_api_repr(): firestore.Increment(amount)})
                    except gexc.NotFound:
                        continue
                    return int(result.transform_results[0].integer_value)
                if snap.exists:   # expired but not yet deleted by the TTL policy
                    try:
                        ref.delete(option=self.client.write_option(last_update_time=snap.update_time))
                    except gexc.FailedPrecondition:
                        continue
                try:
                    ref.create(_fields({field: amount}, doc_id, expires_at))
                    return amount
                except gexc.AlreadyExists:
                    continue
        raise StoreUnavailableError("store busy: contention on one document")

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._owns_client:
            client.close()

    # -- plumbing ------------------------------------------------------------------------

    def _ref(self, collection: str, doc_id: str) -> Any:
        return self.client.collection(collection).document(encode_id(doc_id))

    def _swap(self, ref: Any, decide: Callable[[Any, Document | None], tuple[Document | None, Any]]) -> Any:
        """Read, let `decide(snapshot, live document)` return (new fields or None, result), and
        write the new fields only if the document is unchanged since the read; else read again.

        Optimistic concurrency on the document's update time (a server-checked precondition),
        not a transaction: the emulator's pessimistic locks stall racing transactions for ~2 s.
        """
        with _errors():
            for _ in range(MAX_ATTEMPTS):
                snap = ref.get()
                fields, result = decide(snap, _live(snap, clock.now()))
                if fields is None or self._replace(ref, snap, fields):
                    return result
        raise StoreUnavailableError("store busy: contention on one document")

    def _replace(self, ref: Any, snap: Any, fields: Document) -> bool:
        """Make `fields` the whole document if it is as `snap` saw it; False if it changed since."""
        try:
            if not snap.exists:
                ref.create(fields)
                return True
            gone = {key: firestore.DELETE_FIELD for key in (snap.to_dict() or {}) if key not in fields}
            ref.update({FieldPath(key).to_api_repr(): value for key, value in {**gone, **fields}.items()},
                       option=self.client.write_option(last_update_time=snap.update_time))
            return True
        except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.NotFound):
            return False


@contextmanager
def _errors() -> Iterator[None]:
    """Translate the library's errors once, here; the cause stays attached for logs."""
    try:
        yield
    except (gexc.GoogleAPIError, auth_exc.GoogleAuthError) as exc:
        raise StoreUnavailableError(f"store unavailable (firestore {type(exc).__name__})") from exc


def _live(snap: Any, now: float) -> Document | None:
    """The document of a snapshot, or None if missing or expired; `ttl` removed."""
    if not snap.exists:
        return None
    data = snap.to_dict() or {}
    ttl = data.pop(TTL_FIELD, None)
    if ttl is not None and ttl.timestamp() <= now:
        return None
    data["id"] = decode_id(snap.id)
    return data


def _fields(data: Document, doc_id: str, expires_at: float | None, keep: Any = None) -> Document:
    if TTL_FIELD in data:
        raise ValueError(f"{TTL_FIELD!r} is reserved for the expiry; pass expires_at")
    fields = _with_id(data, doc_id)
    if expires_at is not None:
        fields[TTL_FIELD] = datetime.fromtimestamp(expires_at, tz=timezone.utc)
    elif keep is not None:
        fields[TTL_FIELD] = keep
    return fields


def _with_id(data: Document, doc_id: str) -> Document:
    return {**data, "id": doc_id}


def _in_memory(snaps: Iterable[Any], order_by: str | None, descending: bool, limit: int | None,
               start_after: tuple[Any, str] | None) -> list[Document]:
    now = clock.now()
    docs = [doc for doc in (_live(s, now) for s in snaps) if doc is not None]
    parts = check_field(order_by) if order_by else []

    def key(value: Any, doc_id: str) -> tuple:
        if not order_by:
            return (doc_id,)
        rank = type_rank(value)
        if isinstance(value, (list, dict)):   # no promised order inside these; just a stable one
            value = json.dumps(value, sort_keys=True)
        return rank, (0 if value is None else int(value) if isinstance(value, bool) else value), doc_id

    keyed = []
    for doc in docs:
        value, present = doc, True
        for part in parts:
            present = isinstance(value, dict) and part in value
            value = value.get(part) if present else None
            if not present:
                break
        if present:   # as Firestore: a document without the order field is not listed
            keyed.append((key(value, doc["id"]), doc))
    keyed.sort(key=lambda item: item[0], reverse=descending)
    if start_after is not None:
        after = key(start_after[0], start_after[1])
        keyed = [(k, d) for k, d in keyed if (k < after if descending else k > after)]
    return [doc for _, doc in keyed[:limit]]
