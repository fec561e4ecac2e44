"""The bus: at-least-once messages on named topics (webhook deliveries, fan-out work)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from mailbridge.runtime import Runtime

# Short topic names; in the cloud each is `projects/<GOOGLE_CLOUD_PROJECT>/topics/<name>` (infra/ creates them).
# One message per (event, webhook): {"delivery_id", "webhook_id", "tenant_id", "event_id"}.
DELIVERIES_TOPIC = "mailbridge-deliveries"
RENEWALS_TOPIC = "mailbridge-renewals"      # renew fan-out: {"connection_ids": [...]}
GMAIL_TOPIC = "gmail-notifications"         # Gmail's own topic: only Gmail publishes to it
# The topic of the first event design (one message per event); kept while older callers still name it.

# A bus message handler (bus/handlers.py): raises to ask for a retry, returns when done — or when the
# message can never succeed (it logs that). Handlers are idempotent: every message may come again.
Handler = Callable[["Runtime", dict[str, Any]], None]


class Bus(ABC):
    """Publish JSON messages to a topic. Delivery is at least once: every handler is idempotent."""

    @abstractmethod
    def publish(self, topic: str, message: dict[str, Any]) -> None:
        """Queue `message` (JSON-serialisable) on `topic`; returns once the bus has accepted it.
        Raises StoreUnavailableError if the bus cannot accept it (the caller's request then fails)."""

    def bind(self, runtime: "Runtime") -> None:
        """Called by the Runtime that owns this bus. An in-process bus hands that runtime to its
        handlers; a remote bus (Pub/Sub) ignores it — its handlers run behind HTTP routes."""

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every message published so far was handled in this process (retries included).
        True when idle; False if `timeout` passed first. A remote bus has nothing in process: True."""
        return True

    def close(self) -> None:
        """Release threads and clients; the bus is not used afterwards. Idempotent."""
