"""Push authentication (API.md section 8): Google OIDC tokens checked against a local certificate endpoint."""
from __future__ import annotations

import base64
import datetime
import json
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from flask import Response, request
from google.auth import crypt, jwt

from mailbridge.api.app import create_app
from mailbridge.api.context import EXTENSION
from mailbridge.api.pubsub_push import decode_push, delivery_attempt
from mailbridge.api.push_auth import CachingRequest, requires_push_auth
from mailbridge.config import Settings
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore
from mailbridge.store.sqlite import SqliteStore
from tests.servers import serve as _serve

AUDIENCE = "https://mailbridge.example.test/push/gmail"
PUSH_ACCOUNT = "push@mailbridge-test.iam.gserviceaccount.com"
KID = "test-key-1"


def _key_and_cert(common_name: str) -> tuple[bytes, str]:
    """An RSA key (PEM) and a self-signed certificate for it (PEM), as Google's v1 certs list them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, cert.public_bytes(serialization.Encoding.PEM).decode()


class CertsEndpoint:
    """A local stand-in for Google's v1 certs URL: `{kid: PEM certificate}` with a Cache-Control max-age."""

    def __init__(self, certs: dict[str, str], cache_control: str = "public, max-age=19800"):
        self.certs = certs
        self.cache_control = cache_control
        self.fetches = 0

    def __call__(self, environ, start_response):
        self.fetches += 1
        body = json.dumps(self.certs).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Cache-Control", self.cache_control)])
        return [body]


@pytest.fixture(scope="module")
def signing_key() -> tuple[crypt.RSASigner, str]:
    pem, cert = _key_and_cert("google-test-signer")
    return crypt.RSASigner.from_string(pem, key_id=KID), cert


@pytest.fixture
def certs(signing_key):
    endpoint = CertsEndpoint({KID: signing_key[1]})
    with _serve(endpoint) as base:
        endpoint.url = base + "/oauth2/v1/certs"
        yield endpoint


@pytest.fixture
def push_app(certs, tmp_path):
    """An app whose one extra route is guarded like /push/gmail; `calls` records what the view saw."""
    settings = Settings(push_auth="oidc", push_audience=AUDIENCE, push_service_account=PUSH_ACCOUNT,
                        google_oidc_certs_url=certs.url)
    store = SqliteStore(tmp_path / "store.db")
    app = create_app(["gmail_push"], Runtime(settings, store=store, secrets=EnvSecretStore({})))
    calls: list[dict] = []

    @requires_push_auth
    def guarded_view():
        message, _, message_id = decode_push(request)
        calls.append({"message": message, "id": message_id})
        return Response(status=204)

    app.add_url_rule("/test/guarded", "guarded", guarded_view, methods=["POST"])
    app.calls = calls
    yield app
    store.close()


def _claims(**overrides) -> dict:
    now = int(time.time())
    claims = {"iss": "https://accounts.google.com", "aud": AUDIENCE, "azp": "1234567890",
              "email": PUSH_ACCOUNT, "email_verified": True, "sub": "1234567890",
              "iat": now, "exp": now + 3600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _token(signer, **overrides) -> str:
    return jwt.encode(signer, _claims(**overrides)).decode()


def _envelope(data: dict) -> dict:
    return {"message": {"data": base64.b64encode(json.dumps(data).encode()).decode(), "attributes": {},
                        "messageId": "2070443601311540", "publishTime": "2026-11-21T11:30:00.123Z"},
            "subscription": "projects/mailbridge-test/subscriptions/gmail-notifications-push"}


def _push(app, token: str | None, data: dict | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return app.test_client().post("/test/guarded", json=_envelope(data or {"historyId": 7}), headers=headers)


def test_push_with_valid_token_reaches_the_view(push_app, signing_key):
    resp = _push(push_app, _token(signing_key[0]))
    assert resp.status_code == 204, resp.get_data(as_text=True)
    assert push_app.calls == [{"message": {"historyId": 7}, "id": "2070443601311540"}]


def test_push_with_bare_issuer_is_accepted(push_app, signing_key):
    assert _push(push_app, _token(signing_key[0], iss="accounts.google.com")).status_code == 204


@pytest.mark.parametrize("overrides, reason", [
    ({"aud": "https://elsewhere.example.test/push/gmail"}, "audience"),
    ({"email": "someone-else@mailbridge-test.iam.gserviceaccount.com"}, "account"),
    ({"email_verified": False}, "not verified"),
    ({"email_verified": None}, "not verified"),
])
def test_push_with_valid_token_for_someone_else_is_forbidden(push_app, signing_key, overrides, reason):
    resp = _push(push_app, _token(signing_key[0], **overrides))
    assert resp.status_code == 403
    error = resp.get_json()["error"]
    assert error["code"] == "forbidden" and reason in error["message"]
    assert push_app.calls == []


def test_push_with_unusable_token_is_unauthenticated(push_app, signing_key):
    other_pem, _ = _key_and_cert("not-google")
    stranger = crypt.RSASigner.from_string(other_pem, key_id=KID)   # same kid, wrong key
    unknown_kid = crypt.RSASigner.from_string(other_pem, key_id="unknown-kid")
    past = int(time.time()) - 7200
    good = _token(signing_key[0])
    tokens = {
        "none": None,
        "empty": "",
        "garbage": "not-a-jwt",
        "expired": _token(signing_key[0], iat=past, exp=past + 3600),
        "bad signature": _token(stranger),
        "unknown key": _token(unknown_kid),
        "tampered": good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB"),
        "other issuer": _token(signing_key[0], iss="https://issuer.example.test"),
    }
    for name, token in tokens.items():
        resp = _push(push_app, token)
        assert resp.status_code == 401, name
        body = resp.get_json()["error"]
        assert body["code"] == "unauthenticated", name
        if token:
            assert token not in json.dumps(body) and token.split(".")[0] not in json.dumps(body), name
    basic = push_app.test_client().post("/test/guarded", json=_envelope({}),
                                        headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 401
    assert push_app.calls == []


def test_push_certificates_are_fetched_once_while_fresh(push_app, signing_key, certs):
    for _ in range(3):
        assert _push(push_app, _token(signing_key[0])).status_code == 204
    assert _push(push_app, "garbage").status_code == 401
    assert certs.fetches == 1
    assert len(push_app.calls) == 3


def test_push_unreachable_certificates_answer_503(push_app, signing_key):
    with _serve(lambda environ, start: (start("500 Internal Server Error", []), [b"down"])[1]) as base:
        runtime = push_app.extensions[EXTENSION]   # settings are frozen: swap in a new runtime
        broken = Settings(push_auth="oidc", push_audience=AUDIENCE, push_service_account=PUSH_ACCOUNT,
                          google_oidc_certs_url=base + "/certs")
        push_app.extensions[EXTENSION] = Runtime(broken, store=runtime.store, secrets=runtime.secrets)
        resp = _push(push_app, _token(signing_key[0]))
    assert resp.status_code == 503
    assert push_app.calls == []


def test_push_auth_off_skips_the_check(tmp_path):
    store = SqliteStore(tmp_path / "store.db")
    app = create_app(["gmail_push"], Runtime(Settings(push_auth="off"), store=store, secrets=EnvSecretStore({})))
    seen = []
    app.add_url_rule("/test/open", "open", requires_push_auth(lambda: (seen.append(1), Response(status=204))[1]),
                     methods=["POST"])
    assert app.test_client().post("/test/open", json=_envelope({})).status_code == 204
    assert seen == [1]
    store.close()


def test_push_without_service_account_configured_is_refused(tmp_path, signing_key, certs):
    store = SqliteStore(tmp_path / "store.db")
    settings = Settings(push_auth="oidc", push_audience=AUDIENCE, push_service_account="",
                        google_oidc_certs_url=certs.url)
    app = create_app(["gmail_push"], Runtime(settings, store=store, secrets=EnvSecretStore({})))
    seen = []
    app.add_url_rule("/test/closed", "closed", requires_push_auth(lambda: (seen.append(1), Response(status=204))[1]),
                     methods=["POST"])
    resp = app.test_client().post("/test/closed", json=_envelope({}),
                                  headers={"Authorization": f"Bearer {_token(signing_key[0])}"})
    assert resp.status_code == 403 and seen == []
    store.close()


class _FakeResponse:
    def __init__(self, cache_control: str | None, status: int = 200):
        self.status = status
        self.headers = {"Cache-Control": cache_control} if cache_control else {}
        self.data = b"{}"


def test_caching_request_honours_max_age_and_no_store():
    now = [1000.0]
    answers = {"fresh": "public, max-age=60", "nostore": "no-store, max-age=60", "none": None}
    sent: list[str] = []

    def inner(url, method="GET", **kwargs):
        sent.append(url)
        return _FakeResponse(answers[url])

    transport = CachingRequest(inner, clock=lambda: now[0])
    for url in ("fresh", "fresh", "nostore", "nostore", "none", "none"):
        transport(url)
    assert sent == ["fresh", "nostore", "nostore", "none", "none"]
    now[0] += 61      # max-age passed: fetched again
    transport("fresh")
    assert sent[-1] == "fresh" and transport.fetches == 6


# ---- the push envelope ---------------------------------------------------------------------------

@pytest.fixture
def open_app(tmp_path):
    """Push auth off (as with the emulator); the route answers what decode_push returned."""
    store = SqliteStore(tmp_path / "store.db")
    app = create_app(["gmail_push"], Runtime(Settings(push_auth="off"), store=store, secrets=EnvSecretStore({})))

    @requires_push_auth
    def decoded():
        message, attributes, message_id = decode_push(request)
        return {"message": message, "attributes": attributes, "id": message_id,
                "attempt": delivery_attempt(request)}

    app.add_url_rule("/test/decoded", "decoded", decoded, methods=["POST"])
    yield app.test_client()
    store.close()


def test_decode_push_returns_data_attributes_and_id(open_app):
    envelope = _envelope({"emailAddress": "me@example.com", "historyId": "42"})
    envelope["message"]["attributes"] = {"origin": "test"}
    envelope["deliveryAttempt"] = 3
    resp = open_app.post("/test/decoded", json=envelope)
    assert resp.get_json() == {"message": {"emailAddress": "me@example.com", "historyId": "42"},
                               "attributes": {"origin": "test"}, "id": "2070443601311540", "attempt": 3}


def test_decode_push_accepts_snake_case_id_and_missing_attributes(open_app):
    envelope = _envelope({"a": 1})
    message = envelope["message"]
    message["message_id"] = message.pop("messageId")
    del message["attributes"]
    resp = open_app.post("/test/decoded", json=envelope)
    assert resp.get_json() == {"message": {"a": 1}, "attributes": {}, "id": "2070443601311540", "attempt": None}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("mutate, field", [
    (lambda e: e.pop("message"), "message"),
    (lambda e: e.update(message="text"), "message"),
    (lambda e: e["message"].pop("messageId"), "message.messageId"),
    (lambda e: e["message"].update(attributes={"n": 1}), "message.attributes"),
    (lambda e: e["message"].pop("data"), "message.data"),
    (lambda e: e["message"].update(data="%%% not base64"), "message.data"),
    (lambda e: e["message"].update(data=_b64(b"not json")), "message.data"),
    (lambda e: e["message"].update(data=_b64(b"\xff\xfe")), "message.data"),
    (lambda e: e["message"].update(data=_b64(b"[1, 2]")), "message.data"),
])
def test_decode_push_malformed_envelope_is_400_naming_the_field(open_app, mutate, field):
    envelope = _envelope({"historyId": 1})
    mutate(envelope)
    resp = open_app.post("/test/decoded", json=envelope)
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error["code"] == "invalid_request" and error["details"]["field"] == field


def test_decode_push_body_that_is_not_json_is_400(open_app):
    resp = open_app.post("/test/decoded", data=b"{not json", content_type="application/json")
    assert resp.status_code == 400 and resp.get_json()["error"]["details"]["field"] == "body"
