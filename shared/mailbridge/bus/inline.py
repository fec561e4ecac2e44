"""The embedded bus: each message goes to its topic's handler on a background thread, retried with backoff."""
from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from mailbridge.bus.base import Bus, Handler
from mailbridge.bus.handlers import resolve
from mailbridge.errors import MailbridgeError, StoreUnavailableError

if TYPE_CHECKING:
    from mailbridge.runtime import Runtime

log = logging.getLogger("mailbridge.bus")

MAX_DELAY_SECONDS = 600.0
# At the default base of 10 s the delays are 10, 20, … 320, then 600 s each: 160 attempts span ~25.7 h,
# so the inline bus never gives up on a webhook delivery before the delivery's own 24 h dead-letter rule.
DEFAULT_MAX_ATTEMPTS = 160
DEFAULT_WORKERS = 4
KEEP_PUBLISHED = 10_000   # `published` keeps the newest messages only: `mailbridge serve` runs for days


@dataclass
class _Job:
    topic: str
    body: str              # the message as JSON: every attempt decodes a fresh copy
    target: str | Handler
    attempts: int = 0


class InlineBus(Bus):
    """Runs handlers in this process, off the publisher's thread, at least once.

    `handlers` maps topics to handlers (import strings or callables, see bus/handlers.py); a topic
    without one is only recorded. A handler that raises is called again after
    base × 2^(n-1) seconds (n = failures so far; base = `retry_base_seconds`, else the bound runtime's
    MAILBRIDGE_RETRY_BASE_SECONDS; at most 600 s) until `max_attempts` calls have failed, then the
    message is logged and kept in `given_up`. `workers` threads run handlers, so a slow handler
    delays others only when all of them are busy. `published` keeps the newest KEEP_PUBLISHED
    messages as (topic, message), oldest first (tests and dev); `given_up` likewise what failed for good.
    Messages live in memory: a process that exits drops what is still queued (`drain` first).
    """

    def __init__(self, handlers: Mapping[str, str | Handler] | None = None, *,
                 retry_base_seconds: float | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 workers: int = DEFAULT_WORKERS):
        if max_attempts < 1 or workers < 1:
            raise ValueError("max_attempts and workers must be at least 1")
        self._handlers = dict(handlers or {})
        self._retry_base = retry_base_seconds
        self.max_attempts = max_attempts
        self._workers = workers
        self._runtime: "Runtime | None" = None
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, _Job]] = []   # heap of (due, sequence, job)
        self._sequence = itertools.count()
        self._busy = 0                                    # messages queued, waiting to retry or running
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.given_up: list[tuple[str, dict[str, Any]]] = []

    def bind(self, runtime: "Runtime") -> None:
        """Hand `runtime` to the handlers. The first runtime wins: a second Runtime sharing this bus
        (tests do that) does not take its handlers over."""
        with self._cond:
            if self._runtime is None:
                self._runtime = runtime

    def publish(self, topic: str, message: dict[str, Any]) -> None:
        """Record the message and queue it for its topic's handler; returns at once.
        StoreUnavailableError once closed; RuntimeError if a handler waits but no runtime is bound."""
        body = json.dumps(message)  # what a real bus would carry; TypeError for what it could not
        with self._cond:
            if self._closed:
                raise StoreUnavailableError("the inline bus is closed")
            self.published.append((topic, json.loads(body)))
            if len(self.published) > KEEP_PUBLISHED:
                del self.published[:len(self.published) - KEEP_PUBLISHED]
            target = self._handlers.get(topic)
            if target is None:
                return
            if self._runtime is None:
                raise RuntimeError("InlineBus has handlers but no runtime: pass it as Runtime(bus=...)")
            self._busy += 1
            self._push(_Job(topic, body, target), time.monotonic())
            if len(self._threads) < self._workers:
                self._start_worker()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued message was handled or given up (retries included); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    def close(self) -> None:
        """Stop the workers; queued messages are dropped (logged). Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            dropped, self._queue = len(self._queue), []
            self._busy -= dropped
            threads, self._threads = self._threads, []
            self._cond.notify_all()
        if dropped:
            log.warning("inline bus closed with %d message(s) still queued", dropped)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def retry_delay(self, failures: int) -> float:
        """Seconds before the next call after `failures` failed calls: base × 2^(failures-1), ≤ 600."""
        base = self._retry_base
        if base is None:
            base = self._runtime.settings.retry_base_seconds if self._runtime is not None else 10.0
        return min(base * 2 ** (failures - 1), MAX_DELAY_SECONDS)

    # -- workers -------------------------------------------------------------------------------

    def _push(self, job: _Job, due: float) -> None:
        heapq.heappush(self._queue, (due, next(self._sequence), job))
        self._cond.notify_all()  # all: a drain() waiter shares the condition with the workers

    def _start_worker(self) -> None:
        thread = threading.Thread(target=self._work, name=f"mailbridge-inline-bus-{len(self._threads)}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                if self._queue and self._queue[0][0] <= now:
                    return heapq.heappop(self._queue)[2]
                self._cond.wait(self._queue[0][0] - now if self._queue else None)
            return None

    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            try:
                resolve(job.target)(self._runtime, json.loads(job.body))
            except Exception as exc:  # any failure asks for a retry, as a non-2xx answer does on Pub/Sub
                self._failed(job, exc)
            else:
                self._finish()

    def _failed(self, job: _Job, exc: Exception) -> None:
        job.attempts += 1
        # Our own errors carry user-safe messages; anything else is a bug and gets its traceback.
        detail = {} if isinstance(exc, MailbridgeError) else {"exc_info": exc}
        if job.attempts >= self.max_attempts:
            log.error("inline bus: gave up on a %s message after %d attempts: %s",
                      job.topic, job.attempts, _describe(exc), **detail)
            with self._cond:
                self.given_up.append((job.topic, json.loads(job.body)))
                del self.given_up[:-KEEP_PUBLISHED]
            self._finish()
            return
        delay = self.retry_delay(job.attempts)
        log.warning("inline bus: %s handler failed (attempt %d), retrying in %.2f s: %s",
                    job.topic, job.attempts, delay, _describe(exc), **detail)
        with self._cond:
            if self._closed:
                self._busy -= 1
                self._cond.notify_all()
                return
            self._push(job, time.monotonic() + delay)

    def _finish(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc.message}" if isinstance(exc, MailbridgeError) else type(exc).__name__
