"""Access tokens of connections: one refresh at a time, rotation persisted, revoked grants (API.md section 4)."""
from __future__ import annotations

import datetime
import ipaddress
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from werkzeug.serving import make_server

from dev.google_emulator import EmulatorState, create_app as create_emulator
from dev.google_emulator.state import Grant
from mailbridge import clock
from mailbridge.core import tokens
from mailbridge.core.mailbox import provider_for
from mailbridge.errors import ConflictError, ProviderError, ProviderUnavailableError, ReauthRequiredError
from mailbridge.providers import google_auth
from mailbridge.providers.gmail import GmailProvider
from mailbridge.store.base import CONNECTIONS, LEASES
from mailbridge.config import DEFAULT_GOOGLE_SCOPES

from .test_connect import (CLIENT_ID, CLIENT_SECRET, MAILBOX, _google_server, client, connect_mailbox,  # noqa: F401
                           events, google, google_settings, grant_refresh_token, runtime, tenant_key)


@pytest.fixture
def connected(client, runtime, google) -> tuple[dict, str]:
    """(API headers, connection id) of a freshly connected mailbox."""
    headers = tenant_key(client)
    return headers, connect_mailbox(client, headers)


def stored_token(runtime, conn_id: str, field: str = "access_token") -> str:
    return runtime.cipher.decrypt(runtime.store.get(CONNECTIONS, conn_id)[field], conn_id)


def test_a_valid_token_is_used_without_asking_google(runtime, google, connected):
    _, conn_id = connected
    before = google.calls()
    assert tokens.access_token_for(runtime, conn_id) == stored_token(runtime, conn_id)
    assert tokens.token_source(runtime, conn_id)() == stored_token(runtime, conn_id)
    assert google.calls() == before


def test_refresh_route_forces_a_new_token(client, runtime, google, connected):
    headers, conn_id = connected
    old, before = stored_token(runtime, conn_id), google.calls()
    resp = client.post(f"/v1/connections/{conn_id}/refresh", headers=headers)
    assert resp.status_code == 200, resp.get_json()
    expires_at = resp.get_json()["expires_at"]
    assert 3500 < clock.parse_rfc3339(expires_at) - clock.now() <= 3600
    assert google.calls() == before + 1
    new = stored_token(runtime, conn_id)
    assert new != old and new in google.live_tokens() and old not in resp.get_data(as_text=True)
    assert runtime.store.get(LEASES, f"token-refresh:{conn_id}") is None, "the lease is released"


def test_eight_requests_at_expiry_refresh_once(runtime, google, connected):
    _, conn_id = connected
    runtime.store.update(CONNECTIONS, conn_id, {"token_expires_ts": clock.now() + 10})  # under the 60 s margin
    before = google.calls()
    start = threading.Barrier(8)
    got: list[str] = []
    failures: list[BaseException] = []

    def ask() -> None:
        start.wait()
        try:
            got.append(tokens.access_token_for(runtime, conn_id))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert google.calls() == before + 1, "Google saw exactly one refresh"
    assert len(got) == 8 and set(got) == {stored_token(runtime, conn_id)}


def test_a_rotated_refresh_token_is_persisted(client, runtime, google, connected):
    headers, conn_id = connected
    google.state.rotate_refresh_tokens = True
    old_refresh = stored_token(runtime, conn_id, "refresh_token")
    assert client.post(f"/v1/connections/{conn_id}/refresh", headers=headers).status_code == 200
    new_refresh = stored_token(runtime, conn_id, "refresh_token")
    assert new_refresh != old_refresh
    with google.state.lock:
        assert new_refresh in google.state.refresh_tokens and old_refresh not in google.state.refresh_tokens
    # Only the persisted (rotated) token works now; a second refresh proves it is the one in use.
    assert client.post(f"/v1/connections/{conn_id}/refresh", headers=headers).status_code == 200
    assert stored_token(runtime, conn_id, "refresh_token") != new_refresh


def test_a_revoked_grant_answers_reauth_required_and_emits_one_event(client, runtime, google, connected):
    headers, conn_id = connected
    google.state.revoke_account(MAILBOX)
    before = google.calls()
    for _ in range(2):
        resp = client.post(f"/v1/connections/{conn_id}/refresh", headers=headers)
        assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "reauth_required"
    assert google.calls() == before + 1, "a grant known to be revoked is not asked about again"
    view = client.get(f"/v1/connections/{conn_id}", headers=headers).get_json()
    assert view["status"] == "error" and view["error"]["code"] == "reauth_required"
    # The adapter path (Gmail answers 401 for the revoked access token) ends the same way, silently.
    with pytest.raises(ReauthRequiredError):
        provider_for(runtime, runtime.store.get(CONNECTIONS, conn_id)).profile()
    sent = events(runtime, "connection.error")
    assert len(sent) == 1 and sent[0]["data"]["id"] == conn_id and sent[0]["data"]["status"] == "error"
    assert sent[0]["data"]["error"]["code"] == "reauth_required"


def test_google_unavailable_during_refresh_answers_503(client, runtime, google, connected):
    headers, conn_id = connected
    old = stored_token(runtime, conn_id)
    google.state.add_fault("oauth2.token", 503, count=10)   # more than google-auth's own retries
    resp = client.post(f"/v1/connections/{conn_id}/refresh", headers=headers)
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "provider_unavailable"
    assert resp.headers.get("Retry-After")
    assert stored_token(runtime, conn_id) == old
    assert client.get(f"/v1/connections/{conn_id}", headers=headers).get_json()["status"] == "never_synced"
    assert runtime.store.get(LEASES, f"token-refresh:{conn_id}") is None


def test_gmail_401_refreshes_through_the_token_callable(runtime, google, connected):
    _, conn_id = connected
    google.state.expire_access_tokens(MAILBOX)     # Google forgets it early; our record still trusts it
    before = google.calls()
    adapter = provider_for(runtime, runtime.store.get(CONNECTIONS, conn_id))
    assert isinstance(adapter, GmailProvider) and adapter.connection_id == conn_id
    assert adapter.scopes == (DEFAULT_GOOGLE_SCOPES,)
    assert adapter.profile()["email"] == MAILBOX
    assert google.calls() == before + 1


def test_disconnected_and_microsoft_connections_conflict(runtime, google, connected):
    _, conn_id = connected
    record = runtime.store.update(CONNECTIONS, conn_id, {"disconnected_ts": clock.now()})
    with pytest.raises(ConflictError) as err:
        provider_for(runtime, record)
    assert err.value.code == "conflict"
    with pytest.raises(ConflictError):
        tokens.access_token_for(runtime, conn_id)
    with pytest.raises(ConflictError) as err:
        provider_for(runtime, {**record, "disconnected_ts": None, "provider": "microsoft"})
    assert "not available yet" in err.value.message


# ---- google_auth directly: CA bundle, revocation -------------------------------------------------

@pytest.fixture
def https_google(tmp_path):
    """The emulator served over https with a self-signed certificate: (base URL, state, cert path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "emulator.pem", tmp_path / "emulator.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    state = EmulatorState()
    state.add_client(CLIENT_ID, CLIENT_SECRET)
    state.add_account(MAILBOX)
    server = make_server("127.0.0.1", 0, create_emulator(state), threaded=True,
                         ssl_context=(str(cert_path), str(key_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_port}", state, str(cert_path)
    server.shutdown()
    server.server_close()
    state.close()


def test_refresh_and_revoke_trust_the_configured_ca_bundle(https_google):
    base_url, state, cert_path = https_google
    refresh_token = "1//seeded"
    with state.lock:
        state.refresh_tokens[refresh_token] = Grant(MAILBOX, CLIENT_ID, ["https://mail.google.com/"], refresh_token)

    untrusted = google_settings(base_url)
    with pytest.raises(ProviderUnavailableError):
        google_auth.refresh(untrusted, CLIENT_SECRET, refresh_token)
    assert state.snapshot()["calls"].get("oauth2.token", 0) == 0, "the TLS handshake failed before any call"

    trusted = google_settings(base_url, ca_bundle=cert_path)
    got = google_auth.refresh(trusted, CLIENT_SECRET, refresh_token)
    assert got.access_token.startswith("ya29.") and got.refresh_token is None
    assert got.access_token not in repr(got)
    google_auth.revoke(trusted, refresh_token)
    google_auth.revoke(trusted, refresh_token)   # idempotent: already revoked is revoked
    with pytest.raises(ReauthRequiredError):
        google_auth.refresh(trusted, CLIENT_SECRET, refresh_token)


def test_a_wrong_client_secret_is_a_provider_error_not_reauth(runtime, google):
    refresh_token = grant_refresh_token(google)
    with pytest.raises(ProviderError) as err:
        google_auth.refresh(runtime.settings, "not-the-secret", refresh_token)
    assert err.value.details["oauth_error"] == "invalid_client" and "not-the-secret" not in err.value.message
