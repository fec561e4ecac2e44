"""Reading mail (API.md section 5): fanned-out search and thread listings, one message, one thread, thread context.

Every use case takes the caller (`tenant_id` and `permissions`, e.g. api.auth.Principal): an id of
another tenant or of a connection the key does not see is `404 not_found`, and `visible_fields` is
applied last, to every email (a thread's messages too). Listings ask every selected connection in
parallel and merge newest first; a connection that fails is reported in `errors` while the others
answer (unless it was the only one asked: then its error is the answer), and it is left out of the
following pages (so that paging always ends).

Stored copies: a live `get_thread` refreshes THREADS[<conn>:<thread id>] = {tenant_id, connection_id,
thread_id, thread: {summary fields}, message_keys, synced_ts} and MESSAGES[<conn>:<message id>] =
{tenant_id, connection_id, thread_id, received_at, email: {the email object}, stored_ts} (fields others
keep on a MESSAGES document are left alone). THREAD_CONTEXTS holds the customer's object as JSON text.
"""
from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

from mailbridge import clock
from mailbridge.core.connections import get_connection
from mailbridge.core.ids import PREFIXES, Cursor, PublicId, decode_page_token, encode_page_token, parse_id
from mailbridge.core.mailbox import provider_for
from mailbridge.core.parse import EMAIL_FIELDS
from mailbridge.core.permissions import Permissions
from mailbridge.errors import (ForbiddenError, InvalidRequestError, MailbridgeError, NotFoundError,
                               PayloadTooLargeError)
from mailbridge.providers.base import AttachmentContent, MailProvider, Page, SearchQuery
from mailbridge.runtime import Runtime
from mailbridge.store.base import CONNECTIONS, MESSAGES, THREAD_CONTEXTS, THREADS

log = logging.getLogger("mailbridge.read")

CONTEXT_MAX_BYTES = 64 * 1024
FAN_OUT_WORKERS = 16
MAX_REFILLS = 8            # extra provider pages one listing page may need (see _paged)
# Thread-level fields and the email fields they are made of: hidden unless all of those are visible.
_THREAD_FIELDS = {"subject": ("subject",), "snippet": ("snippet",), "participants": ("from", "to", "cc"),
                  "last_message_at": ("received_at",), "is_unread": ("is_read",), "labels": ("labels",)}

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


class Caller(Protocol):
    tenant_id: str
    permissions: Permissions


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:   # built on first use and kept for the instance: threads are reused
            _pool = ThreadPoolExecutor(FAN_OUT_WORKERS, thread_name_prefix="mailbridge-read")
        return _pool


# --- connections and visibility -------------------------------------------------------------------

def _require(caller: Caller, operation: str) -> None:
    if not caller.permissions.allows(operation):
        raise ForbiddenError(f"this API key may not {operation}", details={"operation": operation})


def _visible_connection(runtime: Runtime, caller: Caller, connection_id: str, missing: str) -> dict:
    """The connection record, or NotFoundError(`missing`) for an unknown, foreign or hidden one."""
    try:
        record = get_connection(runtime, connection_id)
    except NotFoundError:
        record = None
    if (record is None or record.get("tenant_id") != caller.tenant_id
            or not caller.permissions.sees_connection(connection_id)):
        raise NotFoundError(missing)
    return record


def _owner(runtime: Runtime, caller: Caller, pid: PublicId, what: str) -> dict:
    record = _visible_connection(runtime, caller, pid.connection_id, f"{what} {pid} not found")
    if PREFIXES.get(record.get("provider")) != pid.prefix:
        raise NotFoundError(f"{what} {pid} not found")
    return record


def _mailbox(runtime: Runtime, caller: Caller, message_id: str) -> tuple[PublicId, MailProvider]:
    pid = parse_id(message_id, what="message")
    return pid, provider_for(runtime, _owner(runtime, caller, pid, "message"))


def select_connections(runtime: Runtime, caller: Caller, connection_ids: list[str] | None = None,
                       user_id: str | None = None) -> list[dict]:
    """The connections a listing asks: the named ones (404 if one is not visible), else every visible,
    connected one of the tenant, oldest first; `user_id` narrows either."""
    if connection_ids:
        records = [_visible_connection(runtime, caller, cid, f"connection {cid} not found")
                   for cid in dict.fromkeys(connection_ids)]
    else:
        where = [("tenant_id", "==", caller.tenant_id)] + ([("user_id", "==", user_id)] if user_id else [])
        records = sorted((r for r in runtime.store.query(CONNECTIONS, where)
                          if caller.permissions.sees_connection(r["id"]) and not r.get("disconnected_ts")),
                         key=lambda r: (r.get("created_ts") or 0, r["id"]))
    return [r for r in records if user_id is None or r.get("user_id") == user_id]


def _shown(caller: Caller, body: dict) -> dict:
    """`access_info` on a read answer, only for restricted keys."""
    info = caller.permissions.access_info()
    if info is not None:
        body["access_info"] = info
    return body


def _hide_thread(perms: Permissions, thread: dict) -> dict:
    if perms.visible_fields is None:
        return thread
    visible = set(perms.visible_fields)
    out = {k: (None if k in _THREAD_FIELDS and not visible.issuperset(_THREAD_FIELDS[k]) else v)
           for k, v in thread.items()}
    if isinstance(out.get("messages"), list):
        out["messages"] = [perms.hide_fields(m) for m in out["messages"]]
    return out


# --- fan-out and merge ----------------------------------------------------------------------------

Fetch = Callable[[MailProvider, "str | None", int], Page]


@dataclass
class _Source:
    """One connection in a listing: its buffered items (each with the cursor that refetches it)."""
    connection: dict
    provider: MailProvider | None = None
    buffer: list[tuple[dict, Cursor]] = field(default_factory=list)
    next_token: str | None = None
    error: Exception | None = None


def _load_all(runtime: Runtime, jobs: list[tuple[_Source, Cursor]], fetch: Fetch) -> None:
    """Fetch one provider page per source, in parallel; a failure is kept on its source."""
    def load(job: tuple[_Source, Cursor]) -> None:
        source, (token, size, skip) = job
        try:
            source.provider = source.provider or provider_for(runtime, source.connection)
            page = fetch(source.provider, token, size)
        except Exception as exc:   # reported per connection; the others still answer
            if not isinstance(exc, MailbridgeError):
                log.exception("listing %s failed", source.connection["id"])
            source.error = exc
            return
        source.buffer.extend((item, (token, size, i)) for i, item in enumerate(page.items) if i >= skip)
        source.next_token = page.next_page_token
    if len(jobs) == 1:
        load(jobs[0])   # no thread hop for the common single-connection case
    else:
        list(_executor().map(load, jobs))


def _error_entry(source: _Source) -> dict:
    exc = source.error
    code, message = ((exc.code, exc.message) if isinstance(exc, MailbridgeError)
                     else ("internal_error", "internal error"))
    return {"connection_id": source.connection["id"], "code": code, "message": message}


def _paged(runtime: Runtime, caller: Caller, *, kind: str, filters: dict, connections: list[dict],
           limit: int, page_token: str | None, fetch: Fetch,
           sort_key: Callable[[dict], Any]) -> tuple[list[dict], str | None, list[dict]]:
    """(items newest first, next page token or None, errors) over every connection.

    Each connection's cursor is (provider page token, page size, items already taken): its page is
    refetched exactly as first fetched and the taken items skipped, so nothing is lost or repeated
    whatever the provider's tokens mean. Round trips: one provider page per connection (list + batch
    on Gmail); a connection whose buffer runs dry before the page is full costs one more page."""
    cipher = runtime.cipher
    if page_token is not None:
        cursors = decode_page_token(cipher, page_token, tenant_id=caller.tenant_id, kind=kind, filters=filters)
        sources = [_Source(c) for c in connections if c["id"] in cursors]
        start = [cursors[s.connection["id"]] for s in sources]
    else:
        sources = [_Source(c) for c in connections]
        start = [(None, limit, 0)] * len(sources)
    _load_all(runtime, list(zip(sources, start)), fetch)
    if len(sources) == 1 and sources[0].error is not None:
        raise sources[0].error
    live = [s for s in sources if s.error is None]
    items: list[dict] = []
    refills = 0
    while len(items) < limit:
        dry = [s for s in live if not s.buffer and s.next_token is not None]
        if dry and refills < MAX_REFILLS:
            refills += 1
            jobs = [(s, (s.next_token, limit, 0)) for s in dry]
            for s in dry:
                s.next_token = None
            _load_all(runtime, jobs, fetch)
            live = [s for s in live if s.error is None]
            continue
        ready = [s for s in live if s.buffer]
        if not ready or dry:   # a dry source with more pages could hold the next item: stop short
            break
        best = max(ready, key=lambda s: sort_key(s.buffer[0][0]))
        items.append(best.buffer.pop(0)[0])
    ahead = {s.connection["id"]: s.buffer[0][1] if s.buffer else (s.next_token, limit, 0)
             for s in live if s.buffer or s.next_token is not None}
    token = encode_page_token(cipher, ahead, tenant_id=caller.tenant_id, kind=kind,
                              filters=filters) if ahead else None
    return items, token, [_error_entry(s) for s in sources if s.error is not None]


def _newest(key: str) -> Callable[[dict], tuple]:
    return lambda item: (item.get(key) or "", item.get("id") or "")


def search_emails(runtime: Runtime, caller: Caller, query: SearchQuery, *, connection_ids: list[str] | None,
                  user_id: str | None, limit: int, include_body: bool, page_token: str | None) -> dict:
    """`GET /v1/messages`: `{emails, has_more, next_page_token, errors}` (+ access_info)."""
    _require(caller, "search_emails")
    connections = select_connections(runtime, caller, connection_ids, user_id)
    filters = {"query": asdict(query), "connections": sorted(set(connection_ids or ())), "user_id": user_id}
    emails, token, errors = _paged(
        runtime, caller, kind="messages", filters=filters, connections=connections, limit=limit,
        page_token=page_token, sort_key=_newest("received_at"),
        fetch=lambda p, tok, size: p.search(query, limit=size, page_token=tok, include_body=include_body))
    return _shown(caller, {"emails": [caller.permissions.hide_fields(e) for e in emails],
                           "has_more": token is not None, "next_page_token": token, "errors": errors})


def list_threads(runtime: Runtime, caller: Caller, *, connection_ids: list[str] | None, q: str | None,
                 limit: int, page_token: str | None) -> dict:
    """`GET /v1/threads`: `{threads, next_page_token, has_more, errors}` (+ access_info), newest activity first."""
    _require(caller, "view_thread")
    connections = select_connections(runtime, caller, connection_ids)
    filters = {"q": q, "connections": sorted(set(connection_ids or ()))}
    threads, token, errors = _paged(
        runtime, caller, kind="threads", filters=filters, connections=connections, limit=limit,
        page_token=page_token, sort_key=_newest("last_message_at"),
        fetch=lambda p, tok, size: p.list_threads(q=q, limit=size, page_token=tok))
    return _shown(caller, {"threads": [_hide_thread(caller.permissions, t) for t in threads],
                           "next_page_token": token, "has_more": token is not None, "errors": errors})


# --- one message ----------------------------------------------------------------------------------

def get_email(runtime: Runtime, caller: Caller, message_id: str, *, include_body: bool) -> dict:
    _require(caller, "view_email")
    pid, provider = _mailbox(runtime, caller, message_id)
    email = provider.get_message(pid.provider_id, include_body=include_body)
    return _shown(caller, caller.permissions.hide_fields(email))


def get_raw(runtime: Runtime, caller: Caller, message_id: str) -> bytes:
    """The RFC 5322 bytes. A key with `visible_fields` would see hidden fields in them: 403."""
    _require(caller, "view_email")
    if caller.permissions.visible_fields is not None:
        raise ForbiddenError("this API key sees only some fields of an email; the raw message holds all",
                             details={"operation": "view_email"})
    pid, provider = _mailbox(runtime, caller, message_id)
    return provider.get_raw(pid.provider_id)


def get_attachment(runtime: Runtime, caller: Caller, message_id: str, attachment_id: str) -> AttachmentContent:
    """One attachment's bytes; a key whose `visible_fields` leave out `attachments` gets 403."""
    _require(caller, "view_email")
    visible = caller.permissions.visible_fields
    if visible is not None and "attachments" not in visible:
        raise ForbiddenError("this API key may not see attachments", details={"field": "attachments"})
    pid, provider = _mailbox(runtime, caller, message_id)
    return provider.get_attachment(pid.provider_id, attachment_id)


def update_email(runtime: Runtime, caller: Caller, message_id: str, *, is_read: bool | None = None,
                 add_labels: list[str] = (), remove_labels: list[str] = ()) -> dict:
    """PATCH: read state is the UNREAD label (Gmail's model; adapters map it); one modify call.
    `is_read` needs mark_as_read, labels need apply_labels. Idempotent."""
    add, remove = list(dict.fromkeys(add_labels)), list(dict.fromkeys(remove_labels))
    if is_read is None and not add and not remove:
        raise InvalidRequestError("body: give is_read, add_labels or remove_labels", field="body")
    if is_read is not None:
        _require(caller, "mark_as_read")
    if add or remove:
        _require(caller, "apply_labels")
    if is_read is not None and "UNREAD" not in (remove if is_read else add):
        (remove if is_read else add).append("UNREAD")
    if both := sorted(set(add) & set(remove)):
        raise InvalidRequestError(f"add_labels: {both[0]} is also removed (or contradicts is_read)",
                                  field="add_labels")
    pid, provider = _mailbox(runtime, caller, message_id)
    email = provider.modify(pid.provider_id, add_labels=add, remove_labels=remove)
    return _shown(caller, caller.permissions.hide_fields(email))


def delete_email(runtime: Runtime, caller: Caller, message_id: str, *, permanent: bool) -> None:
    """Trash, or delete for good (Gmail: 403 naming https://mail.google.com/ without that scope)."""
    _require(caller, "delete_email")
    pid, provider = _mailbox(runtime, caller, message_id)
    (provider.delete if permanent else provider.trash)(pid.provider_id)


# --- threads --------------------------------------------------------------------------------------

def get_thread(runtime: Runtime, caller: Caller, thread_id: str, *, source: str = "provider") -> dict:
    """Live (one upstream call; refreshes the stored copy) or `source="store"` (no upstream call,
    with `last_synced_at`; 404 if never synced). `context` is the customer's object or null."""
    _require(caller, "view_thread")
    pid = parse_id(thread_id, what="thread")
    record = _owner(runtime, caller, pid, "thread")
    if source == "store":
        thread = _stored_thread(runtime, caller, pid)
    else:
        thread = provider_for(runtime, record).get_thread(pid.provider_id)
        _save_thread(runtime, record, pid, thread)
    stored = runtime.store.get(THREAD_CONTEXTS, pid.store_key)
    thread["context"] = json.loads(stored["context_json"]) if stored else None
    return _shown(caller, _hide_thread(caller.permissions, thread))


def _save_thread(runtime: Runtime, record: dict, pid: PublicId, thread: dict) -> None:
    """Refresh the stored copy; a store failure is logged and never fails the live answer."""
    store, now = runtime.store, clock.now()
    base = {"tenant_id": record["tenant_id"], "connection_id": record["id"], "thread_id": str(pid)}
    try:
        emails = {parse_id(e["id"]).store_key: e for e in thread["messages"]}
        existing = store.get_many(MESSAGES, list(emails))
        for key, email in emails.items():
            if (existing.get(key) or {}).get("email") == email:
                continue   # unchanged since the last read: no write
            fields = {**base, "received_at": email.get("received_at"), "email": email, "stored_ts": now}
            if key in existing or not store.create(MESSAGES, key, fields):
                store.update(MESSAGES, key, fields)
        summary = {k: v for k, v in thread.items() if k not in ("messages", "context")}
        store.put(THREADS, pid.store_key, {**base, "thread": summary, "message_keys": list(emails),
                                           "synced_ts": now})
    except (MailbridgeError, KeyError, TypeError):
        log.warning("could not store a copy of thread %s", pid, exc_info=True)


def _stored_email(doc: dict, key: str) -> dict:
    email = doc.get("email") if isinstance(doc.get("email"), dict) else None
    if email is None:   # a copy stored flat (the email's own fields at the top level)
        email = {k: doc.get(k) for k in EMAIL_FIELDS if k != "id"}
        email["id"] = f"{PREFIXES.get(doc.get('provider'), 'google')}:{key}"
    return {**dict.fromkeys(EMAIL_FIELDS), **{k: v for k, v in email.items() if k in EMAIL_FIELDS}}


def _stored_thread(runtime: Runtime, caller: Caller, pid: PublicId) -> dict:
    store = runtime.store
    snapshot = store.get(THREADS, pid.store_key)
    if snapshot is None or snapshot.get("tenant_id") != caller.tenant_id:
        raise NotFoundError(f"thread {pid} has no stored copy yet (read it once without source=store)")
    keys = snapshot.get("message_keys") or []
    docs = store.get_many(MESSAGES, keys)
    messages = [_stored_email(docs[k], k) for k in keys if k in docs]
    return {**snapshot.get("thread", {}), "id": str(pid), "messages": messages,
            "last_synced_at": clock.rfc3339(snapshot.get("synced_ts"))}


def put_thread_context(runtime: Runtime, caller: Caller, thread_id: str, context: dict) -> dict:
    """Replace the thread's context whole (≤ 64 KiB as compact JSON, else 413). Idempotent."""
    _require(caller, "view_thread")
    pid = parse_id(thread_id, what="thread")
    record = _owner(runtime, caller, pid, "thread")
    text = json.dumps(context, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > CONTEXT_MAX_BYTES:
        raise PayloadTooLargeError(f"context: {len(text.encode())} bytes as JSON; at most {CONTEXT_MAX_BYTES}",
                                   details={"field": "context", "limit": CONTEXT_MAX_BYTES})
    now = clock.now()
    # Stored as text: Firestore refuses some valid JSON (nested arrays, `__x__` keys, deep nesting).
    runtime.store.put(THREAD_CONTEXTS, pid.store_key, {"tenant_id": record["tenant_id"], "connection_id": record["id"],
                                                       "thread_id": str(pid), "context_json": text, "updated_ts": now})
    return {"context": context, "updated_at": clock.rfc3339(now)}


def get_thread_context(runtime: Runtime, caller: Caller, thread_id: str) -> dict:
    """`{context, updated_at}`; 404 if none was ever put."""
    _require(caller, "view_thread")
    pid = parse_id(thread_id, what="thread")
    _owner(runtime, caller, pid, "thread")
    stored = runtime.store.get(THREAD_CONTEXTS, pid.store_key)
    if stored is None:
        raise NotFoundError(f"thread {pid} has no context")
    return {"context": json.loads(stored["context_json"]), "updated_at": clock.rfc3339(stored["updated_ts"])}
