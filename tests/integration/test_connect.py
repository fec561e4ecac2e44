"""Connecting a Gmail mailbox over HTTP (API.md section 4), against the Google emulator, on both stores."""
from __future__ import annotations

import base64
import hashlib
import json
import secrets as pysecrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from dev.google_emulator import EmulatorState, run_in_thread
from mailbridge import clock
from mailbridge.api.app import create_app
from mailbridge.core.events import recorded_events
from mailbridge.bus.inline import InlineBus
from mailbridge.config import DEFAULT_GOOGLE_SCOPES, Settings
from mailbridge.core.connections import connection_id_for
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore
from mailbridge.store.base import CONNECTIONS, OAUTH_STATES

from .conftest import ADMIN_KEY, ENCRYPTION_KEY

CLIENT_ID = "mailbridge-test-client"
CLIENT_SECRET = "test-client-secret-value"
MAILBOX = "ada@example.com"
OTHER_MAILBOX = "grace@example.com"
PUBLIC_BASE = "https://mailbridge.test"          # only a string: nothing ever connects to it
CALLBACK = PUBLIC_BASE + "/oauth/callback/google"
APP_REDIRECT = "https://app.example.com/connected?from=mb"


@dataclass
class Google:
    state: EmulatorState
    base_url: str

    def calls(self, method: str = "oauth2.token") -> int:
        return self.state.snapshot()["calls"].get(method, 0)

    def live_tokens(self) -> list[str]:
        """Every access and refresh token the emulator has issued and still honours."""
        with self.state.lock:
            return list(self.state.access_tokens) + list(self.state.refresh_tokens)


@pytest.fixture(scope="module")
def _google_server():
    state = EmulatorState()
    state.add_client(CLIENT_ID, CLIENT_SECRET, [CALLBACK])
    state.add_account(MAILBOX)
    state.add_account(OTHER_MAILBOX)
    with run_in_thread(state) as (base_url, _stop):
        yield Google(state, base_url)


@pytest.fixture
def google(_google_server):
    """The Google emulator (one server per module), with no grants, counts or faults left over."""
    state = _google_server.state
    state.reset()
    with state.lock:
        state.oauth_decision, state.oauth_account = "approve", None
        state.rotate_refresh_tokens, state.access_token_lifetime = False, 3600
    return _google_server


def google_settings(base_url: str, **overrides) -> Settings:
    return Settings(google_client_id=CLIENT_ID, google_auth_url=base_url + "/o/oauth2/v2/auth",
                    google_token_url=base_url + "/token", google_revoke_url=base_url + "/revoke",
                    gmail_api_endpoint=base_url, public_base_url=PUBLIC_BASE, **overrides)


@pytest.fixture
def runtime(store, google) -> Runtime:
    """A Runtime on the parametrized store whose Google addresses all point at the emulator."""
    secrets = EnvSecretStore({"MAILBRIDGE_ADMIN_KEY": ADMIN_KEY, "MAILBRIDGE_ENCRYPTION_KEY": ENCRYPTION_KEY,
                              "GOOGLE_CLIENT_SECRET": CLIENT_SECRET})
    return Runtime(google_settings(google.base_url), store=store, secrets=secrets, bus=InlineBus())


@pytest.fixture
def client(runtime):
    return create_app(["oauth", "manage"], runtime).test_client()


def tenant_key(client, tenant: str = "acme", **permissions) -> dict[str, str]:
    body = {"name": "backend", "tenant_id": tenant}
    if permissions:
        body["permissions"] = permissions
    resp = client.post("/v1/api-keys", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status_code == 201, resp.get_json()
    return {"Authorization": f"Bearer {resp.get_json()['key']}"}


def start_connect(client, headers, **body) -> dict:
    body = {"provider": "google", "user_id": "u_42", "redirect_url": APP_REDIRECT, **body}
    resp = client.post("/v1/connect", json=body, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def consent(url: str) -> str:
    """The browser at Google's consent page (the emulator approves at once): where it is sent next."""
    resp = requests.get(url, allow_redirects=False, timeout=10)
    assert resp.status_code == 302, resp.text
    return resp.headers["Location"]


def callback(client, location: str):
    """The browser arriving at our callback from `location` (Google's redirect)."""
    parts = urlsplit(location)
    return client.get(f"{parts.path}?{parts.query}")


def outcome(resp) -> dict[str, str]:
    """The query our callback redirected the browser back to the app with."""
    assert resp.status_code == 302, resp.get_data(as_text=True)
    location = resp.headers["Location"]
    assert location.startswith("https://app.example.com/connected?from=mb&"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def connect_mailbox(client, headers, **body) -> str:
    """A whole connect round trip; returns the connection id."""
    started = start_connect(client, headers, **body)
    result = outcome(callback(client, consent(started["url"])))
    assert result["status"] == "success", result
    return result["connection_id"]


def state_id(token: str) -> str:
    body = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["s"]


def events(runtime, event_type: str) -> list[dict]:
    return recorded_events(runtime.store, event_type)


def grant_refresh_token(google: Google, account: str = MAILBOX) -> str:
    """A refresh token obtained the way a customer's own consent screen would (code + PKCE)."""
    google.state.oauth_account = account
    verifier = pysecrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({"client_id": CLIENT_ID, "redirect_uri": CALLBACK, "response_type": "code",
                       "scope": DEFAULT_GOOGLE_SCOPES, "access_type": "offline",
                       "code_challenge": challenge, "code_challenge_method": "S256", "state": "x"})
    code = parse_qs(urlsplit(consent(f"{google.base_url}/o/oauth2/v2/auth?{query}")).query)["code"][0]
    resp = requests.post(google.base_url + "/token", timeout=10, data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": CALLBACK,
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    assert resp.status_code == 200, resp.text
    google.state.oauth_account = None
    return resp.json()["refresh_token"]


# ---- the round trip --------------------------------------------------------------------------

def test_connect_round_trip_redirects_success_and_stores_tokens_encrypted(client, runtime, google):
    headers = tenant_key(client)
    started = start_connect(client, headers, login_hint=MAILBOX)
    query = parse_qs(urlsplit(started["url"]).query)
    assert started["url"].startswith(google.base_url + "/o/oauth2/v2/auth?")
    assert query["access_type"] == ["offline"] and query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [CALLBACK] and query["state"] == [started["state"]]
    assert query["scope"] == [DEFAULT_GOOGLE_SCOPES]
    assert query["login_hint"] == [MAILBOX] and query["prompt"] == ["consent"]
    assert clock.parse_rfc3339(started["expires_at"]) - clock.now() > 590

    result = outcome(callback(client, consent(started["url"])))
    assert result["status"] == "success"
    conn_id = result["connection_id"]
    assert conn_id == connection_id_for("acme", "u_42", "google", MAILBOX) and conn_id.startswith("conn_")

    stored = runtime.store.get(CONNECTIONS, conn_id)
    dumped = json.dumps(stored)
    issued = google.live_tokens()
    assert len(issued) == 2, "one access and one refresh token were issued"
    for token in issued:
        assert token not in dumped, "a token is stored in plaintext"
    assert stored["access_token"].startswith("v1.") and stored["refresh_token"].startswith("v1.")
    assert runtime.cipher.decrypt(stored["refresh_token"], conn_id) in issued

    view = client.get(f"/v1/connections/{conn_id}", headers=headers).get_json()
    assert view == {"id": conn_id, "provider": "google", "email": MAILBOX, "user_id": "u_42",
                    "status": "never_synced", "error": None, "last_sync_at": None,
                    "created_at": view["created_at"], "watch": None, "backfill": None}
    created = events(runtime, "connection.created")
    assert len(created) == 1 and created[0]["data"]["id"] == conn_id
    assert runtime.store.get(OAUTH_STATES, state_id(started["state"])) is None, "the state is used up"


def test_reconnect_reuses_the_connection_clears_its_error_and_announces_nothing(client, runtime, google):
    headers = tenant_key(client)
    conn_id = connect_mailbox(client, headers)
    first = runtime.store.get(CONNECTIONS, conn_id)
    runtime.store.update(CONNECTIONS, conn_id, {"error": {"code": "reauth_required", "message": "x", "at": 1}})
    assert client.get(f"/v1/connections/{conn_id}", headers=headers).get_json()["status"] == "error"

    assert connect_mailbox(client, headers) == conn_id
    again = runtime.store.get(CONNECTIONS, conn_id)
    assert again["error"] is None and again["created_ts"] == first["created_ts"]
    assert runtime.cipher.decrypt(again["refresh_token"], conn_id) != \
        runtime.cipher.decrypt(first["refresh_token"], conn_id), "the new grant's tokens are stored"
    assert client.get(f"/v1/connections/{conn_id}", headers=headers).get_json()["status"] == "never_synced"
    assert len(events(runtime, "connection.created")) == 1
    listed = client.get("/v1/connections", headers=headers).get_json()["connections"]
    assert [c["id"] for c in listed] == [conn_id]


def test_reconnect_after_disconnect_announces_the_connection_again(client, runtime, google):
    headers = tenant_key(client)
    conn_id = connect_mailbox(client, headers)
    runtime.store.update(CONNECTIONS, conn_id, {"disconnected_ts": clock.now()})
    assert client.get(f"/v1/connections/{conn_id}", headers=headers).get_json()["status"] == "disconnected"
    assert connect_mailbox(client, headers) == conn_id
    assert client.get(f"/v1/connections/{conn_id}", headers=headers).get_json()["status"] == "never_synced"
    assert len(events(runtime, "connection.created")) == 2


# ---- states ------------------------------------------------------------------------------------

def test_state_used_twice_redirects_invalid_state(client, runtime, google):
    headers = tenant_key(client)
    location = consent(start_connect(client, headers)["url"])
    assert outcome(callback(client, location))["status"] == "success"
    second = outcome(callback(client, location))
    assert second == {"from": "mb", "status": "error", "error": "invalid_state"}


def test_expired_state_redirects_expired_state(client, runtime, google):
    headers = tenant_key(client)
    started = start_connect(client, headers)
    runtime.store.update(OAUTH_STATES, state_id(started["state"]), {"expires_ts": clock.now() - 1})
    result = outcome(callback(client, consent(started["url"])))
    assert result == {"from": "mb", "status": "error", "error": "expired_state"}
    assert runtime.store.query(CONNECTIONS) == []


@pytest.mark.parametrize("mangle", [
    lambda s: s[:-2] + ("AA" if not s.endswith("AA") else "BB"),     # signature changed
    lambda s: "e30." + s.split(".")[1],                                # payload swapped
    lambda s: "not-a-state",
    lambda s: "",
])
def test_forged_or_unknown_state_answers_400_without_redirect(client, runtime, google, mangle):
    headers = tenant_key(client)
    started = start_connect(client, headers)
    location = consent(started["url"])
    code = parse_qs(urlsplit(location).query)["code"][0]
    resp = client.get("/oauth/callback/google?" + urlencode({"code": code, "state": mangle(started["state"])}))
    assert resp.status_code == 400 and "Location" not in resp.headers
    body = resp.get_json()
    assert body["error"]["code"] == "invalid_request" and body["error"]["details"]["field"] == "state"
    assert runtime.store.get(OAUTH_STATES, state_id(started["state"])) is not None, "the real state is unspent"


def test_denied_consent_redirects_access_denied(client, runtime, google):
    headers = tenant_key(client)
    google.state.oauth_decision = "deny"
    result = outcome(callback(client, consent(start_connect(client, headers)["url"])))
    assert result == {"from": "mb", "status": "error", "error": "access_denied"}
    assert runtime.store.query(CONNECTIONS) == []


def test_a_withheld_scope_redirects_access_denied(client, runtime, google):
    headers = tenant_key(client)
    location = consent(start_connect(client, headers)["url"])
    # The grant covers what was asked; the deployment now needs one scope more than the user gave.
    runtime.settings = google_settings(google.base_url, google_scopes=(
        DEFAULT_GOOGLE_SCOPES, "https://mail.google.com/"))
    result = outcome(callback(client, location))
    assert result == {"from": "mb", "status": "error", "error": "access_denied"}
    assert runtime.store.query(CONNECTIONS) == []


def test_pkce_mismatch_redirects_exchange_failed(client, runtime, google):
    headers = tenant_key(client)
    started = start_connect(client, headers)
    sid = state_id(started["state"])
    # Another verifier than the one whose challenge went to Google: the exchange must be refused.
    runtime.store.update(OAUTH_STATES, sid, {"verifier": runtime.cipher.encrypt("w" * 64, sid)})
    result = outcome(callback(client, consent(started["url"])))
    assert result == {"from": "mb", "status": "error", "error": "exchange_failed"}
    assert runtime.store.query(CONNECTIONS) == []


def test_token_endpoint_failure_redirects_exchange_failed(client, runtime, google):
    headers = tenant_key(client)
    location = consent(start_connect(client, headers)["url"])
    google.state.add_fault("oauth2.token", 503)
    result = outcome(callback(client, location))
    assert result == {"from": "mb", "status": "error", "error": "exchange_failed"}
    assert google.calls("oauth2.token") == 1


def test_google_state_is_refused_at_the_microsoft_callback(client, runtime, google):
    headers = tenant_key(client)
    location = consent(start_connect(client, headers)["url"])
    query = urlsplit(location).query
    resp = client.get(f"/oauth/callback/microsoft?{query}")
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert resp.get_json()["error"]["details"]["field"] == "state"
    assert google.calls("oauth2.token") == 0, "no code was exchanged"
    assert outcome(callback(client, location))["status"] == "success", "the state still works where it belongs"


# ---- the connect request -----------------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    ({"provider": "microsoft"}, "provider"),
    ({"provider": "yahoo"}, "provider"),
    ({"redirect_url": "http://app.example.com/cb"}, "redirect_url"),
    ({"redirect_url": "/relative"}, "redirect_url"),
    ({"redirect_url": "https://app.example.com/cb#frag"}, "redirect_url"),
    ({"redirect_url": "javascript:alert(1)"}, "redirect_url"),
    ({"user_id": ""}, "user_id"),
    ({"backfill": "7d"}, "backfill"),
    ({"shared_mailbox": "support@example.com"}, "shared_mailbox"),
    ({"scopes": ["x"]}, "scopes"),
])
def test_invalid_connect_requests_answer_422_naming_the_field(client, body, field):
    headers = tenant_key(client)
    full = {"provider": "google", "user_id": "u_42", "redirect_url": APP_REDIRECT, **body}
    resp = client.post("/v1/connect", json=full, headers=headers)
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]["details"]["field"] == field


def test_connect_accepts_loopback_http_and_needs_a_permitted_key(client, runtime):
    headers = tenant_key(client)
    for url in ("http://localhost:3000/cb", "http://127.0.0.1/cb", "http://[::1]:8000/cb"):
        assert start_connect(client, headers, redirect_url=url)["state"]
    assert client.post("/v1/connect", json={}).status_code == 401
    reader = tenant_key(client, operations=["view_email"])
    resp = client.post("/v1/connect", json={"provider": "google", "user_id": "u", "redirect_url": APP_REDIRECT},
                       headers=reader)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    admin = client.post("/v1/connect", json={"provider": "google", "user_id": "u", "redirect_url": APP_REDIRECT},
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert admin.status_code == 403


# ---- import, list, tenancy ---------------------------------------------------------------------

def test_import_with_a_working_refresh_token_creates_the_connection(client, runtime, google):
    headers = tenant_key(client)
    refresh_token = grant_refresh_token(google)
    resp = client.post("/v1/connections", headers=headers, json={
        "provider": "google", "user_id": "u_7", "email": MAILBOX.upper(), "refresh_token": refresh_token,
        "start_watching": False})
    assert resp.status_code == 201, resp.get_json()
    conn = resp.get_json()
    assert conn["id"] == connection_id_for("acme", "u_7", "google", MAILBOX)
    assert conn["email"] == MAILBOX and conn["status"] == "never_synced" and conn["user_id"] == "u_7"
    stored = runtime.store.get(CONNECTIONS, conn["id"])
    assert refresh_token not in json.dumps(stored)
    assert runtime.cipher.decrypt(stored["refresh_token"], conn["id"]) == refresh_token
    assert [e["data"]["id"] for e in events(runtime, "connection.created")] == [conn["id"]]


def test_import_refuses_a_broken_token_and_another_mailbox(client, runtime, google):
    headers = tenant_key(client)
    body = {"provider": "google", "user_id": "u_7", "email": MAILBOX}
    resp = client.post("/v1/connections", headers=headers, json={**body, "refresh_token": "1//not-a-token"})
    assert resp.status_code == 422 and resp.get_json()["error"]["details"]["field"] == "refresh_token"
    assert "1//not-a-token" not in resp.get_data(as_text=True)

    other = grant_refresh_token(google, OTHER_MAILBOX)
    resp = client.post("/v1/connections", headers=headers, json={**body, "refresh_token": other})
    assert resp.status_code == 422 and resp.get_json()["error"]["details"]["field"] == "email"
    resp = client.post("/v1/connections", headers=headers, json={**body, "provider": "microsoft",
                                                                 "refresh_token": other})
    assert resp.status_code == 422 and resp.get_json()["error"]["details"]["field"] == "provider"
    assert runtime.store.query(CONNECTIONS) == []


def test_connections_are_listed_filtered_and_kept_to_their_tenant(client, runtime, google):
    acme = tenant_key(client, "acme")
    first = connect_mailbox(client, acme, user_id="u_1")
    google.state.oauth_account = OTHER_MAILBOX
    second = connect_mailbox(client, acme, user_id="u_2")
    runtime.store.update(CONNECTIONS, second, {"last_sync_ts": clock.now() - 60})

    def ids(query: str, headers=acme) -> list[str]:
        resp = client.get(f"/v1/connections{query}", headers=headers)
        assert resp.status_code == 200, resp.get_json()
        return [c["id"] for c in resp.get_json()["connections"]]

    assert ids("") == [first, second]
    assert ids("?user_id=u_2") == [second]
    assert ids("?provider=google&status=healthy") == [second]
    assert ids("?status=never_synced") == [first]
    assert ids("?provider=microsoft") == []
    bad = client.get("/v1/connections?status=sleepy", headers=acme)
    assert bad.status_code == 422 and bad.get_json()["error"]["details"]["field"] == "status"

    globex = tenant_key(client, "globex")
    assert ids("", globex) == []
    for path in (f"/v1/connections/{first}", "/v1/connections/conn_nope"):
        resp = client.get(path, headers=globex)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    assert client.post(f"/v1/connections/{first}/refresh", headers=globex).status_code == 404

    narrow = tenant_key(client, "acme", connection_ids=[second])
    assert ids("", narrow) == [second]
    assert client.get(f"/v1/connections/{first}", headers=narrow).status_code == 404
    assert client.get(f"/v1/connections/{second}", headers=narrow).status_code == 200
