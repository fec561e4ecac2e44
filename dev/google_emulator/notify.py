"""Gmail push notifications: `{"emailAddress", "historyId"}` to the watch's topic, ≤ 1/s per mailbox."""
from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

Publisher = Callable[[str, dict], None]  # (topicName, {"emailAddress", "historyId"})


def pubsub_rest_publisher(host: str) -> Publisher:
    """Publish through the Pub/Sub emulator's REST API (`POST /v1/{topic}:publish`)."""
    def publish(topic: str, payload: dict) -> None:
        import requests  # only needed when notifications are on
        data = base64.b64encode(json.dumps(payload).encode()).decode()
        resp = requests.post(f"http://{host}/v1/{topic}:publish",
                             json={"messages": [{"data": data}]}, timeout=5)
        resp.raise_for_status()
    return publish


def push_endpoint_publisher(url: str) -> Publisher:
    """Act as a Pub/Sub push subscription: POST the push envelope straight to `url` (for `make dev`,
    where no Pub/Sub runs; mailbridge then needs MAILBRIDGE_PUSH_AUTH=off)."""
    def publish(topic: str, payload: dict) -> None:
        import requests
        data = base64.b64encode(json.dumps(payload).encode()).decode()
        message = {"data": data, "attributes": {}, "messageId": str(time.time_ns()),
                   "publishTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        resp = requests.post(url, json={"message": message, "subscription": topic + "-push"}, timeout=30)
        resp.raise_for_status()
    return publish


class Notifier:
    """Coalesces changes per mailbox and publishes from one background thread.

    Like Gmail, at most one notification per second per mailbox; a burst collapses into one
    carrying the latest historyId. Failures are logged and dropped (Gmail may drop them too).
    """

    def __init__(self, publisher: Callable[[], Publisher | None], interval: float = 1.0):
        self._publisher = publisher
        self.interval = interval
        self._cond = threading.Condition()
        self._pending: dict[str, tuple[str, int]] = {}
        self._last_sent: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.sent: list[tuple[str, dict]] = []  # what was published, for tests and debugging

    def notify(self, address: str, topic: str, history_id: int) -> None:
        with self._cond:
            self._pending[address] = (topic, history_id)
            if self._thread is None or not self._thread.is_alive():
                self._stopped = False
                self._thread = threading.Thread(target=self._run, name="gmail-notifier", daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def clear(self) -> None:
        with self._cond:
            self._pending.clear()
            self._last_sent.clear()
            self.sent.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._pending:
                    self._cond.wait()
                if self._stopped:
                    return
                now = time.monotonic()
                due = {a: v for a, v in self._pending.items()
                       if now - self._last_sent.get(a, -1e9) >= self.interval}
                if not due:
                    wait = min(self.interval - (now - self._last_sent[a]) for a in self._pending)
                    self._cond.wait(timeout=max(wait, 0.01))
                    continue
                for address in due:
                    del self._pending[address]
                    self._last_sent[address] = now
            for address, (topic, history_id) in due.items():
                self._publish(address, topic, history_id)

    def _publish(self, address: str, topic: str, history_id: int) -> None:
        payload = {"emailAddress": address, "historyId": history_id}
        publisher = self._publisher()
        if publisher is None:
            host = os.environ.get("PUBSUB_EMULATOR_HOST")
            publisher = pubsub_rest_publisher(host) if host else None
        if publisher is None:
            return
        try:
            publisher(topic, payload)
            self.sent.append((topic, payload))
        except Exception as exc:  # a notification is best effort, as with Gmail
            log.warning("gmail notification to %s failed: %s", topic, type(exc).__name__)
