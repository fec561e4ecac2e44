"""Real time end to end (the issue's part 5), on real emulators and real HTTP:

Gmail emulator (a message arrives) → its watch publishes to the Pub/Sub emulator's gmail-notifications
topic → push subscription → served mailbridge POST /push/gmail → sync → one delivery message on the
Pub/Sub bus → push subscription → POST /internal/deliver → a local webhook receiver, which verifies the
Standard Webhooks signature and gets exactly one email.received. Then a receiver failing three times
still ends with exactly one accepted delivery, every attempt carrying the same webhook-id.

Push auth is off: the Pub/Sub emulator sends no OIDC token (FACTS.md); tests/integration/test_push_auth.py
covers the token check.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from email.message import EmailMessage

import pytest
from standardwebhooks import Webhook
from werkzeug.wrappers import Request as WsgiRequest

from mailbridge.api.app import create_app
from mailbridge.api.functions import FUNCTIONS
from mailbridge.bus.base import DELIVERIES_TOPIC, GMAIL_TOPIC
from mailbridge.bus.pubsub import PubSubBus
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore
from mailbridge.store.base import EVENTS
from tests import emulators
from tests.integration.gmail_stack import *  # noqa: F401,F403  (the Gmail emulator fixtures)
from tests.integration.gmail_stack import ACCOUNT, ADMIN_KEY, CLIENT_SECRET, ENCRYPTION_KEY
from tests.servers import serve

pytestmark = pytest.mark.pubsub

WAIT = 30.0       # an upper bound on waiting for the pipeline, never a measured expectation
QUIET = 2.5       # how long to watch for a duplicate after the expected delivery (redeliveries ~1 s apart)


class Receiver:
    """The customer's webhook endpoint: answers the scripted statuses in turn (then 200) and keeps
    every request it got (headers, body, status answered)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.statuses: list[int] = []
        self.requests: list[tuple[dict, bytes, int]] = []
        self.changed = threading.Condition(self.lock)

    def __call__(self, environ, start_response):
        req = WsgiRequest(environ)
        body = req.get_data()
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 200
            self.requests.append((dict(req.headers), body, status))
            self.changed.notify_all()
        start_response(f"{status} {'OK' if status < 300 else 'Failing'}", [("Content-Type", "text/plain")])
        return [b"thanks" if status < 300 else b"not now"]

    def accepted(self) -> list[tuple[dict, bytes]]:
        with self.lock:
            return [(h, b) for h, b, s in self.requests if 200 <= s < 300]

    def wait_accepted(self, count: int, timeout: float = WAIT) -> bool:
        with self.lock:
            return self.changed.wait_for(
                lambda: sum(1 for *_, s in self.requests if 200 <= s < 300) >= count, timeout)


@pytest.fixture
def topics(pubsub_emulator):
    """A fresh emulator with the two topics; yields (publisher, subscriber) admin clients."""
    from google.cloud import pubsub_v1
    emulators.reset_pubsub(pubsub_emulator)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    for name in (GMAIL_TOPIC, DELIVERIES_TOPIC):
        publisher.create_topic(request={"name": publisher.topic_path(emulators.TEST_PROJECT, name)})
    yield publisher, subscriber
    subscriber.close()
    publisher.transport.close()


@pytest.fixture
def gmail_runtime(store, gmail_settings, topics, monkeypatch):
    """gmail_stack's runtime, but on the Pub/Sub bus (overrides the fixture of the same name)."""
    monkeypatch.setenv("MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS", "1")    # the receiver is http on 127.0.0.1
    settings = dataclasses.replace(gmail_settings, bus="pubsub", push_auth="off", retry_base_seconds=1.0)
    secrets = EnvSecretStore({"MAILBRIDGE_ADMIN_KEY": ADMIN_KEY, "MAILBRIDGE_ENCRYPTION_KEY": ENCRYPTION_KEY,
                              "GOOGLE_CLIENT_SECRET": CLIENT_SECRET})
    bus = PubSubBus(settings.gcp_project)
    yield Runtime(settings, store=store, secrets=secrets, bus=bus)
    bus.close()


@pytest.fixture
def served(gmail_runtime, topics):
    """mailbridge served over HTTP, with the two push subscriptions pointing at it (as infra/ does)."""
    _, subscriber = topics
    with serve(create_app(list(FUNCTIONS), gmail_runtime)) as base:
        for topic, name, path in ((GMAIL_TOPIC, "gmail-notifications-push", "/push/gmail"),
                                  (DELIVERIES_TOPIC, "mailbridge-deliveries-push", "/internal/deliver")):
            subscriber.create_subscription(request={
                "name": subscriber.subscription_path(emulators.TEST_PROJECT, name),
                "topic": f"projects/{emulators.TEST_PROJECT}/topics/{topic}",
                "push_config": {"push_endpoint": base + path}, "ack_deadline_seconds": 20,
                "retry_policy": {"minimum_backoff": {"seconds": 0}, "maximum_backoff": {"seconds": 1}}})
        yield base


@pytest.fixture
def receiver():
    hook = Receiver()
    with serve(hook) as base:
        hook.url = base + "/hooks/mail"
        yield hook


def _inbound(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"] = "Sender <sender@example.org>", ACCOUNT
    msg["Subject"], msg["Message-ID"] = f"Real time {n}", f"<rt-{n}@example.org>"
    msg.set_content(f"hello in real time, number {n}")
    msg.add_alternative(f"<p>hello in real time, number {n}</p>", subtype="html")
    return msg.as_bytes()


def _received_events(store) -> list[dict]:
    return [r["event"] for r in store.query(EVENTS, [("event_type", "==", "email.received")])]


def test_gmail_push_reaches_the_webhook_once_and_survives_three_failures(
        served, gmail, gmail_runtime, api, auth_headers, receiver, connected_mailbox):
    created = api.post("/v1/webhooks", headers=auth_headers,
                       json={"url": receiver.url, "events": ["email.received"]})
    assert created.status_code == 201, created.get_json()
    webhook = created.get_json()
    verifier = Webhook(webhook["secret"])

    # 1. One inbound message → exactly one verified email.received.
    gmail.deliver(_inbound(1))
    assert receiver.wait_accepted(1), receiver.requests
    time.sleep(QUIET)   # room for a wrongful duplicate to show up
    (headers, body), = receiver.accepted()
    payload = verifier.verify(body, headers)
    assert payload["type"] == "email.received" and payload["id"] == headers["Webhook-Id"]
    email = payload["data"]
    assert email["subject"] == "Real time 1" and email["user_id"] == connected_mailbox.user_id
    assert "hello in real time, number 1" in email["text"] and "<p>" in email["html"]
    assert [e["id"] for e in _received_events(gmail_runtime.store)] == [payload["id"]]

    # 2. The receiver fails three times: Pub/Sub redelivers; one accepted delivery, one webhook-id.
    receiver.statuses = [500, 500, 500]
    gmail.deliver(_inbound(2))
    assert receiver.wait_accepted(2), receiver.requests
    time.sleep(QUIET)
    with receiver.lock:
        second = [(h, b, s) for h, b, s in receiver.requests
                  if json.loads(b)["data"].get("subject") == "Real time 2"]
    assert [s for *_, s in second] == [500, 500, 500, 200]
    assert len({h["Webhook-Id"] for h, _, _ in second}) == 1
    accepted = verifier.verify(second[-1][1], second[-1][0])
    assert accepted["data"]["subject"] == "Real time 2"
    assert len(receiver.accepted()) == 2
    assert len(_received_events(gmail_runtime.store)) == 2

    listed = api.get(f"/v1/webhooks/{webhook['id']}/deliveries", headers=auth_headers)
    assert listed.status_code == 200, listed.get_json()
    by_event = {d["event_id"]: d for d in listed.get_json()["deliveries"]}
    retried = by_event[accepted["id"]]
    assert retried["status"] == "succeeded" and retried["attempts"] == 4
    assert retried["last_status_code"] == 200
    assert by_event[payload["id"]]["attempts"] == 1
