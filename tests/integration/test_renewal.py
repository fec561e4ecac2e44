"""Watches, renewal, Sync now, connection health and disconnect (API.md sections 4 and 8), against the
Gmail emulator over HTTP, on both stores."""
from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from mailbridge import clock
from mailbridge.api.app import create_app
from mailbridge.api.functions import FUNCTIONS
from mailbridge.bus.base import RENEWALS_TOPIC
from mailbridge.core import keys, renewal
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore
from mailbridge.store.base import CONNECTIONS, EVENTS, MESSAGES, SYNC_CURSORS
from mailbridge.store.sqlite import SqliteStore
from tests.integration.gmail_stack import *  # noqa: F401,F403  (the fixtures)
from tests.integration.gmail_stack import (ACCOUNT, ADMIN_KEY, CLIENT_ID, CLIENT_SECRET, ENCRYPTION_KEY,
                                           PUBSUB_TOPIC, REDIRECT_URL, TENANT, USER_ID, bearer)

REPO = Path(__file__).resolve().parents[2]
DAY = 24 * 3600
INBOUND = (b"From: Ada <ada@example.org>\r\nTo: me@example.com\r\nSubject: hello\r\n"
           b"Message-ID: <hello-1@example.org>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\nHi there\r\n")


def connect(api, headers, gmail, user_id: str = USER_ID) -> str:
    """The real connect flow (POST /v1/connect → consent → callback); the connection id."""
    resp = api.post("/v1/connect", headers=headers, json={
        "provider": "google", "user_id": user_id, "redirect_url": REDIRECT_URL, "backfill": "none"})
    assert resp.status_code == 201, resp.get_json()
    status, location = gmail.get(resp.get_json()["url"])
    assert status == 302, location
    callback = urlsplit(location["Location"])
    done = api.get(f"{callback.path}?{callback.query}")
    assert done.status_code == 302, done.get_data(as_text=True)
    query = parse_qs(urlsplit(done.headers["Location"]).query)
    assert query.get("status") == ["success"], done.headers["Location"]
    return query["connection_id"][0]


def events_of(store, event_type: str, connection_id: str) -> list[dict]:
    return [e for e in store.query(EVENTS, [("event_type", "==", event_type)])
            if e.get("connection_id") == connection_id]


def move_back(store, connection_id: str, **seconds: float) -> None:
    """Move stored times into the past: `last_sync_ts=26 * 3600`, `watch=2 * DAY` (watch.renewed_ts)."""
    record = store.get(CONNECTIONS, connection_id)
    changes = {}
    for field, ago in seconds.items():
        if field == "watch":
            changes["watch"] = {**record["watch"], "renewed_ts": clock.now() - ago}
        else:
            changes[field] = clock.now() - ago
    store.update(CONNECTIONS, connection_id, changes)


def seed_connections(store, count: int, *, watch_age: float | None, last_sync_age: float) -> list[str]:
    """Connection records written straight to the store (no tokens: any mailbox call on them fails)."""
    now, ids = clock.now(), []
    for n in range(count):
        conn_id = f"conn_seed{n:05d}"
        watch = None if watch_age is None else {"expires_ts": now + 6 * DAY, "renewed_ts": now - watch_age,
                                                "history_id": "1"}
        store.put(CONNECTIONS, conn_id, {
            "tenant_id": "seeded", "user_id": f"u{n}", "provider": "google", "email": f"s{n}@example.com",
            "email_key": f"s{n}@example.com", "scopes": [], "access_token": None, "refresh_token": None,
            "token_version": 1, "created_ts": now - 2 * DAY, "updated_ts": now, "last_sync_ts": now - last_sync_age,
            "watch": watch, "backfill": None, "error": None, "disconnected_ts": None, "start_watching": True})
        ids.append(conn_id)
    return ids


# ---- watch on connect ------------------------------------------------------------------------

def test_connect_watches_the_configured_topic(api, auth_headers, gmail, gmail_runtime, connected_mailbox):
    assert gmail.calls()["gmail.users.watch"] == 1
    assert gmail.mailbox.watch["topicName"] == PUBSUB_TOPIC
    view = api.get(f"/v1/connections/{connected_mailbox.id}", headers=auth_headers).get_json()
    expires = clock.parse_rfc3339(view["watch"]["expires_at"])
    assert 6.9 * DAY < expires - clock.now() <= 7 * DAY
    stored = gmail_runtime.store.get(CONNECTIONS, connected_mailbox.id)["watch"]
    assert stored["history_id"] == str(gmail.mailbox.history_id) and stored["error"] is None
    # The first cursor starts at the watch: mail from then on is new.
    assert gmail_runtime.store.get(SYNC_CURSORS, connected_mailbox.id)["history_id"] == stored["history_id"]


def test_watch_failure_does_not_fail_connect_and_renew_retries_it(api, auth_headers, gmail, gmail_runtime):
    gmail.add_fault("gmail.users.watch", 403)
    conn_id = connect(api, auth_headers, gmail)
    view = api.get(f"/v1/connections/{conn_id}", headers=auth_headers).get_json()
    assert view["watch"] == {"expires_at": None} and view["status"] == "never_synced"
    assert gmail_runtime.store.get(CONNECTIONS, conn_id)["watch"]["error"]["code"] == "forbidden"

    assert renewal.renew_due(gmail_runtime) == {"renewed": 1, "failed": 0, "resynced": 0, "queued": 0}
    view = api.get(f"/v1/connections/{conn_id}", headers=auth_headers).get_json()
    assert view["watch"]["expires_at"] is not None
    assert gmail.mailbox.watch["topicName"] == PUBSUB_TOPIC


# ---- status ----------------------------------------------------------------------------------

def test_status_never_synced_healthy_stale_then_error_on_revoked_grant(api, auth_headers, gmail, gmail_runtime,
                                                                        connected_mailbox):
    url = f"/v1/connections/{connected_mailbox.id}"
    assert api.get(url, headers=auth_headers).get_json()["status"] == "never_synced"

    gmail.deliver(INBOUND)
    synced = api.post(url + "/sync", headers=auth_headers)
    assert synced.status_code == 200, synced.get_json()
    body = synced.get_json()
    assert body["new_messages"] == 1
    assert abs(clock.parse_rfc3339(body["finished_at"]) - clock.now()) < 60
    view = api.get(url, headers=auth_headers).get_json()
    assert view["status"] == "healthy" and view["last_sync_at"] is not None and view["error"] is None
    assert api.post(url + "/sync", headers=auth_headers).get_json()["new_messages"] == 0

    move_back(gmail_runtime.store, connected_mailbox.id, last_sync_ts=25 * 3600 + 60)
    assert api.get(url, headers=auth_headers).get_json()["status"] == "stale"
    listed = api.get("/v1/connections?status=stale", headers=auth_headers).get_json()["connections"]
    assert [c["id"] for c in listed] == [connected_mailbox.id]

    gmail.revoke()
    refused = api.post(url + "/sync", headers=auth_headers)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "reauth_required"
    view = api.get(url, headers=auth_headers).get_json()
    assert view["status"] == "error" and view["error"]["code"] == "reauth_required"


def test_sync_of_another_tenants_connection_is_not_found(api, gmail_runtime, connected_mailbox):
    other = keys.create_api_key(gmail_runtime.store, tenant_id="other-tenant", name="t")["key"]
    resp = api.post(f"/v1/connections/{connected_mailbox.id}/sync", headers=bearer(other))
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    assert api.delete(f"/v1/connections/{connected_mailbox.id}", headers=bearer(other)).status_code == 404
    assert gmail_runtime.store.get(CONNECTIONS, connected_mailbox.id)["disconnected_ts"] is None


# ---- disconnect ------------------------------------------------------------------------------

def test_delete_stops_revokes_forgets_tokens_keeps_mail_and_emits_once(api, auth_headers, gmail, gmail_runtime,
                                                                        connected_mailbox):
    store, conn_id = gmail_runtime.store, connected_mailbox.id
    delivered = gmail.deliver(INBOUND)
    assert api.post(f"/v1/connections/{conn_id}/sync", headers=auth_headers).get_json()["new_messages"] == 1
    assert store.get(MESSAGES, f"{conn_id}:{delivered.id}") is not None

    resp = api.delete(f"/v1/connections/{conn_id}", headers=auth_headers)
    assert resp.status_code == 204 and resp.get_data() == b""
    calls = gmail.calls()
    assert calls["gmail.users.stop"] == 1 and calls["oauth2.revoke"] == 1
    assert gmail.mailbox.watch is None
    with gmail.state.lock:   # the grant is dead at Google: its refresh token revoked, no access token live
        grants = list(gmail.state.refresh_tokens.values())
        assert grants and all(g.revoked for g in grants) and not gmail.state.access_tokens
    record = store.get(CONNECTIONS, conn_id)
    assert record["access_token"] is None and record["refresh_token"] is None and record["disconnected_ts"]
    assert store.get(MESSAGES, f"{conn_id}:{delivered.id}") is not None
    view = api.get(f"/v1/connections/{conn_id}", headers=auth_headers).get_json()
    assert view["status"] == "disconnected"
    deleted = events_of(store, "connection.deleted", conn_id)
    assert len(deleted) == 1 and deleted[0]["event"]["data"]["status"] == "disconnected"

    again = api.delete(f"/v1/connections/{conn_id}", headers=auth_headers)
    assert again.status_code == 204
    assert len(events_of(store, "connection.deleted", conn_id)) == 1
    assert gmail.calls()["gmail.users.stop"] == 1 and gmail.calls()["oauth2.revoke"] == 1

    sent = api.post("/v1/send", headers=auth_headers, json={"connection_id": conn_id, "from": ACCOUNT,
                                                             "to": "a@example.org", "subject": "s", "text": "t"})
    assert sent.status_code == 409 and sent.get_json()["error"]["code"] == "conflict"
    read = api.get(f"/v1/messages/google:{conn_id}:{delivered.id}", headers=auth_headers)
    assert read.status_code == 409 and read.get_json()["error"]["code"] == "conflict"
    synced = api.post(f"/v1/connections/{conn_id}/sync", headers=auth_headers)
    assert synced.status_code == 409 and synced.get_json()["error"]["code"] == "conflict"


def test_reconnect_after_delete_watches_again_and_keeps_the_id(api, auth_headers, gmail, gmail_runtime,
                                                               connected_mailbox):
    assert api.delete(f"/v1/connections/{connected_mailbox.id}", headers=auth_headers).status_code == 204
    assert connect(api, auth_headers, gmail) == connected_mailbox.id
    view = api.get(f"/v1/connections/{connected_mailbox.id}", headers=auth_headers).get_json()
    assert view["status"] != "disconnected" and view["watch"]["expires_at"] is not None
    assert gmail.calls()["gmail.users.watch"] == 2 and gmail.mailbox.watch is not None
    created = events_of(gmail_runtime.store, "connection.created", connected_mailbox.id)
    assert len(created) == 2   # the first connect, and the connect after `connection.deleted`


def test_delete_leaves_grant_and_watch_of_a_mailbox_another_user_still_connects(api, auth_headers, gmail,
                                                                                gmail_runtime, connected_mailbox):
    second = connect(api, auth_headers, gmail, user_id="u_other")
    assert second != connected_mailbox.id
    assert api.delete(f"/v1/connections/{connected_mailbox.id}", headers=auth_headers).status_code == 204
    assert gmail.calls()["gmail.users.stop"] == 0 and gmail.calls()["oauth2.revoke"] == 0
    assert gmail.mailbox.watch is not None
    assert gmail_runtime.store.get(CONNECTIONS, connected_mailbox.id)["refresh_token"] is None
    assert api.post(f"/v1/connections/{second}/sync", headers=auth_headers).status_code == 200


# ---- /internal/renew -------------------------------------------------------------------------

def test_renew_renews_only_watches_older_than_a_day_and_resyncs_quiet_connections(
        api, auth_headers, gmail, gmail_runtime, connected_mailbox):
    store, conn_id = gmail_runtime.store, connected_mailbox.id
    seed_connections(store, 3, watch_age=3600, last_sync_age=600)   # fresh: nothing to do
    watches = gmail.calls()["gmail.users.watch"]

    resp = api.post("/internal/renew")
    assert resp.status_code == 200
    assert resp.get_json() == {"renewed": 0, "failed": 0, "resynced": 0, "queued": 0}
    assert gmail.calls()["gmail.users.watch"] == watches

    move_back(store, conn_id, watch=DAY + 60)
    before = store.get(CONNECTIONS, conn_id)["watch"]
    assert api.post("/internal/renew", json={}).get_json() == {"renewed": 1, "failed": 0, "resynced": 0,
                                                                 "queued": 0}
    after = store.get(CONNECTIONS, conn_id)["watch"]
    assert gmail.calls()["gmail.users.watch"] == watches + 1
    assert after["renewed_ts"] > before["renewed_ts"] and after["expires_ts"] >= before["expires_ts"]
    # Run again at once (a retried Scheduler call): renewed within the last hour → skipped.
    assert api.post("/internal/renew").get_json()["renewed"] == 0

    gmail.deliver(INBOUND)
    move_back(store, conn_id, last_sync_ts=renewal.QUIET_AFTER + 60, created_ts=2 * DAY)
    assert api.post("/internal/renew").get_json() == {"renewed": 0, "failed": 0, "resynced": 1, "queued": 0}
    record = store.get(CONNECTIONS, conn_id)
    assert clock.now() - record["last_sync_ts"] < 60
    assert len(events_of(store, "email.received", conn_id)) == 1
    assert gmail.calls()["gmail.users.watch"] == watches + 1


def test_renew_skips_disconnected_and_counts_failures_on_the_connection(api, auth_headers, gmail, gmail_runtime,
                                                                        connected_mailbox):
    store = gmail_runtime.store
    broken = seed_connections(store, 2, watch_age=2 * DAY, last_sync_age=600)
    store.update(CONNECTIONS, broken[1], {"disconnected_ts": clock.now()})
    counts = api.post("/internal/renew").get_json()
    assert counts == {"renewed": 0, "failed": 1, "resynced": 0, "queued": 0}
    assert store.get(CONNECTIONS, broken[0])["watch"]["error"]["code"] == "conflict"
    assert "error" not in store.get(CONNECTIONS, broken[1])["watch"]   # disconnected: not even tried


def test_a_large_tick_fans_out_pages_on_the_bus_and_a_page_is_handled(api, auth_headers, gmail, gmail_runtime,
                                                                       connected_mailbox):
    store, bus = gmail_runtime.store, gmail_runtime.bus
    seeded = seed_connections(store, 450, watch_age=2 * DAY, last_sync_age=600)
    move_back(store, connected_mailbox.id, watch=2 * DAY)
    watches = gmail.calls()["gmail.users.watch"]

    counts = renewal.renew_due(gmail_runtime)
    pages = [m for topic, m in bus.published if topic == RENEWALS_TOPIC]
    assert len(pages) == math.ceil(451 / renewal.PAGE_SIZE) == 3
    assert all(len(p["connection_ids"]) <= renewal.PAGE_SIZE for p in pages)
    queued = [i for p in pages for i in p["connection_ids"]]
    assert sorted(queued) == sorted(seeded + [connected_mailbox.id])
    assert counts == {"renewed": 0, "failed": 0, "resynced": 0, "queued": 451}
    assert gmail.calls()["gmail.users.watch"] == watches    # the tick itself renewed nothing

    page = next(p for p in pages if connected_mailbox.id in p["connection_ids"])
    envelope = {"message": {"data": base64.b64encode(json.dumps(page).encode()).decode(),
                            "attributes": {}, "messageId": "1"}, "subscription": "renewals-push"}
    resp = api.post("/internal/renew", json=envelope)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["renewed"] == 1 and body["failed"] == len(page["connection_ids"]) - 1
    assert gmail.calls()["gmail.users.watch"] == watches + 1
    # Redelivered: the renewed connection is skipped; the broken ones are tried (and fail) again.
    renewal.handle_renewal(gmail_runtime, page)
    assert gmail.calls()["gmail.users.watch"] == watches + 1


def test_a_page_that_fails_transiently_answers_503_for_a_redelivery(api, gmail, gmail_runtime, connected_mailbox):
    move_back(gmail_runtime.store, connected_mailbox.id, watch=2 * DAY)
    # Gmail asks for a pause longer than the adapter waits for itself: the page is answered 503 at once.
    gmail.add_fault("gmail.users.watch", 503, count=5, retry_after=120)
    page = {"connection_ids": [connected_mailbox.id]}
    envelope = {"message": {"data": base64.b64encode(json.dumps(page).encode()).decode(), "messageId": "7"}}
    resp = api.post("/internal/renew", json=envelope)
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "provider_unavailable"
    with gmail.state.lock:
        gmail.state.faults.clear()
    assert api.post("/internal/renew", json=envelope).get_json() == {"renewed": 1, "failed": 0, "resynced": 0}


def test_renew_without_a_push_token_is_refused_and_does_nothing(gmail, gmail_runtime, connected_mailbox):
    move_back(gmail_runtime.store, connected_mailbox.id, watch=2 * DAY)
    guarded = Runtime(dataclasses.replace(gmail_runtime.settings, push_auth="oidc"), store=gmail_runtime.store,
                      secrets=gmail_runtime.secrets, bus=gmail_runtime.bus)
    client = create_app(["renew"], guarded).test_client()
    watches = gmail.calls()["gmail.users.watch"]
    resp = client.post("/internal/renew", json={})
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthenticated"
    assert gmail.calls()["gmail.users.watch"] == watches


def test_a_malformed_renewal_push_is_acknowledged(api, gmail_runtime):
    resp = api.post("/internal/renew", json={"message": {"data": "%%%", "messageId": "1"}})
    assert resp.status_code == 200 and resp.get_json() == {"renewed": 0, "failed": 0, "resynced": 0}


# ---- mailbridge renew -------------------------------------------------------------------------

def test_cli_renew_prints_the_counts(gmail, gmail_settings, tmp_path):
    db = tmp_path / "cli.db"
    secrets = EnvSecretStore({"MAILBRIDGE_ADMIN_KEY": ADMIN_KEY, "MAILBRIDGE_ENCRYPTION_KEY": ENCRYPTION_KEY,
                              "GOOGLE_CLIENT_SECRET": CLIENT_SECRET})
    local = Runtime(gmail_settings, store=SqliteStore(db), secrets=secrets)
    app = create_app(list(FUNCTIONS), local).test_client()
    key = keys.create_api_key(local.store, tenant_id=TENANT, name="cli")["key"]
    conn_id = connect(app, bearer(key), gmail)
    move_back(local.store, conn_id, watch=2 * DAY)
    seed_connections(local.store, 1, watch_age=2 * DAY, last_sync_age=600)
    watches = gmail.calls()["gmail.users.watch"]

    env = {**os.environ, "MAILBRIDGE_STORE": f"sqlite:///{db}", "MAILBRIDGE_BUS": "inline",
           "MAILBRIDGE_SECRETS": "env", "MAILBRIDGE_ENCRYPTION_KEY": ENCRYPTION_KEY,
           "GOOGLE_CLIENT_ID": CLIENT_ID, "GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
           "GOOGLE_TOKEN_URL": gmail_settings.google_token_url, "GMAIL_API_ENDPOINT": gmail.base_url,
           "GMAIL_PUBSUB_TOPIC": PUBSUB_TOPIC}
    done = subprocess.run([sys.executable, "-m", "mailbridge.cli", "renew"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"renewed": 1, "failed": 1, "resynced": 0, "queued": 0}
    assert gmail.calls()["gmail.users.watch"] == watches + 1
    assert clock.now() - local.store.get(CONNECTIONS, conn_id)["watch"]["renewed_ts"] < 120
    local.store.close()
