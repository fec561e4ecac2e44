"""Gmail watch renewal and the safety-net resync of quiet connections (API.md section 8, /internal/renew).

Gmail watches die after 7 days and notifications may be dropped (FACTS.md), so Cloud Scheduler calls
`/internal/renew` daily and every 6 h. A tick (`renew_due`) pages through the Google connections
(PAGE_SIZE per store query, ordered by id) and picks those that are *due*:

- watch due: the connection watches (`start_watching`, GMAIL_PUBSUB_TOPIC set) and its watch was never
  renewed successfully or was renewed RENEW_AFTER (a day) ago or more — so a watch renewed within the
  last day (in particular within the last hour: a redelivered message) is skipped;
- quiet: no successful sync for QUIET_AFTER (5 h, a little under the 6-hourly tick, so a quiet mailbox
  is re-synced on every tick and never turns `stale` at 25 h); re-synced through core/sync.

Disconnected connections, connections that asked not to be watched, and connections waiting for a
reconnect (`reauth_required`) are left alone.

How a tick answers `{renewed, failed, resynced, queued}`: when at most INLINE_MAX connections are due,
it processes them itself and answers real counts (`queued` 0). Beyond that it processes none itself and
publishes `{"connection_ids": [...]}` messages of at most PAGE_SIZE ids on the `mailbridge-renewals`
topic (one per page of due connections), answering zeros and `queued` = how many were handed on; each
message is handled by `handle_renewal` (the renewals push subscription → /internal/renew in the cloud,
a background thread of the inline bus locally). Everything re-checks the fresh record, so redelivery
and overlapping ticks do nothing twice that matters (users.watch on a live watch only replaces it).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable

from mailbridge import clock
from mailbridge.bus.base import RENEWALS_TOPIC
from mailbridge.errors import (ConflictError, MailbridgeError, ReauthRequiredError, TransientError)
from mailbridge.runtime import Runtime
from mailbridge.store.base import CONNECTIONS, SYNC_CURSORS

log = logging.getLogger("mailbridge.renewal")

RENEW_AFTER = 24 * 3600      # a watch renewed this long ago is renewed again (it would die at 7 days)
QUIET_AFTER = 5 * 3600       # no successful sync for this long: re-sync (dropped notifications)
PAGE_SIZE = 200              # connections per store query and connection ids per renewal message
INLINE_MAX = 50              # a tick with at most this many due connections processes them itself
WORKERS = 8                  # connections processed at once (each is a few upstream round trips)


@dataclass
class _Outcome:
    renewed: bool = False
    resynced: bool = False
    failed: bool = False
    transient: bool = False  # a failure that a retry of the same work may fix


def start_watch(runtime: Runtime, record: dict, *, now: float | None = None) -> dict:
    """users.watch(GMAIL_PUBSUB_TOPIC) for a Google connection; stores `watch` {expires_ts, renewed_ts,
    history_id, topic} and returns the updated record. The first cursor is seeded with the watch's
    history id when the connection has none yet (mail from then on is new).

    On failure, `watch.error` {code, message, at} is recorded (a previous expiry is kept) and the
    MailbridgeError raised: ConflictError when GMAIL_PUBSUB_TOPIC is not configured or the connection
    is disconnected, ReauthRequiredError (tokens.py marked the connection), ProviderError,
    ProviderUnavailableError. Idempotent: a second watch replaces the first."""
    from mailbridge.core.mailbox import provider_for

    now = clock.now() if now is None else now
    previous = record.get("watch") if isinstance(record.get("watch"), dict) else {}
    topic = runtime.settings.gmail_pubsub_topic
    try:
        if not topic:
            raise ConflictError("real-time watching is not configured: set GMAIL_PUBSUB_TOPIC")
        answer = provider_for(runtime, record).watch(topic)
    except MailbridgeError as exc:
        failed = {**previous, "error": {"code": exc.code, "message": exc.message, "at": now},
                  "attempted_ts": now}
        runtime.store.update(CONNECTIONS, record["id"], {"watch": failed})
        raise
    history_id = answer.get("history_id")
    watch = {"expires_ts": _epoch(answer.get("expires_at")), "renewed_ts": now,
             "history_id": str(history_id) if history_id is not None else None, "topic": topic,
             "attempted_ts": now, "error": None}
    stored = runtime.store.update(CONNECTIONS, record["id"], {"watch": watch})
    if watch["history_id"]:
        # Only when no cursor exists yet (expected None): sync owns every later move of it.
        runtime.store.compare_and_set(SYNC_CURSORS, record["id"], "history_id", None,
                                      {"history_id": watch["history_id"], "updated_ts": now})
    return stored


def watch_on_connect(runtime: Runtime, record: dict) -> dict:
    """Start watching a mailbox just connected or imported; the record as stored afterwards. A failure
    never fails the connect: start_watch recorded it, and the next tick retries. No topic: not watched."""
    if not runtime.settings.gmail_pubsub_topic:
        log.info("GMAIL_PUBSUB_TOPIC is not set: %s is not watched", record["id"])
        return record
    try:
        return start_watch(runtime, record)
    except MailbridgeError as exc:
        log.warning("watch of %s failed at connect (%s); renew retries it", record["id"], exc.code)
        return runtime.store.get(CONNECTIONS, record["id"]) or record


def stop_watch(runtime: Runtime, record: dict) -> None:
    """users.stop, best effort (disconnect): an unstopped watch dies within 7 days, and pushes for a
    disconnected connection are ignored. Never raises a MailbridgeError."""
    from mailbridge.core.mailbox import provider_for
    try:
        provider_for(runtime, record).stop()
    except MailbridgeError as exc:
        log.warning("users.stop of %s failed (%s); the watch dies within 7 days", record["id"], exc.code)


def renew_due(runtime: Runtime, *, now: float | None = None, inline_max: int | None = INLINE_MAX) -> dict:
    """One scheduler tick (see the module docstring): `{renewed, failed, resynced, queued}`.

    `inline_max=None` processes every due connection here (the CLI on the inline bus). Per-connection
    failures are counted, recorded on the connection and never raised; StoreUnavailableError (store or
    bus down) is raised, and a repeated tick redoes only what is still due."""
    now = clock.now() if now is None else now
    pending: list[str] = []
    queued = 0
    fanning_out = False
    for page in _pages(runtime):
        pending += [r["id"] for r in page if _needs_work(runtime, r, now)]
        if inline_max is not None and len(pending) > inline_max:
            fanning_out = True
        while fanning_out and len(pending) >= PAGE_SIZE:
            queued += _publish(runtime, pending[:PAGE_SIZE])
            pending = pending[PAGE_SIZE:]
    if fanning_out:
        if pending:
            queued += _publish(runtime, pending)
        log.info("renew tick: %d connection(s) handed to %s", queued, RENEWALS_TOPIC)
        return {"renewed": 0, "failed": 0, "resynced": 0, "queued": queued}
    counts = renew_connections(runtime, pending, now=now)
    counts.pop("transient")
    return {**counts, "queued": 0}


def renew_message(runtime: Runtime, message: dict[str, Any]) -> dict:
    """Handle one renewal message `{"connection_ids": [...]}`: `{renewed, failed, resynced}`.

    Raises TransientError when some connection failed in a way a retry may fix (after doing all the
    others), so the bus redelivers: the redelivery skips what already succeeded. A malformed message
    can never succeed: it is logged and answered with zeros."""
    ids = message.get("connection_ids") if isinstance(message, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        log.error("renewal message without a list of connection ids: dropped")
        return {"renewed": 0, "failed": 0, "resynced": 0}
    counts = renew_connections(runtime, ids)
    if counts.pop("transient"):
        raise TransientError(f"{counts['failed']} connection(s) could not be renewed for now; retrying",
                             retry_after=60)
    return counts


def handle_renewal(runtime: Runtime, message: dict[str, Any]) -> None:
    """The bus handler of `mailbridge-renewals` (bus/handlers.py): renew_message, raising to retry."""
    renew_message(runtime, message)


def renew_connections(runtime: Runtime, connection_ids: Iterable[str], *, now: float | None = None) -> dict:
    """Renew the watch and/or re-sync each listed connection that is still due (fresh records; the
    rest skipped). `{renewed, failed, resynced, transient}`; `transient` True when a failure may pass."""
    now = clock.now() if now is None else now
    ids = list(dict.fromkeys(connection_ids))
    records = runtime.store.get_many(CONNECTIONS, ids) if ids else {}
    due = [records[i] for i in ids if i in records and _needs_work(runtime, records[i], now)]
    if len(due) > 1:
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(due)),
                                thread_name_prefix="mailbridge-renew") as pool:
            outcomes = list(pool.map(lambda r: _renew_one(runtime, r, now), due))
    else:
        outcomes = [_renew_one(runtime, r, now) for r in due]
    return {"renewed": sum(o.renewed for o in outcomes), "failed": sum(o.failed for o in outcomes),
            "resynced": sum(o.resynced for o in outcomes), "transient": any(o.transient for o in outcomes)}


# ---- one connection ------------------------------------------------------------------------

def _renew_one(runtime: Runtime, record: dict, now: float) -> _Outcome:
    outcome = _Outcome()
    if _watch_due(runtime, record, now):
        try:
            record = start_watch(runtime, record, now=now)
            outcome.renewed = True
        except Exception as exc:   # counted and recorded; one connection never stops the others
            _failed(outcome, record, "watch renewal", exc)
            if isinstance(exc, ReauthRequiredError):
                return outcome     # no sync can work before the mailbox is connected again
    if _quiet(record, now):
        try:
            from mailbridge.core.sync import sync_connection
            sync_connection(runtime, record)
            outcome.resynced = True
        except Exception as exc:
            _failed(outcome, record, "resync", exc)
            _record_sync_error(runtime, record, exc)
    return outcome


def _failed(outcome: _Outcome, record: dict, what: str, exc: Exception) -> None:
    outcome.failed = True
    if isinstance(exc, MailbridgeError):
        outcome.transient = outcome.transient or isinstance(exc, TransientError)
        log.warning("%s of %s failed: %s (%s)", what, record["id"], exc.code, exc.message)
    else:   # a bug, not the provider: its traceback, and no retry loop over it
        log.error("%s of %s failed unexpectedly", what, record["id"], exc_info=exc)


def _record_sync_error(runtime: Runtime, record: dict, exc: Exception) -> None:
    """A sync that failed for good shows as status `error`; transient trouble does not flip it
    (the next push or tick retries), and tokens.py already recorded `reauth_required`."""
    if not isinstance(exc, MailbridgeError) or isinstance(exc, (TransientError, ReauthRequiredError)):
        return
    try:
        runtime.store.update(CONNECTIONS, record["id"], {
            "error": {"code": exc.code, "message": exc.message, "at": clock.now()}})
    except MailbridgeError:
        log.warning("could not record the sync error of %s", record["id"])


def _needs_work(runtime: Runtime, record: dict, now: float) -> bool:
    return _watch_due(runtime, record, now) or _quiet(record, now)


def _eligible(record: dict) -> bool:
    return (record.get("provider") == "google" and not record.get("disconnected_ts")
            and record.get("start_watching", True) is not False
            and (record.get("error") or {}).get("code") != "reauth_required")


def _watch_due(runtime: Runtime, record: dict, now: float) -> bool:
    if not _eligible(record) or not runtime.settings.gmail_pubsub_topic:
        return False
    watch = record.get("watch") if isinstance(record.get("watch"), dict) else {}
    renewed = watch.get("renewed_ts")
    return renewed is None or now - renewed >= RENEW_AFTER


def _quiet(record: dict, now: float) -> bool:
    if not _eligible(record):
        return False
    last = record.get("last_sync_ts") or record.get("created_ts") or 0
    return now - last >= QUIET_AFTER


def _pages(runtime: Runtime):
    """The Google connections, PAGE_SIZE per query, by id (an equality filter: no composite index)."""
    last: str | None = None
    while True:
        page = runtime.store.query(CONNECTIONS, [("provider", "==", "google")], limit=PAGE_SIZE,
                                   start_after=(None, last) if last else None)
        if page:
            yield page
        if len(page) < PAGE_SIZE:
            return
        last = page[-1]["id"]


def _publish(runtime: Runtime, ids: list[str]) -> int:
    runtime.bus.publish(RENEWALS_TOPIC, {"connection_ids": list(ids)})
    return len(ids)


def _epoch(value: Any) -> float | None:
    """Gmail's `expiration` is epoch milliseconds as a string ("1764329400000"); the adapter may
    already give seconds or RFC 3339. Anything unreadable: None (the next tick renews anyway)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, str) and not value.strip().lstrip("-").replace(".", "", 1).isdigit():
            return clock.parse_rfc3339(value)
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number / 1000.0 if number > 1e11 else number
