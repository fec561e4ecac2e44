"""The bus: at-least-once messages on named topics (events, webhook deliveries, fan-out work)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

EVENTS_TOPIC = "mailbridge-events"

Handler = Callable[[dict[str, Any]], None]


class Bus(ABC):
    """Publish JSON messages to a topic. Delivery is at least once: every handler is idempotent."""

    @abstractmethod
    def publish(self, topic: str, message: dict[str, Any]) -> None:
        """Queue `message` (JSON-serialisable) on `topic`; returns once the bus has accepted it.
        Raises StoreUnavailableError if the bus cannot accept it (the caller's request then fails)."""
