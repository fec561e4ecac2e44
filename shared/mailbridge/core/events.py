"""Events (API.md section 7): recorded once in the store and published on the bus."""
from __future__ import annotations

import secrets as pysecrets

from mailbridge import clock
from mailbridge.bus.base import EVENTS_TOPIC, Bus
from mailbridge.store.base import EVENTS, Store

EVENT_TYPES = ("email.received", "email.sent", "connection.created", "connection.error",
               "connection.deleted", "backfill.completed")


def new_event_id() -> str:
    return "evt_" + pysecrets.token_hex(12)


def emit(store: Store, bus: Bus, *, tenant_id: str, event_type: str, data: dict,
         connection_id: str | None = None, event_id: str | None = None) -> dict:
    """Record and publish one event. With a deterministic `event_id` (e.g. derived from a provider
    message id) a repeated call records nothing new and publishes nothing: exactly one event."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    event = {"type": event_type, "id": event_id or new_event_id(), "timestamp": clock.rfc3339(clock.now()),
             "data": data}
    record = {"tenant_id": tenant_id, "connection_id": connection_id, "event": event,
              "created_ts": clock.now()}
    if store.create(EVENTS, event["id"], record):
        try:
            bus.publish(EVENTS_TOPIC, {"tenant_id": tenant_id, "connection_id": connection_id, "event": event})
        except Exception:
            store.delete(EVENTS, event["id"])  # so that the caller's retry publishes it again
            raise
    return event
