"""The bus: the inline backend (background handlers, retries with backoff, bounds, drain) and the Pub/Sub
backend against the real Pub/Sub emulator, with a push subscription calling a locally served app."""
from __future__ import annotations

import base64
import json
from contextlib import contextmanager
import threading
import time

import pytest
from flask import Response, request

from mailbridge.api.app import create_app
from mailbridge.api.functions import FUNCTIONS
from mailbridge.api.pubsub_push import decode_push
from mailbridge.api.push_auth import requires_push_auth
from mailbridge.bus import open_bus
from mailbridge.bus.base import DELIVERIES_TOPIC, RENEWALS_TOPIC
from mailbridge.bus.handlers import HANDLERS
from mailbridge.bus.inline import MAX_DELAY_SECONDS, InlineBus
from mailbridge.bus.pubsub import PubSubBus
from mailbridge.config import Settings
from mailbridge.errors import ProviderUnavailableError, StoreUnavailableError, TransientError
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore
from mailbridge.store.sqlite import SqliteStore
from tests import emulators
from tests.servers import serve

BASE = 0.05          # MAILBRIDGE_RETRY_BASE_SECONDS in these tests
WAIT = 20.0          # an upper bound on waiting for background work, never a measured expectation


class Recorder:
    """A handler that records (runtime, message, monotonic time) and fails its first `failures` calls."""

    def __init__(self, failures: int = 0, error: type[Exception] = ProviderUnavailableError):
        self.failures = failures
        self.error = error
        self.calls: list[tuple[object, dict, float]] = []
        self.lock = threading.Lock()

    def __call__(self, runtime, message: dict) -> None:
        with self.lock:
            self.calls.append((runtime, message, time.monotonic()))
            failing = len(self.calls) <= self.failures
        if failing:
            raise self.error("upstream said no")


# Resolved through its import string by the handler-table test.
module_recorder = Recorder()


@pytest.fixture
def runtime(tmp_path):
    store = SqliteStore(tmp_path / "store.db")
    rt = Runtime(Settings(retry_base_seconds=BASE), store=store, secrets=EnvSecretStore({}))
    yield rt
    store.close()


@contextmanager
def inline(runtime, handlers: dict, **options):
    bus = InlineBus(handlers, **options)
    bus.bind(runtime)
    try:
        yield bus
    finally:
        bus.close()


# ---- the inline bus ------------------------------------------------------------------------------

def test_inline_publish_runs_handler_in_background_with_runtime(runtime):
    release = threading.Event()
    seen = []

    def slow(rt, message):
        release.wait(WAIT)
        seen.append((rt, message, threading.current_thread().name))

    with inline(runtime, {"topic-a": slow}) as bus:
        bus.publish("topic-a", {"n": 1, "when": "now"})
        assert seen == []            # publish returned while the handler still waits
        assert bus.drain(timeout=0.05) is False
        release.set()
        assert bus.drain(timeout=WAIT) is True
    (rt, message, thread), = seen
    assert rt is runtime and message == {"n": 1, "when": "now"}
    assert thread != threading.current_thread().name


def test_inline_message_is_carried_as_json(runtime):
    recorder = Recorder()
    with inline(runtime, {"topic-a": recorder}) as bus:
        bus.publish("topic-a", {"tuple": (1, 2), "nested": {"k": None}})
        assert bus.drain(WAIT)
        with pytest.raises(TypeError):
            bus.publish("topic-a", {"not json": object()})
    assert [m for _, m, _ in recorder.calls] == [{"tuple": [1, 2], "nested": {"k": None}}]
    assert bus.published == [("topic-a", {"tuple": [1, 2], "nested": {"k": None}})]


def test_inline_failed_handler_is_retried_with_backoff_until_it_succeeds(runtime):
    recorder = Recorder(failures=3)
    with inline(runtime, {"topic-a": recorder}) as bus:
        bus.publish("topic-a", {"id": "m1"})     # the publisher never sees the handler's failure
        assert bus.drain(WAIT)
    assert len(recorder.calls) == 4 and bus.given_up == []
    times = [t for _, _, t in recorder.calls]
    # Each retry waits at least base × 2^(n-1) after the n-th failure (a lower bound the bus guarantees).
    for n, (before, after) in enumerate(zip(times, times[1:]), start=1):
        assert after - before >= BASE * 2 ** (n - 1)


def test_inline_retry_delay_doubles_from_the_configured_base_and_is_capped(runtime):
    bus = InlineBus({})
    assert bus.retry_delay(1) == 10.0                     # no runtime yet: API.md's default base
    bus.bind(runtime)
    assert [bus.retry_delay(n) for n in (1, 2, 3, 4)] == [BASE, 2 * BASE, 4 * BASE, 8 * BASE]
    assert bus.retry_delay(40) == MAX_DELAY_SECONDS == 600.0
    assert InlineBus({}, retry_base_seconds=3).retry_delay(2) == 6


def test_inline_gives_up_after_max_attempts(runtime, caplog):
    recorder = Recorder(failures=10**6)
    with inline(runtime, {"topic-a": recorder}, max_attempts=3) as bus:
        bus.publish("topic-a", {"id": "doomed"})
        assert bus.drain(WAIT)
    assert len(recorder.calls) == 3
    assert bus.given_up == [("topic-a", {"id": "doomed"})]
    assert any("gave up" in r.getMessage() for r in caplog.records)


def test_inline_retry_waiting_does_not_hold_back_other_messages(runtime):
    order: list[str] = []
    failed_once = threading.Event()

    def handler(rt, message):
        order.append(message["id"])
        if message["id"] == "a" and order.count("a") == 1:
            failed_once.set()
            raise TransientError("try later")

    with inline(runtime, {"topic-a": handler}, retry_base_seconds=2.0, workers=1) as bus:
        bus.publish("topic-a", {"id": "a"})
        assert failed_once.wait(WAIT)
        bus.publish("topic-a", {"id": "b"})     # due now; "a" waits two seconds for its retry
        assert bus.drain(WAIT)
    assert order == ["a", "b", "a"]


def test_inline_topic_without_handler_is_only_recorded(runtime):
    with inline(runtime, {"topic-a": Recorder()}) as bus:
        bus.publish("gmail-notifications", {"historyId": 1})
        assert bus.drain(0)                      # nothing queued
        assert bus.published == [("gmail-notifications", {"historyId": 1})]


def test_inline_handler_import_string_resolved_on_first_use(runtime):
    module_recorder.calls.clear()
    with inline(runtime, {"topic-a": f"{__name__}:module_recorder", "topic-b": "no.such.module:handle"},
                max_attempts=2) as bus:
        bus.publish("topic-a", {"x": 1})
        bus.publish("topic-b", {"y": 2})
        assert bus.drain(WAIT)
    assert [m for _, m, _ in module_recorder.calls] == [{"x": 1}]
    assert bus.given_up == [("topic-b", {"y": 2})]   # an unimportable handler fails, bounded


def test_inline_closed_bus_refuses_to_publish(runtime):
    bus = InlineBus({"topic-a": Recorder()})
    bus.bind(runtime)
    bus.close()
    bus.close()
    with pytest.raises(StoreUnavailableError):
        bus.publish("topic-a", {})


def test_inline_bus_with_handlers_needs_a_runtime():
    bus = InlineBus({"topic-a": Recorder()})
    with pytest.raises(RuntimeError):
        bus.publish("topic-a", {})
    bus.close()


def test_runtime_builds_inline_bus_with_handler_table_bound_to_itself(tmp_path):
    store = SqliteStore(tmp_path / "store.db")
    rt = Runtime(Settings(bus="inline", retry_base_seconds=BASE), store=store, secrets=EnvSecretStore({}))
    bus = rt.bus
    assert isinstance(bus, InlineBus) and rt.bus is bus
    assert bus._handlers == HANDLERS and bus._runtime is rt
    assert HANDLERS == {DELIVERIES_TOPIC: "mailbridge.core.delivery:handle_delivery",
                        RENEWALS_TOPIC: "mailbridge.core.renewal:handle_renewal"}
    given = InlineBus({})
    other = Runtime(Settings(), store=store, secrets=EnvSecretStore({}), bus=given)
    Runtime(Settings(), store=store, secrets=EnvSecretStore({}), bus=given)   # a second runtime sharing it
    assert given._runtime is other
    bus.close()
    store.close()


def test_open_bus_refuses_unknown_kind_and_pubsub_without_project():
    with pytest.raises(ValueError):
        open_bus("kafka")
    with pytest.raises(ValueError):
        open_bus("pubsub", project="")


# ---- the Pub/Sub bus on the emulator -------------------------------------------------------------

pubsub = pytest.mark.pubsub


@pytest.fixture
def pubsub_admin(pubsub_emulator):
    """Publisher and subscriber admin clients on a freshly reset emulator."""
    from google.cloud import pubsub_v1
    emulators.reset_pubsub(pubsub_emulator)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    yield publisher, subscriber
    subscriber.close()
    publisher.transport.close()


@pytest.fixture
def pubsub_bus(pubsub_emulator):
    bus = PubSubBus(emulators.TEST_PROJECT)
    yield bus
    bus.close()


def _topic(publisher, name: str) -> str:
    path = publisher.topic_path(emulators.TEST_PROJECT, name)
    publisher.create_topic(request={"name": path})
    return path


@pubsub
def test_pubsub_publish_carries_the_json_message(pubsub_admin, pubsub_bus):
    publisher, subscriber = pubsub_admin
    topic = _topic(publisher, DELIVERIES_TOPIC)
    sub = subscriber.subscription_path(emulators.TEST_PROJECT, "pull-check")
    subscriber.create_subscription(request={"name": sub, "topic": topic})
    message = {"delivery_id": "dlv_1", "webhook_id": "wh_1", "tenant_id": "acme", "event_id": "evt_1"}
    pubsub_bus.publish(DELIVERIES_TOPIC, message)
    pulled = subscriber.pull(request={"subscription": sub, "max_messages": 10}, timeout=WAIT)
    assert [json.loads(m.message.data) for m in pulled.received_messages] == [message]
    assert pubsub_bus.topic_path(DELIVERIES_TOPIC) == topic
    assert pubsub_bus.topic_path(topic) == topic


@pubsub
def test_pubsub_publish_to_missing_topic_raises_store_unavailable(pubsub_admin, pubsub_bus):
    with pytest.raises(StoreUnavailableError) as caught:
        pubsub_bus.publish("no-such-topic", {"a": 1})
    assert caught.value.__cause__ is not None


@pubsub
def test_pubsub_publish_to_unreachable_emulator_raises_store_unavailable(monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{emulators.free_port()}")
    bus = PubSubBus(emulators.TEST_PROJECT, timeout=1.0)
    with pytest.raises(StoreUnavailableError):
        bus.publish(DELIVERIES_TOPIC, {"a": 1})
    bus.close()


class PushTarget:
    """A push route guarded and decoded like the real ones; answers 500 for its first `failures` pushes."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.pushes: list[tuple[dict, str, int]] = []   # (message, message id, status answered)
        self.lock = threading.Lock()
        self.done = threading.Event()

    def view(self):
        message, _, message_id = decode_push(request)
        with self.lock:
            status = 500 if len(self.pushes) < self.failures else 204
            self.pushes.append((message, message_id, status))
        if status == 204:
            self.done.set()
        return Response(status=status)


@pytest.fixture
def served(tmp_path, pubsub_emulator):
    """Every function's routes (auth off, as the emulator sends no OIDC token) plus /test/bus-push."""
    store = SqliteStore(tmp_path / "store.db")
    settings = Settings(push_auth="off", bus="pubsub", gcp_project=emulators.TEST_PROJECT,
                        retry_base_seconds=BASE)
    secrets = EnvSecretStore({"MAILBRIDGE_ENCRYPTION_KEY": base64.b64encode(b"k" * 32).decode()})
    rt = Runtime(settings, store=store, secrets=secrets)
    app = create_app(FUNCTIONS, rt)
    target = PushTarget()
    app.add_url_rule("/test/bus-push", "bus_push", requires_push_auth(target.view), methods=["POST"])
    with serve(app) as base:
        yield base, rt, target
    rt.bus.close()
    store.close()


def _push_subscription(subscriber, topic: str, endpoint: str, name: str = "deliveries-push") -> str:
    path = subscriber.subscription_path(emulators.TEST_PROJECT, name)
    subscriber.create_subscription(request={"name": path, "topic": topic, "ack_deadline_seconds": 10,
                                            "push_config": {"push_endpoint": endpoint}})
    return path


@pubsub
def test_pubsub_publish_is_pushed_to_the_served_route(pubsub_admin, served):
    publisher, subscriber = pubsub_admin
    base, rt, target = served
    _push_subscription(subscriber, _topic(publisher, DELIVERIES_TOPIC), base + "/test/bus-push")
    rt.bus.publish(DELIVERIES_TOPIC, {"delivery_id": "dlv_1", "event_id": "evt_1"})
    assert target.done.wait(WAIT)
    assert [(m, s) for m, _, s in target.pushes] == [({"delivery_id": "dlv_1", "event_id": "evt_1"}, 204)]


@pubsub
def test_pubsub_push_answered_500_is_redelivered_until_acknowledged(pubsub_admin, served):
    publisher, subscriber = pubsub_admin
    base, rt, target = served
    target.failures = 2
    _push_subscription(subscriber, _topic(publisher, DELIVERIES_TOPIC), base + "/test/bus-push")
    rt.bus.publish(DELIVERIES_TOPIC, {"delivery_id": "dlv_2"})
    assert target.done.wait(WAIT)
    time.sleep(1.5)   # room for a wrongful redelivery after the 204 (the emulator redelivers ~1 s apart)
    assert [s for _, _, s in target.pushes] == [500, 500, 204]
    assert {mid for _, mid, _ in target.pushes} == {target.pushes[0][1]}   # the same message each time
    assert all(m == {"delivery_id": "dlv_2"} for m, _, _ in target.pushes)


class Receiver:
    """A webhook endpoint answering the scripted statuses in turn (then 200); records each request."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.requests: list[tuple[dict, bytes, int]] = []
        self.accepted = threading.Event()

    def __call__(self, environ, start_response):
        from werkzeug.wrappers import Request as WsgiRequest
        req = WsgiRequest(environ)
        status = self.statuses.pop(0) if self.statuses else 200
        self.requests.append((dict(req.headers), req.get_data(), status))
        start_response(f"{status} X", [("Content-Type", "text/plain")])
        if status < 300:
            self.accepted.set()
        return [b"ok"]


@pubsub
def test_pubsub_delivery_through_internal_deliver_retried_after_failure(pubsub_admin, served, monkeypatch):
    """The real delivery path: emit → delivery message on Pub/Sub → push → /internal/deliver → webhook,
    which fails once: the route answers 503, Pub/Sub redelivers, the second POST is accepted."""
    from mailbridge.core import delivery, events, webhooks
    monkeypatch.setenv("MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS", "1")
    publisher, subscriber = pubsub_admin
    base, rt, _ = served
    _push_subscription(subscriber, _topic(publisher, DELIVERIES_TOPIC), base + "/internal/deliver")
    receiver = Receiver([500])
    with serve(receiver) as hook_url:
        hook = webhooks.create_webhook(rt, tenant_id="acme", url=hook_url + "/hook", events=["email.sent"])
        event = events.emit(rt.store, rt.bus, tenant_id="acme", event_type="email.sent", data={"id": "em_1"})
        assert receiver.accepted.wait(WAIT)
    assert [status for _, _, status in receiver.requests] == [500, 200]
    ids = {headers["Webhook-Id"] for headers, _, _ in receiver.requests}
    assert ids == {event["id"]}
    assert all(json.loads(body)["id"] == event["id"] for _, body, _ in receiver.requests)
    # The handler records the outcome once the receiver's answer is in: wait for it (bounded).
    webhook, deadline = webhooks.get_webhook(rt, "acme", hook["id"]), time.monotonic() + WAIT
    while (records := delivery.list_deliveries(rt, webhook))[0]["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
    (record,) = records
    assert record["status"] == "succeeded" and record["attempts"] == 2
