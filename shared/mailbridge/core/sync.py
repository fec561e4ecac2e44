"""Mailbox sync (DESIGN.md "Receive"): the provider's changes after the stored cursor, each new email stored and announced once.

The cursor lives in SYNC_CURSORS[<connection id>] = {history_id (text), updated_ts, newest_ts (the
newest stored message's time, where a resync starts), waiting ({gmail id: first seen} of messages
listed but not yet readable)} and only moves forward, through compare_and_set, compared as numbers.

Exactly-once effects under at-least-once pushes: MESSAGES is written create-if-absent, the
`email.received` event id is derived from (connection, gmail id) and `emit` records an id once, so a
repeated, concurrent or out-of-order sync announces nothing twice. A short per-connection lease
serialises syncs of one mailbox to save upstream calls; correctness does not depend on it.
"""
from __future__ import annotations

import hashlib
import logging
import secrets as pysecrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from mailbridge import clock
from mailbridge.core.events import emit
from mailbridge.core.mailbox import provider_for
from mailbridge.core.sync_store import apply_label_changes, fit_email, forget_deleted, newest_ts, store_emails
from mailbridge.errors import (ConflictError, CursorExpiredError, MailbridgeError, PermanentError,
                               ProviderUnavailableError, ReauthRequiredError, StoreUnavailableError,
                               TransientError)
from mailbridge.providers.base import Changes, MailProvider
from mailbridge.runtime import Runtime
from mailbridge.store.base import CONNECTIONS, LEASES, SYNC_CURSORS

log = logging.getLogger("mailbridge.sync")

RESYNC_WINDOW = 7 * 24 * 3600      # an expired cursor resyncs at most this far back (API.md section 8)
RESYNC_LIMIT = 100                 # and at most this many messages (one list, two batches)
MAX_MESSAGES_PER_SYNC = 500       # the rest waits for the redelivery (a push has a deadline)
UNREADABLE_GIVE_UP = 3600          # a listed message still unreadable after this is skipped (logged)
LEASE_TTL = 60                     # seconds; a crashed holder frees the lease by itself
LEASE_WAIT = 15.0                  # a sync waits this long for another one of the same mailbox
POLL_START, POLL_MAX = 0.02, 0.25
CAS_ATTEMPTS = 8


@dataclass(frozen=True)
class SyncResult:
    new_messages: int              # messages stored for the first time by this sync
    finished_at: str               # RFC 3339


def email_received_id(connection_id: str, gmail_id: str) -> str:
    """The one event id of the arrival of `gmail_id` in a connection's mailbox."""
    return "evt_" + hashlib.sha256(f"{connection_id}:received:{gmail_id}".encode()).hexdigest()[:24]


def sync_connection(runtime: Runtime, connection: dict, *, notified_cursor: str | int | None = None) -> SyncResult:
    """Bring the stored mail of `connection` (a CONNECTIONS record) up to date with its mailbox.

    `notified_cursor` (a push's historyId): when the stored cursor is already at or past it the sync
    returns at once, with no upstream call. On success `last_sync_ts` is set and `error` cleared.
    Raises TransientError when it should be retried (Gmail down, or a listed message not yet
    readable — the cursor then stops before it, so it is never lost); ReauthRequiredError (the
    connection is marked by core/tokens), ConflictError (disconnected) and other PermanentErrors
    pass through. Idempotent."""
    store, conn_id = runtime.store, connection["id"]
    if _caught_up(store.get(SYNC_CURSORS, conn_id), notified_cursor):
        return SyncResult(0, clock.rfc3339(clock.now()))
    with _lease(runtime, conn_id):
        state = store.get(SYNC_CURSORS, conn_id)   # again: the sync we waited for may have done it all
        if _caught_up(state, notified_cursor):
            return SyncResult(0, clock.rfc3339(clock.now()))
        provider = provider_for(runtime, connection)
        cursor = (state or {}).get("history_id") or (connection.get("watch") or {}).get("history_id")
        if cursor is None:
            # First sync and no watch cursor: start now. Mail from before the connection is not "new".
            _advance(runtime, conn_id, state, provider.profile()["history_id"], 0, {})
            new = 0
        else:
            try:
                new = _apply(runtime, connection, provider, state, provider.changes(str(cursor)))
            except CursorExpiredError:
                new = _resync(runtime, connection, provider, state)
    now = clock.now()
    store.update(CONNECTIONS, conn_id, {"last_sync_ts": now, "error": None})
    return SyncResult(new, clock.rfc3339(now))


def sync_address(runtime: Runtime, address: str, notified_cursor: str | int | None = None) -> int:
    """Sync every connected Gmail connection of `address` (any tenant); returns how many were asked.

    Each connection is tried even when another fails. A revoked grant or a disconnected mailbox is
    logged and skipped (retrying cannot help until the mailbox is reconnected, and the stored cursor
    makes the next sync catch up); a permanent failure is recorded on the connection (`error`).
    Raises the first TransientError afterwards, so that the push is redelivered."""
    records = runtime.store.query(CONNECTIONS, [("email_key", "==", address.strip().lower())])
    live = [r for r in records if r.get("provider") == "google" and not r.get("disconnected_ts")]
    retry: TransientError | None = None
    for record in live:
        try:
            sync_connection(runtime, record, notified_cursor=notified_cursor)
        except (ReauthRequiredError, ConflictError) as exc:
            log.info("push for %s skipped: %s", record["id"], exc.code)
        except PermanentError as exc:
            log.warning("sync of %s failed for good: %s", record["id"], exc.code)
            _record_error(runtime, record["id"], exc)
        except TransientError as exc:
            log.info("sync of %s will be retried: %s", record["id"], exc.code)
            retry = retry or exc
        except Exception:   # a bug: logged with its traceback, the push retried like a transient failure
            log.exception("sync of %s failed", record["id"])
            retry = retry or ProviderUnavailableError("the sync failed; it will be retried", retry_after=10)
    if retry is not None:
        raise retry
    return len(live)


# --- the two ways of catching up ------------------------------------------------------------------

def _apply(runtime: Runtime, connection: dict, provider: MailProvider, state: dict | None,
           changes: Changes) -> int:
    """Store and announce what `changes` added (one batch per 50), apply label changes and deletions,
    then move the cursor — only up to the first message that is listed but not yet readable (given up
    after UNREADABLE_GIVE_UP, so that one poison entry cannot stop the mailbox) or not yet taken."""
    conn_id, now = connection["id"], clock.now()
    wanted = [a for a in changes.added if a.id not in changes.deleted and "DRAFT" not in a.labels]
    wanted, overflow = wanted[:MAX_MESSAGES_PER_SYNC], wanted[MAX_MESSAGES_PER_SYNC:]
    emails = provider.get_messages([a.id for a in wanted], include_body=True) if wanted else []
    fetched = {e["id"].rsplit(":", 1)[-1] for e in emails}
    waiting = dict((state or {}).get("waiting") or {})
    held = []
    for added in (a for a in wanted if a.id not in fetched):
        first = waiting.get(added.id, now)
        if now - first < UNREADABLE_GIVE_UP:
            held.append((added, first))
        else:
            log.warning("message %s of %s stayed unreadable for %d s; skipped", added.id, conn_id, now - first)
    new = _store_and_announce(runtime, connection, emails, resync=False)
    apply_label_changes(runtime.store, conn_id, {k: v for k, v in changes.labels.items() if k not in fetched})
    forget_deleted(runtime.store, conn_id, changes.deleted)
    stop = held[0][0] if held else (overflow[0] if overflow else None)
    target = stop.resume_from if stop else changes.cursor
    _advance(runtime, conn_id, state, target, newest_ts(emails), {a.id: first for a, first in held})
    if held:
        raise ProviderUnavailableError("a new message is not readable yet; the push will be retried",
                                       retry_after=10, details={"connection_id": conn_id})
    if overflow:
        raise ProviderUnavailableError("more new mail than one sync takes; the push will be retried",
                                       retry_after=1, details={"connection_id": conn_id})
    return new


def _resync(runtime: Runtime, connection: dict, provider: MailProvider, state: dict | None) -> int:
    """The cursor expired: recent mail since the newest stored message (at most RESYNC_WINDOW back and
    RESYNC_LIMIT messages), announcing only mail never seen before; then the cursor restarts at the
    mailbox's current one. It runs once per expiry: the new cursor is fresh."""
    now = clock.now()
    since = max(float((state or {}).get("newest_ts") or 0), now - RESYNC_WINDOW,
                float(connection.get("created_ts") or 0))
    current = provider.profile()["history_id"]   # first: mail arriving meanwhile is listed by both
    ids = provider.recent_message_ids(since, RESYNC_LIMIT)
    emails = provider.get_messages(list(reversed(ids)), include_body=True) if ids else []
    log.info("cursor of %s expired: resynced %d recent messages", connection["id"], len(emails))
    new = _store_and_announce(runtime, connection, emails, resync=True)
    _advance(runtime, connection["id"], state, current, newest_ts(emails), {})
    return new


def _store_and_announce(runtime: Runtime, connection: dict, emails: list[dict], *, resync: bool) -> int:
    """Store each email once; one `email.received` per inbound one. A normal sync announces every
    email it was told is new (emit's event id makes a repeat a no-op, even after a crash between
    storing and announcing); a resync announces only what it stored itself or a sync stored before."""
    outcomes = store_emails(runtime.store, connection, emails)
    for email, (created, by_sync) in zip(emails, outcomes):
        if _inbound(email) and (not resync or created or by_sync):
            gmail_id = email["id"].rsplit(":", 1)[-1]
            emit(runtime.store, runtime.bus, tenant_id=connection["tenant_id"], event_type="email.received",
                 data={**fit_email(email), "user_id": connection.get("user_id")}, connection_id=connection["id"],
                 event_id=email_received_id(connection["id"], gmail_id))
    return sum(1 for created, _ in outcomes if created)


def _inbound(email: dict) -> bool:
    """Mail the mailbox received: not a draft, not spam, not mail it only sent (sent to itself counts)."""
    labels = set(email.get("labels") or ())
    return not labels & {"DRAFT", "SPAM"} and ("SENT" not in labels or "INBOX" in labels)


# --- the cursor ---------------------------------------------------------------------------------

def _num(cursor) -> int:
    try:
        return int(cursor)
    except (TypeError, ValueError):
        return -1


def _caught_up(state: dict | None, notified) -> bool:
    return (notified is not None and state is not None and _num(notified) >= 0
            and _num(state.get("history_id")) >= _num(notified) and not state.get("waiting"))


def _advance(runtime: Runtime, conn_id: str, state: dict | None, target, newest: float, waiting: dict) -> bool:
    """Move the cursor to `target` unless another sync already moved it as far or further (it wins).
    Never backwards. True if written; StoreUnavailableError if the store keeps changing under us."""
    store = runtime.store
    for _ in range(CAS_ATTEMPTS):
        expected = state.get("history_id") if state else None
        if state is not None and _num(expected) > _num(target):
            return False
        if state is not None and _num(expected) == _num(target) and not waiting and not state.get("waiting"):
            return False   # already there
        data = {"history_id": str(target), "updated_ts": clock.now(),
                "newest_ts": max(float((state or {}).get("newest_ts") or 0), newest), "waiting": waiting}
        if store.compare_and_set(SYNC_CURSORS, conn_id, "history_id", expected, data):
            return True
        state = store.get(SYNC_CURSORS, conn_id)
    raise StoreUnavailableError("the sync cursor kept changing; the sync will be retried")


def _record_error(runtime: Runtime, conn_id: str, exc: MailbridgeError) -> None:
    try:
        runtime.store.update(CONNECTIONS, conn_id, {"error": {"code": exc.code, "message": exc.message,
                                                               "at": clock.now()}})
    except MailbridgeError:
        log.warning("could not record the sync error of %s", conn_id)


# --- the lease ----------------------------------------------------------------------------------

@contextmanager
def _lease(runtime: Runtime, conn_id: str) -> Iterator[None]:
    """Hold `sync:<connection id>` while syncing; wait (bounded) while another sync holds it, then go
    on even without it — the lease only saves duplicate upstream calls."""
    store, lease_id, owner = runtime.store, f"sync:{conn_id}", pysecrets.token_hex(8)
    deadline, pause = time.monotonic() + LEASE_WAIT, POLL_START
    held = False
    while not (held := store.create(LEASES, lease_id, {"owner": owner}, expires_at=clock.now() + LEASE_TTL)):
        if time.monotonic() >= deadline:
            log.info("sync lease of %s still held after %.0f s; syncing anyway", conn_id, LEASE_WAIT)
            break
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX)
    try:
        yield
    finally:
        if held:
            try:
                current = store.get(LEASES, lease_id)
                if current is not None and current.get("owner") == owner:
                    store.delete(LEASES, lease_id)
            except MailbridgeError:   # the TTL frees it anyway
                log.warning("could not release the sync lease of %s", conn_id)
