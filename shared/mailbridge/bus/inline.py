"""The embedded bus: messages are recorded and handed to in-process subscribers."""
from __future__ import annotations

import json
import logging
import threading
from typing import Any

from mailbridge.bus.base import Bus, Handler

log = logging.getLogger("mailbridge.bus")


class InlineBus(Bus):
    """Runs subscribers in the publishing process. Messages are JSON round-tripped so that handlers
    see exactly what a real bus would carry. `published` keeps every message (for tests and dev)."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Handler]] = {}
        self._lock = threading.Lock()
        self.published: list[tuple[str, dict[str, Any]]] = []

    def subscribe(self, topic: str, handler: Handler) -> None:
        with self._lock:
            self._subscribers.setdefault(topic, []).append(handler)

    def publish(self, topic: str, message: dict[str, Any]) -> None:
        carried = json.loads(json.dumps(message))
        with self._lock:
            self.published.append((topic, carried))
            handlers = list(self._subscribers.get(topic, ()))
        for handler in handlers:
            try:
                handler(carried)
            except Exception:  # a subscriber's failure never fails the publisher
                log.exception("inline bus subscriber failed on %s", topic)
