"""Webhooks over HTTP (API.md section 7) against a local receiver, on both store backends.

The runtime's bus is an InlineBus without handlers (it only records), so each test drives
`handle_delivery` itself, one attempt at a time; one test runs the real inline bus with its retries,
one goes through the real `/internal/deliver` route. The receiver is a werkzeug server on 127.0.0.1
answering a scripted list of statuses; signatures are checked with the `standardwebhooks` package.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from werkzeug.serving import make_server
from werkzeug.wrappers import Request

from mailbridge import clock
from mailbridge.api.app import create_app
from mailbridge.bus.base import DELIVERIES_TOPIC
from mailbridge.bus.handlers import HANDLERS
from mailbridge.bus.inline import InlineBus
from mailbridge.config import Settings
from mailbridge.core import delivery as delivery_core
from mailbridge.core.events import delivery_id_for, emit
from mailbridge.crypto import DecryptionError
from mailbridge.errors import TransientError
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore
from mailbridge.store.base import CONNECTIONS, DELIVERIES, EVENTS, WEBHOOKS

SECRET_PATTERN = r"^whsec_[A-Za-z0-9+/]{43}=$"
TENANT = "acme"


class Receiver:
    """A webhook endpoint on 127.0.0.1: records every request; answers the next scripted action
    (a status code, "sleep" = answer after the caller gave up, 302 = redirect to /elsewhere), else 200."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def _app(self, environ, start_response):
        request = Request(environ)
        with self._lock:
            self.requests.append({"path": request.path, "query": request.query_string.decode(),
                                  "headers": dict(request.headers), "body": request.get_data()})
            action = self.script.pop(0) if self.script else 200
        headers = [("Content-Type", "text/plain")]
        if action == "sleep":
            self._release.wait(30)
            action = 200
        if action == 302:
            headers.append(("Location", self.url("/elsewhere")))
        start_response(f"{action} Scripted", headers)
        return [b"ok"]

    def hits(self, path: str = "/hook") -> list[dict]:
        return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def allow_private(monkeypatch):
    """The receiver is plain http on 127.0.0.1: allowed unless a test says otherwise."""
    monkeypatch.setenv("MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS", "1")


@pytest.fixture
def bus():
    recording = InlineBus()   # no handlers: messages are only recorded, tests hand them on
    yield recording
    recording.close()


@pytest.fixture
def runtime(store, secrets_env, bus) -> Runtime:
    return Runtime(Settings(push_auth="off"), store=store, secrets=EnvSecretStore(secrets_env), bus=bus)


@pytest.fixture
def client(runtime):
    return create_app(["manage", "deliver"], runtime).test_client()


@pytest.fixture
def key(client, admin_headers) -> dict:
    return make_key(client, admin_headers)


def make_key(client, admin_headers, tenant: str = TENANT, **body) -> dict:
    resp = client.post("/v1/api-keys", json={"name": "k", "tenant_id": tenant, **body}, headers=admin_headers)
    assert resp.status_code == 201, resp.get_json()
    return {"Authorization": f"Bearer {resp.get_json()['key']}"}


def add_connection(runtime, conn_id: str, tenant: str = TENANT) -> str:
    runtime.store.put(CONNECTIONS, conn_id, {"tenant_id": tenant, "user_id": "u_1", "provider": "google",
                                            "email": f"{conn_id}@example.com", "created_ts": clock.now()})
    return conn_id


def create_webhook(client, key, **body) -> dict:
    resp = client.post("/v1/webhooks", json=body, headers=key)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def emit_received(runtime, conn_id: str = "conn_a", event_id: str = "evt_received_1", **data) -> dict:
    email = {"id": f"google:{conn_id}:19485a", "subject": "Q1 update", "from": {"email": "boss@example.com"},
             "text": "Hello", "user_id": "u_1", **data}
    return emit(runtime.store, runtime.bus, tenant_id=TENANT, event_type="email.received", data=email,
                connection_id=conn_id, event_id=event_id)


def delivery_messages(bus) -> list[dict]:
    return [m for topic, m in bus.published if topic == DELIVERIES_TOPIC]


def deliver_last(runtime, bus, **kwargs) -> None:
    """Hand the newest delivery message to the handler, as the bus would."""
    delivery_core.handle_delivery(runtime, delivery_messages(bus)[-1], **kwargs)


def deliveries(client, key, webhook_id: str, **query) -> list[dict]:
    resp = client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=key, query_string=query)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["deliveries"]


def verified(secret: str, request: dict) -> dict:
    """The body, verified with the standardwebhooks package (raises WebhookVerificationError)."""
    return Webhook(secret).verify(request["body"], request["headers"])


# --- CRUD ----------------------------------------------------------------------------------------


def test_crud_answers_the_webhook_object_and_shows_the_secret_once(client, key, receiver):
    created = create_webhook(client, key, url=receiver.url(), description="crm")
    assert created["id"].startswith("wh_") and created["enabled"] is True
    assert created["events"] == ["email.received", "email.sent", "connection.created", "connection.error",
                                 "connection.deleted", "backfill.completed"]
    assert created["connection_id"] is None and created["description"] == "crm"
    assert re.match(SECRET_PATTERN, created["secret"]) and len(base64.b64decode(created["secret"][6:])) == 32

    listed = client.get("/v1/webhooks", headers=key).get_json()["webhooks"]
    one = client.get(f"/v1/webhooks/{created['id']}", headers=key).get_json()
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0] and "secret" not in one
    assert one == {k: v for k, v in created.items() if k != "secret"}

    resp = client.patch(f"/v1/webhooks/{created['id']}", headers=key,
                        json={"events": ["email.sent"], "description": None, "enabled": False})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["events"] == ["email.sent"] and resp.get_json()["enabled"] is False
    assert resp.get_json()["description"] is None and resp.get_json()["url"] == receiver.url()

    assert client.delete(f"/v1/webhooks/{created['id']}", headers=key).status_code == 204
    assert client.get(f"/v1/webhooks/{created['id']}", headers=key).status_code == 404


def test_secret_is_stored_encrypted_and_bound_to_its_webhook(client, key, receiver, runtime):
    first = create_webhook(client, key, url=receiver.url())
    second = create_webhook(client, key, url=receiver.url())
    stored = runtime.store.get(WEBHOOKS, first["id"])
    assert first["secret"] not in json.dumps(stored)
    assert first["secret"][6:] not in json.dumps(stored)
    assert runtime.cipher.decrypt(stored["secret"], first["id"]) == first["secret"]
    with pytest.raises(DecryptionError):
        runtime.cipher.decrypt(stored["secret"], second["id"])


def test_another_tenants_webhook_is_not_found(client, admin_headers, key, receiver):
    mine = create_webhook(client, key, url=receiver.url())
    theirs = make_key(client, admin_headers, tenant="globex")
    base = f"/v1/webhooks/{mine['id']}"
    for method, path in (("get", base), ("patch", base), ("delete", base), ("post", base + "/rotate-secret"),
                         ("get", base + "/deliveries"), ("post", base + "/deliveries/dlv_x/retry")):
        resp = getattr(client, method)(path, headers=theirs, json={} if method == "patch" else None)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found", (method, path)
    assert client.get("/v1/webhooks", headers=theirs).get_json()["webhooks"] == []
    assert client.get(base, headers=key).status_code == 200


@pytest.mark.parametrize("body, field", [
    ({"url": "https://203.0.113.9/x", "colour": "red"}, "colour"),
    ({"url": "https://203.0.113.9/x", "events": ["email.opened"]}, "events.0"),
    ({"url": "https://203.0.113.9/x", "events": []}, "events"),
    ({"url": "https://203.0.113.9/x", "events": ["email.sent", "email.sent"]}, "events"),
    ({"url": 7}, "url"),
    ({}, "url"),
    ({"url": "ftp://host/x"}, "url"),
    ({"url": "https://user:pw@host/x"}, "url"),
])
def test_invalid_bodies_are_422_naming_the_field(client, key, body, field):
    resp = client.post("/v1/webhooks", json=body, headers=key)
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]["details"]["field"] == field


def test_connection_must_be_the_tenants_and_visible_to_the_key(client, admin_headers, key, runtime, receiver):
    add_connection(runtime, "conn_mine")
    add_connection(runtime, "conn_theirs", tenant="globex")
    bound = create_webhook(client, key, url=receiver.url(), connection_id="conn_mine")
    assert bound["connection_id"] == "conn_mine"
    unbound = create_webhook(client, key, url=receiver.url())
    for conn in ("conn_theirs", "conn_nowhere"):
        resp = client.post("/v1/webhooks", json={"url": receiver.url(), "connection_id": conn}, headers=key)
        assert resp.status_code == 404, resp.get_json()

    add_connection(runtime, "conn_other")
    narrow = make_key(client, admin_headers, permissions={"connection_ids": ["conn_mine"]})
    resp = client.post("/v1/webhooks", json={"url": receiver.url()}, headers=narrow)
    assert resp.status_code == 422 and resp.get_json()["error"]["details"]["field"] == "connection_id"
    assert client.post("/v1/webhooks", json={"url": receiver.url(), "connection_id": "conn_other"},
                       headers=narrow).status_code == 404
    own = create_webhook(client, narrow, url=receiver.url(), connection_id="conn_mine")
    seen = {w["id"] for w in client.get("/v1/webhooks", headers=narrow).get_json()["webhooks"]}
    assert seen == {bound["id"], own["id"]}
    assert client.get(f"/v1/webhooks/{unbound['id']}", headers=narrow).status_code == 404
    assert len(client.get("/v1/webhooks", headers=key).get_json()["webhooks"]) == 3


# --- delivery ------------------------------------------------------------------------------------


def test_delivery_is_signed_per_standard_webhooks_with_the_event_as_body(client, key, runtime, bus, receiver):
    hook = create_webhook(client, key, url=receiver.url("/hook?token=abc"))
    event = emit_received(runtime)
    assert len(delivery_messages(bus)) == 1
    message = delivery_messages(bus)[0]
    assert message == {"delivery_id": delivery_id_for(event["id"], hook["id"]), "webhook_id": hook["id"],
                       "tenant_id": TENANT, "event_id": event["id"]}
    deliver_last(runtime, bus)

    [request] = receiver.hits()
    assert request["query"] == "token=abc"
    assert verified(hook["secret"], request) == event
    assert set(event) == {"type", "id", "timestamp", "data"} and event["data"]["user_id"] == "u_1"
    assert request["headers"]["Webhook-Id"] == event["id"]
    assert request["headers"]["Webhook-Signature"].startswith("v1,")
    now = time.time()
    assert abs(int(request["headers"]["Webhook-Timestamp"]) - now) < 300
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(request["body"], request["headers"])

    [listed] = deliveries(client, key, hook["id"])
    assert listed["status"] == "succeeded" and listed["attempts"] == 1 and listed["last_status_code"] == 200
    assert listed["event_id"] == event["id"] and listed["event_type"] == "email.received"
    assert listed["last_error"] is None and listed["next_attempt_at"] is None
    deliver_last(runtime, bus)   # the bus redelivers the same message: nothing is sent twice
    assert len(receiver.hits()) == 1


def test_emitting_twice_queues_one_delivery_per_webhook(client, key, runtime, bus, receiver):
    first = create_webhook(client, key, url=receiver.url())
    second = create_webhook(client, key, url=receiver.url("/other"))
    emit_received(runtime)
    emit_received(runtime)
    assert sorted(m["webhook_id"] for m in delivery_messages(bus)) == sorted([first["id"], second["id"]])
    assert len(runtime.store.query(DELIVERIES)) == 2 and len(runtime.store.query(EVENTS)) == 1


def test_unfinished_fan_out_is_completed_by_the_callers_retry(client, key, runtime, bus, receiver):
    hook = create_webhook(client, key, url=receiver.url())
    bus.close()   # the bus refuses: emit raises, the event stays unfinished
    with pytest.raises(Exception):
        emit_received(runtime)
    retry_bus = InlineBus()
    again = Runtime(runtime.settings, store=runtime.store, secrets=runtime.secrets, bus=retry_bus)
    emit_received(again)
    emit_received(again)
    assert [m["webhook_id"] for m in delivery_messages(retry_bus)] == [hook["id"]]
    retry_bus.close()


def test_events_and_connection_filters_choose_the_webhooks(client, key, runtime, bus, receiver):
    add_connection(runtime, "conn_a")
    add_connection(runtime, "conn_b")
    sent_only = create_webhook(client, key, url=receiver.url(), events=["email.sent"])
    conn_b_only = create_webhook(client, key, url=receiver.url(), connection_id="conn_b")
    everything = create_webhook(client, key, url=receiver.url())
    disabled = create_webhook(client, key, url=receiver.url())
    client.patch(f"/v1/webhooks/{disabled['id']}", json={"enabled": False}, headers=key)

    emit_received(runtime, conn_id="conn_a", event_id="evt_1")
    assert [m["webhook_id"] for m in delivery_messages(bus)] == [everything["id"]]
    emit(runtime.store, bus, tenant_id=TENANT, event_type="email.sent", data={"id": "x"},
         connection_id="conn_b", event_id="evt_2")
    assert sorted(m["webhook_id"] for m in delivery_messages(bus)[1:]) == sorted(
        [sent_only["id"], conn_b_only["id"], everything["id"]])
    emit(runtime.store, bus, tenant_id="globex", event_type="email.sent", data={"id": "y"}, event_id="evt_3")
    assert len(delivery_messages(bus)) == 4


def test_failed_attempts_are_recorded_and_retried_with_the_same_webhook_id(client, key, runtime, bus, receiver):
    hook = create_webhook(client, key, url=receiver.url())
    event = emit_received(runtime)
    receiver.script = [500, 503]
    for expected_attempts, delay in ((1, 10), (2, 20)):
        with pytest.raises(TransientError):
            deliver_last(runtime, bus)
        [listed] = deliveries(client, key, hook["id"])
        assert listed["status"] == "pending" and listed["attempts"] == expected_attempts
        assert listed["last_status_code"] == (500 if expected_attempts == 1 else 503)
        stored = runtime.store.get(DELIVERIES, listed["id"])
        assert stored["next_attempt_ts"] - stored["updated_ts"] == pytest.approx(delay)
        assert clock.parse_rfc3339(listed["next_attempt_at"]) == pytest.approx(stored["next_attempt_ts"], abs=1)
    assert [d["last_status_code"] for d in deliveries(client, key, hook["id"])] == [503]
    assert deliveries(client, key, hook["id"])[0]["last_error"] == "answered 503"
    deliver_last(runtime, bus)
    [listed] = deliveries(client, key, hook["id"])
    assert listed["status"] == "succeeded" and listed["attempts"] == 3 and listed["last_status_code"] == 200
    assert [r["headers"]["Webhook-Id"] for r in receiver.hits()] == [event["id"]] * 3
    for request in receiver.hits():
        assert verified(hook["secret"], request) == event


def test_410_gone_disables_the_webhook_and_fails_the_delivery(client, key, runtime, bus, receiver):
    hook = create_webhook(client, key, url=receiver.url())
    emit_received(runtime)
    receiver.script = [410]
    deliver_last(runtime, bus)   # no exception: nothing left to retry
    assert client.get(f"/v1/webhooks/{hook['id']}", headers=key).get_json()["enabled"] is False
    [listed] = deliveries(client, key, hook["id"])
    assert listed["status"] == "failed" and listed["last_status_code"] == 410
    emit_received(runtime, event_id="evt_after_gone")
    assert len(delivery_messages(bus)) == 1
    resp = client.post(f"/v1/webhooks/{hook['id']}/deliveries/{listed['id']}/retry", headers=key)
    assert resp.status_code == 409


def test_dead_after_24_hours_then_retried_by_hand(client, key, runtime, bus, receiver):
    hook = create_webhook(client, key, url=receiver.url())
    emit_received(runtime)
    receiver.script = [500, 500]
    with pytest.raises(TransientError):
        deliver_last(runtime, bus)
    [listed] = deliveries(client, key, hook["id"])
    retry = f"/v1/webhooks/{hook['id']}/deliveries/{listed['id']}/retry"
    assert client.post(retry, headers=key).status_code == 409   # still pending: retried automatically
    runtime.store.update(DELIVERIES, listed["id"], {"created_ts": clock.now() - 24 * 3600 - 60})
    deliver_last(runtime, bus)   # the last attempt fails: dead-lettered, acknowledged
    [listed] = deliveries(client, key, hook["id"])
    assert listed["status"] == "dead" and listed["attempts"] == 2 and listed["next_attempt_at"] is None

    resp = client.post(retry, headers=key)
    assert resp.status_code == 202 and resp.get_json()["delivery"]["status"] == "pending"
    assert len(delivery_messages(bus)) == 2 and delivery_messages(bus)[-1]["delivery_id"] == listed["id"]
    deliver_last(runtime, bus)
    [listed] = deliveries(client, key, hook["id"])
    assert listed["status"] == "succeeded" and listed["attempts"] == 3
    assert len({r["headers"]["Webhook-Id"] for r in receiver.hits()}) == 1
    other = create_webhook(client, key, url=receiver.url())
    resp = client.post(f"/v1/webhooks/{other['id']}/deliveries/{listed['id']}/retry", headers=key)
    assert resp.status_code == 404


def test_deliveries_of_a_deleted_or_disabled_webhook_settle_as_failed(client, key, runtime, bus, receiver):
    gone = create_webhook(client, key, url=receiver.url())
    off = create_webhook(client, key, url=receiver.url())
    emit_received(runtime)
    client.delete(f"/v1/webhooks/{gone['id']}", headers=key)
    client.patch(f"/v1/webhooks/{off['id']}", json={"enabled": False}, headers=key)
    for message in delivery_messages(bus):
        delivery_core.handle_delivery(runtime, message)
    records = {d["webhook_id"]: d for d in runtime.store.query(DELIVERIES)}
    assert records[gone["id"]]["status"] == records[off["id"]]["status"] == "failed"
    assert records[off["id"]]["last_error"] == "the webhook is disabled" and receiver.requests == []


def test_a_secret_that_cannot_be_decrypted_is_a_failed_attempt(client, key, runtime, bus, receiver):
    hook = create_webhook(client, key, url=receiver.url())
    emit_received(runtime)
    other_key = {"MAILBRIDGE_ENCRYPTION_KEY": base64.b64encode(b"o" * 32).decode()}
    rekeyed = Runtime(runtime.settings, store=runtime.store, secrets=EnvSecretStore(other_key), bus=bus)
    with pytest.raises(TransientError):
        deliver_last(rekeyed, bus)
    [listed] = deliveries(client, key, hook["id"])
    assert "cannot be decrypted" in listed["last_error"] and receiver.requests == []


def test_near_the_bus_attempt_limit_a_fresh_message_takes_over(client, key, runtime, bus, receiver):
    create_webhook(client, key, url=receiver.url())
    emit_received(runtime)
    receiver.script = [500, 500]
    with pytest.raises(TransientError):
        deliver_last(runtime, bus, bus_attempt=3)
    deliver_last(runtime, bus, bus_attempt=delivery_core.PUBSUB_MAX_DELIVERY_ATTEMPTS - 2)   # acknowledged
    messages = delivery_messages(bus)
    assert len(messages) == 2 and messages[0] == messages[1]
    [stored] = runtime.store.query(DELIVERIES)
    assert stored["status"] == "pending" and stored["attempts"] == 2 and stored["attempts_at_publish"] == 2


def test_rotated_secret_signs_beside_the_new_one_for_24_hours(client, key, runtime, bus, receiver):
    hook = create_webhook(client, key, url=receiver.url())
    resp = client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=key)
    assert resp.status_code == 200
    new_secret = resp.get_json()["secret"]
    assert new_secret != hook["secret"] and list(resp.get_json()) == ["secret"]
    emit_received(runtime, event_id="evt_r1")
    deliver_last(runtime, bus)
    request = receiver.hits()[-1]
    assert len(request["headers"]["Webhook-Signature"].split(" ")) == 2
    assert verified(new_secret, request)["id"] == "evt_r1"
    assert verified(hook["secret"], request)["id"] == "evt_r1"

    stored = runtime.store.get(WEBHOOKS, hook["id"])
    runtime.store.update(WEBHOOKS, hook["id"], {"secret_rotated_ts": stored["secret_rotated_ts"] - 24 * 3600 - 1})
    emit_received(runtime, event_id="evt_r2")
    deliver_last(runtime, bus)
    request = receiver.hits()[-1]
    assert len(request["headers"]["Webhook-Signature"].split(" ")) == 1
    assert verified(new_secret, request)["id"] == "evt_r2"
    with pytest.raises(WebhookVerificationError):
        verified(hook["secret"], request)


def test_a_redirect_is_a_failure_and_its_location_is_never_fetched(client, key, runtime, bus, receiver):
    hook = create_webhook(client, key, url=receiver.url())
    emit_received(runtime)
    receiver.script = [302]
    with pytest.raises(TransientError):
        deliver_last(runtime, bus)
    [listed] = deliveries(client, key, hook["id"])
    assert listed["last_status_code"] == 302 and "redirect" in listed["last_error"]
    assert receiver.hits("/elsewhere") == [] and len(receiver.hits()) == 1


def test_deliveries_are_listed_newest_first_with_a_limit(client, key, runtime, bus, receiver):
    hook = create_webhook(client, key, url=receiver.url())
    for n in range(3):
        emit_received(runtime, event_id=f"evt_{n}")
        runtime.store.update(DELIVERIES, delivery_id_for(f"evt_{n}", hook["id"]), {"created_ts": 1000.0 + n})
    assert [d["event_id"] for d in deliveries(client, key, hook["id"])] == ["evt_2", "evt_1", "evt_0"]
    assert [d["event_id"] for d in deliveries(client, key, hook["id"], limit=2)] == ["evt_2", "evt_1"]
    for limit in ("0", "101", "x", "9" * 5000):
        resp = client.get(f"/v1/webhooks/{hook['id']}/deliveries?limit={limit}", headers=key)
        assert resp.status_code == 422 and resp.get_json()["error"]["details"]["field"] == "limit"


def test_a_keys_visible_fields_apply_to_the_webhooks_it_created(client, admin_headers, runtime, bus, receiver):
    add_connection(runtime, "conn_a")
    narrow = make_key(client, admin_headers, permissions={"visible_fields": ["subject"]})
    hook = create_webhook(client, narrow, url=receiver.url())
    emit_received(runtime)
    deliver_last(runtime, bus)
    data = verified(hook["secret"], receiver.hits()[-1])["data"]
    assert data["subject"] == "Q1 update" and data["from"] is None and data["text"] is None
    assert data["id"] == "google:conn_a:19485a" and data["user_id"] == "u_1"


def test_secrets_and_url_tokens_stay_out_of_logs_and_errors(client, key, runtime, bus, receiver, caplog):
    hook = create_webhook(client, key, url=receiver.url("/hook?token=sekrit-token"))
    emit_received(runtime)
    receiver.script = [500]
    with caplog.at_level(logging.DEBUG), pytest.raises(TransientError) as raised:
        deliver_last(runtime, bus)
    [listed] = deliveries(client, key, hook["id"])
    # Our own loggers only: the receiver (werkzeug) and, at DEBUG, urllib3 log the request line.
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("mailbridge")]
    text = "\n".join(ours) + str(raised.value) + json.dumps(listed)
    assert "sekrit-token" not in text and hook["secret"] not in text and hook["secret"][6:] not in text


# --- SSRF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://203.0.113.9/hook",                  # plain http
    "https://127.0.0.1/hook", "https://10.1.2.3/hook", "https://172.16.0.1/hook", "https://192.168.1.1/hook",
    "https://169.254.169.254/computeMetadata/v1/", "https://100.64.0.1/hook", "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook", "https://[fd00::1]/hook", "https://0.0.0.0/hook",
    "https://localhost/hook",
])
def test_private_and_plain_http_urls_are_refused(client, key, monkeypatch, url):
    monkeypatch.delenv("MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS")
    resp = client.post("/v1/webhooks", json={"url": url}, headers=key)
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]["details"]["field"] == "url"


def test_patch_validates_the_url_too(client, key, monkeypatch, receiver):
    hook = create_webhook(client, key, url=receiver.url())
    monkeypatch.delenv("MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS")
    resp = client.patch(f"/v1/webhooks/{hook['id']}", json={"url": "https://10.0.0.1/x"}, headers=key)
    assert resp.status_code == 422 and resp.get_json()["error"]["details"]["field"] == "url"


def test_allow_private_lifts_the_https_and_address_rules(client, key):
    for url in ("http://127.0.0.1:9/hook", "https://[::1]/hook", "http://localhost/hook"):
        assert create_webhook(client, key, url=url)["url"] == url


def test_the_connected_address_is_checked_at_delivery(client, key, runtime, bus, receiver, monkeypatch):
    # Created while private addresses were allowed; `localhost` resolves to loopback. At delivery the
    # rule is on again: the socket's peer is refused before a byte is sent, whatever the URL said.
    hook = create_webhook(client, key, url=receiver.url(host="localhost", scheme="https"))
    plain = create_webhook(client, key, url=receiver.url(), events=["email.sent"])   # http
    emit_received(runtime)
    monkeypatch.delenv("MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS")
    with pytest.raises(TransientError):
        deliver_last(runtime, bus)
    [listed] = deliveries(client, key, hook["id"])
    assert listed["last_status_code"] is None and listed["last_error"].startswith("refused: the host's address")
    assert receiver.requests == []

    emit(runtime.store, bus, tenant_id=TENANT, event_type="email.sent", data={}, event_id="evt_http")
    message = delivery_messages(bus)[-2:]
    with pytest.raises(TransientError):
        delivery_core.handle_delivery(runtime, next(m for m in message if m["webhook_id"] == plain["id"]))
    [listed] = deliveries(client, key, plain["id"])
    assert listed["last_error"] == "refused: the URL is not https" and receiver.requests == []


# --- the real route and the real inline bus --------------------------------------------------------


def push_envelope(message: dict) -> dict:
    return {"message": {"data": base64.b64encode(json.dumps(message).encode()).decode(),
                        "attributes": {}, "messageId": "m-1", "publishTime": "2026-11-21T11:30:00Z"},
            "subscription": "projects/p/subscriptions/mailbridge-deliveries-push"}


def test_internal_deliver_route_acks_success_and_asks_for_a_retry_on_failure(client, key, runtime, bus, receiver):
    hook = create_webhook(client, key, url=receiver.url())
    event = emit_received(runtime)
    receiver.script = [500]
    envelope = push_envelope(delivery_messages(bus)[0])
    failed = client.post("/internal/deliver", json=envelope)
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "10"
    assert client.post("/internal/deliver", json=envelope).status_code == 204
    assert [verified(hook["secret"], r)["id"] for r in receiver.hits()] == [event["id"]] * 2
    assert client.post("/internal/deliver", json=envelope).status_code == 204   # settled: nothing sent
    assert len(receiver.hits()) == 2
    assert client.post("/internal/deliver", json={"message": {"data": "%%%"}}).status_code == 204
    assert len(receiver.hits()) == 2


def test_inline_bus_retries_until_the_endpoint_accepts(store, secrets_env, receiver):
    bus = InlineBus(HANDLERS, retry_base_seconds=0.05)
    runtime = Runtime(Settings(retry_base_seconds=0.05), store=store, secrets=EnvSecretStore(secrets_env), bus=bus)
    client = create_app(["manage"], runtime).test_client()
    key = make_key(client, {"Authorization": "Bearer " + secrets_env["MAILBRIDGE_ADMIN_KEY"]})
    first = create_webhook(client, key, url=receiver.url())
    second = create_webhook(client, key, url=receiver.url("/second"))
    receiver.script = [500, 500]   # whichever endpoint comes first fails twice; neither delays the other
    event = emit_received(runtime)
    try:
        assert bus.drain(timeout=30)
    finally:
        bus.close()
    records = {d["webhook_id"]: d for d in runtime.store.query(DELIVERIES)}
    assert records[first["id"]]["status"] == records[second["id"]]["status"] == "succeeded"
    assert records[first["id"]]["attempts"] + records[second["id"]]["attempts"] == 4 == len(receiver.requests)
    assert verified(first["secret"], receiver.hits()[-1]) == event
    assert verified(second["secret"], receiver.hits("/second")[-1]) == event
    assert {r["headers"]["Webhook-Id"] for r in receiver.requests} == {event["id"]}


def test_no_answer_within_10_seconds_is_a_failed_attempt(tmp_path, secrets_env, receiver):
    from mailbridge.store.sqlite import SqliteStore
    bus = InlineBus()
    runtime = Runtime(Settings(), store=SqliteStore(tmp_path / "s.db"), secrets=EnvSecretStore(secrets_env), bus=bus)
    client = create_app(["manage"], runtime).test_client()
    key = make_key(client, {"Authorization": "Bearer " + secrets_env["MAILBRIDGE_ADMIN_KEY"]})
    hook = create_webhook(client, key, url=receiver.url())
    emit_received(runtime)
    receiver.script = ["sleep"]
    with pytest.raises(TransientError):
        deliver_last(runtime, bus)
    [listed] = deliveries(client, key, hook["id"])
    assert listed["last_status_code"] is None and listed["last_error"] == "no answer within 10 s"
    assert listed["status"] == "pending" and listed["attempts"] == 1
    runtime.store.close()
