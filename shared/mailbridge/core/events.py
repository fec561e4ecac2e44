"""Events (API.md section 7): recorded once in the store, then one delivery per matching webhook on the bus."""
from __future__ import annotations

import hashlib
import secrets as pysecrets

from mailbridge import clock
from mailbridge.bus.base import DELIVERIES_TOPIC, Bus
from mailbridge.store.base import DELIVERIES, EVENTS, WEBHOOKS, Store

EVENT_TYPES = ("email.received", "email.sent", "connection.created", "connection.error",
               "connection.deleted", "backfill.completed")


def new_event_id() -> str:
    return "evt_" + pysecrets.token_hex(12)


def delivery_id_for(event_id: str, webhook_id: str) -> str:
    """The id of the one delivery of `event_id` to `webhook_id`: the same however often it is emitted."""
    return "dlv_" + hashlib.sha256(f"{event_id}\n{webhook_id}".encode()).hexdigest()[:24]


def emit(store: Store, bus: Bus, *, tenant_id: str, event_type: str, data: dict,
         connection_id: str | None = None, event_id: str | None = None) -> dict:
    """Record one event and queue one delivery per matching enabled webhook; returns the event.

    With a deterministic `event_id` (e.g. derived from a provider message id) a repeated call records
    nothing new and queues nothing twice: exactly one event, one delivery per webhook. If the bus
    fails midway the event stays marked unfinished and this raises (StoreUnavailableError): the
    caller's retry finishes the fan-out, skipping every delivery already queued."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    now = clock.now()
    event = {"type": event_type, "id": event_id or new_event_id(), "timestamp": clock.rfc3339(now),
             "data": data}
    record = {"tenant_id": tenant_id, "connection_id": connection_id, "event": event,
              "event_type": event_type, "created_ts": now, "fanned_out": False}
    if not store.create(EVENTS, event["id"], record):
        existing = store.get(EVENTS, event["id"]) or {}
        # Records written before deliveries existed carry no flag: they count as finished.
        if existing.get("fanned_out", True) or "event" not in existing:
            return existing.get("event", event)
        record = existing
        event = existing["event"]
    _fan_out(store, bus, record, event, now)
    store.update(EVENTS, event["id"], {"fanned_out": True})
    return event


def recorded_events(store: Store, event_type: str | None = None) -> list[dict]:
    """Events recorded so far (optionally of one type), oldest first: what tests and tools inspect now
    that the bus carries deliveries, not events."""
    where = [("event_type", "==", event_type)] if event_type else []
    records = sorted(store.query(EVENTS, where), key=lambda r: (r.get("created_ts", 0), r["id"]))
    return [r["event"] for r in records if "event" in r]


def matching_webhooks(store: Store, tenant_id: str, event_type: str,
                      connection_id: str | None) -> list[dict]:
    """The tenant's enabled webhooks subscribed to `event_type` (all types when `events` is null)
    and, when a webhook names a connection, only for that connection's events. Equality filters
    only, so no composite index is needed."""
    found = store.query(WEBHOOKS, [("tenant_id", "==", tenant_id), ("enabled", "==", True)])
    return [w for w in found
            if (w.get("events") is None or event_type in w["events"])
            and (w.get("connection_id") is None or w["connection_id"] == connection_id)]


def _fan_out(store: Store, bus: Bus, record: dict, event: dict, now: float) -> None:
    """Create each delivery record first (create-if-absent), then publish it once (queued_ts marks it)."""
    tenant_id = record["tenant_id"]
    for webhook in matching_webhooks(store, tenant_id, event["type"], record.get("connection_id")):
        delivery_id = delivery_id_for(event["id"], webhook["id"])
        delivery = {"tenant_id": tenant_id, "webhook_id": webhook["id"], "event_id": event["id"],
                    "event_type": event["type"], "status": "pending", "attempts": 0,
                    "attempts_at_publish": 0, "last_status_code": None, "last_error": None,
                    "next_attempt_ts": now, "created_ts": now, "updated_ts": now, "queued_ts": None}
        if not store.create(DELIVERIES, delivery_id, delivery):
            existing = store.get(DELIVERIES, delivery_id)
            if existing is None or existing.get("queued_ts") is not None:
                continue
        bus.publish(DELIVERIES_TOPIC, {"delivery_id": delivery_id, "webhook_id": webhook["id"],
                                       "tenant_id": tenant_id, "event_id": event["id"]})
        store.update(DELIVERIES, delivery_id, {"queued_ts": clock.now()})
