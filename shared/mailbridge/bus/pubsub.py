"""The cloud bus: Google Cloud Pub/Sub topics (PUBSUB_EMULATOR_HOST honoured); handlers run behind push routes."""
from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from mailbridge.bus.base import Bus
from mailbridge.errors import StoreUnavailableError

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient

PUBLISH_TIMEOUT_SECONDS = 10.0


class PubSubBus(Bus):
    """Publishes each message as one Pub/Sub message (data: the JSON, UTF-8) to
    `projects/<project>/topics/<topic>`; push subscriptions (infra/) carry it to the routes that call
    the handlers. The client is built on the first publish and reused while the instance is warm."""

    def __init__(self, project: str, *, timeout: float = PUBLISH_TIMEOUT_SECONDS,
                 client: "PublisherClient | None" = None):
        if not project:
            raise ValueError("MAILBRIDGE_BUS=pubsub needs GOOGLE_CLOUD_PROJECT")
        self.project = project
        self.timeout = timeout
        self._client = client
        self._lock = threading.Lock()

    def topic_path(self, topic: str) -> str:
        """`projects/<project>/topics/<topic>`; a full path is kept as it is."""
        return topic if topic.startswith("projects/") else f"projects/{self.project}/topics/{topic}"

    def publish(self, topic: str, message: dict[str, Any]) -> None:
        """Publish and wait until Pub/Sub has stored the message. Transient gRPC failures are retried
        for `timeout` seconds (each call also ≤ `timeout`), so this returns or raises within about
        twice that. Any failure, a missing topic included, raises StoreUnavailableError: the caller
        fails and is retried. A publish that timed out may still have landed: handlers are idempotent."""
        data = json.dumps(message, separators=(",", ":")).encode()  # TypeError for what is not JSON
        try:
            future = self._publisher().publish(self.topic_path(topic), data)
            # The client's own retries end by `timeout`; waiting a little longer than the worst case
            # lets its commit thread finish first, so nothing keeps publishing behind our back.
            future.result(timeout=2 * self.timeout + 1)
        except Exception as exc:  # grpc/api_core errors, timeouts, a stopped client: one answer
            raise StoreUnavailableError(f"could not publish to bus topic {topic}") from exc

    def close(self) -> None:
        """Flush and stop the client (a later publish builds a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.stop()
            client.transport.close()

    def _publisher(self) -> "PublisherClient":
        with self._lock:
            if self._client is None:
                from google.cloud.pubsub_v1 import PublisherClient
                from google.cloud.pubsub_v1.types import BatchSettings, PublisherOptions
                # One message per request, sent at once: each publish is awaited, so batching would
                # only add its max_latency (10 ms by default) to every event. Retries end after
                # `timeout` (the client's default goes on for 60 s, past any request's patience).
                self._client = PublisherClient(
                    batch_settings=BatchSettings(max_messages=1),
                    publisher_options=PublisherOptions(retry=_retry(self.timeout), timeout=self.timeout))
            return self._client


def _retry(timeout: float):
    """Pub/Sub's retryable publish codes, retried with backoff for `timeout` seconds in all."""
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry, if_exception_type
    transient = if_exception_type(gexc.Aborted, gexc.Cancelled, gexc.DeadlineExceeded, gexc.InternalServerError,
                                  gexc.ResourceExhausted, gexc.ServiceUnavailable, gexc.Unknown)
    return Retry(predicate=transient, initial=0.1, maximum=2.0, multiplier=2.0, timeout=timeout)
