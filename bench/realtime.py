"""Real time: Gmail notification → webhook latency, notifications ingested per second, upstream calls per push.

Emulators answer instantly (0 ms). Three measurements:
1. In-process pipeline (our own cost): POST /push/gmail (a Pub/Sub envelope) on the served app →
   sync (history.list + one batch) → inline bus → signed webhook POST to a local receiver. Latency is
   from the push to the receiver's arrival; Gmail round trips and quota units per notification are
   counted by the emulator, beside DESIGN.md's budget of 3 round trips (history, batch, webhook).
2. Throughput: pushes from several mailboxes at once against one served instance (threaded WSGI,
   SQLite): notifications per second acknowledged, and until every webhook arrived.
3. Deployed shape on the Pub/Sub emulator (skipped without gcloud): Gmail's watch publishes to
   the emulator → push → /push/gmail → Pub/Sub bus → push → /internal/deliver → receiver; latency from
   the message's arrival in the mailbox (the emulator's ≤1/s notification pacing turned off).

    .venv/bin/python -m bench.realtime [--runs 100]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

import requests
from werkzeug.wrappers import Request as WsgiRequest

from bench.common import connect_emulated_mailbox, percentile
from dev.google_emulator import EmulatorState, run_in_thread
from mailbridge.api.app import create_app
from mailbridge.bus.handlers import HANDLERS
from mailbridge.bus.inline import InlineBus
from mailbridge.config import Settings
from mailbridge.core import keys
from mailbridge.core.permissions import Permissions, RateLimit
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore
from mailbridge.store.sqlite import SqliteStore
from tests.servers import serve

CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-secret"
PUBLIC = "http://127.0.0.1:8080"
PROJECT = "mailbridge-bench"
GMAIL_TOPIC = f"projects/{PROJECT}/topics/gmail-notifications"
BUDGET_TRIPS = 3


class Receiver:
    """The webhook endpoint: 200 to everything; arrival time per email subject."""

    def __init__(self):
        self.cond = threading.Condition()
        self.arrivals: dict[str, float] = {}

    def __call__(self, environ, start_response):
        body = WsgiRequest(environ).get_data()
        now = time.perf_counter()
        subject = json.loads(body)["data"].get("subject", "")
        with self.cond:
            self.arrivals.setdefault(subject, now)
            self.cond.notify_all()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def wait(self, subjects: list[str], timeout: float = 30.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: all(s in self.arrivals for s in subjects), timeout)


def _mail(address: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "sender@example.org", address, subject
    msg["Message-ID"] = f"<{abs(hash(subject))}@bench.example>"
    msg.set_content(f"{subject} " * 20)
    msg.add_alternative(f"<p>{subject}</p>", subtype="html")
    return msg.as_bytes()


def _envelope(address: str, history_id: int, n: int) -> dict:
    data = base64.b64encode(json.dumps({"emailAddress": address, "historyId": history_id}).encode()).decode()
    return {"message": {"data": data, "attributes": {}, "messageId": str(n), "publishTime": "2026-11-21T00:00:00Z"},
            "subscription": f"projects/{PROJECT}/subscriptions/gmail-notifications-push"}


class Stack:
    """The Gmail emulator, a runtime on SQLite, a tenant key, a webhook to the receiver, N mailboxes connected."""

    def __init__(self, folder: Path, accounts: list[str], receiver_url: str, bus=None):
        self.state = EmulatorState(notify_interval=0.0)
        self.state.add_client(CLIENT_ID, CLIENT_SECRET, [PUBLIC + "/oauth/callback/google"])
        for address in accounts:
            self.state.add_account(address)
        self.state.publisher = lambda topic, payload: None   # sections 1–2 push by hand
        self.server = run_in_thread(self.state)
        base = self.server.base_url
        self.settings = Settings(
            google_client_id=CLIENT_ID, google_auth_url=base + "/o/oauth2/v2/auth",
            google_token_url=base + "/token", google_revoke_url=base + "/revoke", gmail_api_endpoint=base,
            public_base_url=PUBLIC, push_auth="off", gmail_pubsub_topic=GMAIL_TOPIC, gcp_project=PROJECT,
            bus="pubsub" if bus is not None else "inline", retry_base_seconds=0.5)
        secrets = EnvSecretStore({"MAILBRIDGE_ENCRYPTION_KEY": base64.b64encode(b"b" * 32).decode(),
                                  "GOOGLE_CLIENT_SECRET": CLIENT_SECRET})
        self.bus = bus or InlineBus(HANDLERS, workers=8)
        self.runtime = Runtime(self.settings, store=SqliteStore(folder / "bench.db"), secrets=secrets, bus=self.bus)
        self.app = create_app(runtime=self.runtime)
        api = self.app.test_client()
        unlimited = Permissions(rate_limit=RateLimit(per_minute=1_000_000, per_hour=100_000_000))
        key = keys.create_api_key(self.runtime.store, tenant_id="bench", name="bench", permissions=unlimited)["key"]
        headers = {"Authorization": "Bearer " + key}
        for address in accounts:
            self.state.oauth_account = address
            connect_emulated_mailbox(api, headers, address)
        hook = api.post("/v1/webhooks", headers=headers, json={"url": receiver_url, "events": ["email.received"]})
        assert hook.status_code == 201, hook.get_json()

    def deliver(self, address: str, subject: str) -> int:
        """A new inbound message; returns the mailbox's history id after it."""
        self.state.deliver(address, _mail(address, subject))
        return self.state.mailbox(address).history_id

    def counts(self) -> tuple[dict, dict]:
        snap = self.state.snapshot()
        return snap["calls"], snap["quota"]

    def close(self) -> None:
        self.bus.drain(10)
        self.bus.close()
        self.server.stop()
        self.runtime.store.close()


def _trips(before: dict, after: dict) -> int:
    """Round trips: every call, except the calls inside a batch (the batch itself is the trip)."""
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    inner = sum(v for k, v in diff.items() if k in ("gmail.users.messages.get", "gmail.users.threads.get"))
    return sum(diff.values()) - (inner if diff.get("batch", 0) else 0)


def pipeline(folder: Path, runs: int) -> None:
    receiver = Receiver()
    address = "bench@example.com"
    with serve(receiver) as hook_base:
        stack = Stack(folder, [address], hook_base + "/hook")
        try:
            with serve(stack.app) as base:
                session = requests.Session()
                latencies, trips, units = [], [], []
                for n in range(runs + 3):
                    subject = f"pipeline {n}"
                    history_id = stack.deliver(address, subject)
                    calls, quota = stack.counts()
                    start = time.perf_counter()
                    resp = session.post(base + "/push/gmail", json=_envelope(address, history_id, n))
                    assert resp.status_code == 204, resp.text
                    assert receiver.wait([subject]), f"no webhook for {subject}"
                    if n >= 3:   # the first runs warm connections and caches
                        latencies.append((receiver.arrivals[subject] - start) * 1000)
                        after_calls, after_quota = stack.counts()
                        trips.append(_trips(calls, after_calls) + 1)   # + the webhook POST
                        units.append(after_quota.get(address, 0) - quota.get(address, 0))
                # A duplicate of the last notification: the cursor is already there.
                calls, _ = stack.counts()
                assert session.post(base + "/push/gmail", json=_envelope(address, history_id, 10**6)).status_code == 204
                duplicate_trips = _trips(calls, stack.counts()[0])
        finally:
            stack.close()
    print(f"\nNotification → webhook, in process (inline bus, SQLite, emulators at 0 ms), {runs} runs")
    print(f"{'measure':<34} {'p50':>8} {'p99':>8} {'budget':>8}")
    print(f"{'latency push → webhook (ms)':<34} {statistics.median(latencies):>8.2f} {percentile(latencies, 0.99):>8.2f} {'':>8}")
    print(f"{'round trips per notification':<34} {statistics.median(trips):>8.0f} {max(trips):>8.0f} {BUDGET_TRIPS:>8}")
    print(f"{'Gmail quota units per notification':<34} {statistics.median(units):>8.0f} {max(units):>8.0f} {'':>8}")
    print(f"{'round trips, duplicate notification':<34} {duplicate_trips:>8} {'':>8} {0:>8}")


def throughput(folder: Path, mailboxes: int, per_mailbox: int) -> None:
    receiver = Receiver()
    accounts = [f"box{i}@example.com" for i in range(mailboxes)]
    with serve(receiver) as hook_base:
        stack = Stack(folder, accounts, hook_base + "/hook")
        try:
            with serve(stack.app) as base:
                def one_mailbox(address: str) -> list[str]:
                    session, subjects = requests.Session(), []
                    for n in range(per_mailbox):
                        subject = f"{address} {n}"
                        history_id = stack.deliver(address, subject)
                        resp = session.post(base + "/push/gmail", json=_envelope(address, history_id, n))
                        assert resp.status_code == 204, resp.text
                        subjects.append(subject)
                    return subjects

                one_mailbox(accounts[0])   # warm
                with receiver.cond:
                    receiver.arrivals.clear()
                start = time.perf_counter()
                with ThreadPoolExecutor(mailboxes) as pool:
                    subjects = [s for batch in pool.map(one_mailbox, accounts) for s in batch]
                acked = time.perf_counter() - start
                assert receiver.wait(subjects, timeout=120), "webhooks missing"
                delivered = max(receiver.arrivals[s] for s in subjects) - start
        finally:
            stack.close()
    total = mailboxes * per_mailbox
    print(f"\nThroughput, one instance (threaded WSGI, SQLite, inline bus), {mailboxes} mailboxes × {per_mailbox}")
    print(f"{'measure':<34} {'value':>10}")
    print(f"{'notifications acknowledged / s':<34} {total / acked:>10.1f}")
    print(f"{'notifications → webhooks / s':<34} {total / delivered:>10.1f}")


def deployed(folder: Path, runs: int) -> None:
    try:
        from tests import emulators
        emulator = emulators.start_pubsub()
    except Exception as exc:   # no gcloud/Java here: the table says so
        print(f"\nDeployed shape on the Pub/Sub emulator: skipped ({type(exc).__name__}: {exc})")
        return
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    from google.cloud import pubsub_v1

    from mailbridge.bus.pubsub import PubSubBus
    receiver = Receiver()
    address = "deployed@example.com"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    stack = None
    try:
        for topic in ("gmail-notifications", "mailbridge-deliveries"):
            publisher.create_topic(request={"name": f"projects/{PROJECT}/topics/{topic}"})
        with serve(receiver) as hook_base:
            stack = Stack(folder, [address], hook_base + "/hook", bus=PubSubBus(PROJECT))
            stack.state.publisher = None    # the emulator's notifier publishes to PUBSUB_EMULATOR_HOST
            with serve(stack.app) as base:
                for topic, path in (("gmail-notifications", "/push/gmail"),
                                    ("mailbridge-deliveries", "/internal/deliver")):
                    subscriber.create_subscription(request={
                        "name": f"projects/{PROJECT}/subscriptions/{topic}-push",
                        "topic": f"projects/{PROJECT}/topics/{topic}", "ack_deadline_seconds": 20,
                        "push_config": {"push_endpoint": base + path}})
                latencies = []
                for n in range(runs + 2):
                    subject = f"deployed {n}"
                    start = time.perf_counter()
                    stack.deliver(address, subject)
                    assert receiver.wait([subject]), f"no webhook for {subject}"
                    if n >= 2:
                        latencies.append((receiver.arrivals[subject] - start) * 1000)
    finally:
        if stack is not None:
            stack.close()
        subscriber.close()
        publisher.transport.close()
        emulator.stop()
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    print("\nDeployed shape: Gmail watch → Pub/Sub emulator → /push/gmail → Pub/Sub bus → /internal/deliver, "
          f"{runs} runs")
    print(f"{'measure':<34} {'p50':>8} {'p99':>8}")
    print(f"{'latency mail → webhook (ms)':<34} {statistics.median(latencies):>8.1f} {percentile(latencies, 0.99):>8.1f}")


def main(runs: int = 100) -> None:
    os.environ["MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS"] = "1"   # the receiver is http on 127.0.0.1
    with tempfile.TemporaryDirectory() as folder:
        pipeline(Path(folder) / "a", runs)
        throughput(Path(folder) / "b", mailboxes=8, per_mailbox=max(5, runs // 4))
        deployed(Path(folder) / "c", max(10, runs // 4))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    main(parser.parse_args().runs)
