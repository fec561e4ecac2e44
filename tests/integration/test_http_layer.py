"""The HTTP layer: error envelope, limits, auth decorator and rate limiting shared by every function."""
from __future__ import annotations

import pytest
from flask import jsonify

from mailbridge.api.app import create_app
from mailbridge.api.auth import requires
from mailbridge.api.functions import FUNCTIONS
from mailbridge.core import keys
from mailbridge.core.permissions import Permissions, RateLimit

from .conftest import ADMIN_KEY


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def envelope(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


@pytest.fixture
def app(runtime):
    """Every function's blueprint, plus two test-only routes guarded like real ones."""
    app = create_app(FUNCTIONS, runtime)

    @app.get("/test/send")
    @requires("send_email")
    def guarded():
        return jsonify({"ok": True})

    @app.post("/test/boom")
    def boom():
        raise RuntimeError(f"failure holding {ADMIN_KEY}")
    return app


def test_healthz_on_every_function_without_auth(runtime):
    for name in FUNCTIONS:
        resp = create_app([name], runtime).test_client().get("/healthz")
        assert resp.status_code == 200 and resp.get_json() == {"ok": True}, name


def test_unknown_route_and_wrong_method_answer_the_envelope(app):
    client = app.test_client()
    envelope(client.get("/v1/nowhere"), 404, "not_found")
    error_resp = client.put("/v1/api-keys")
    envelope(error_resp, 405, "method_not_allowed")
    assert "POST" in error_resp.headers["Allow"]


def test_oversized_body_is_413(app):
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    resp = app.test_client().post("/v1/api-keys", data=big, content_type="application/json",
                                  headers=bearer(ADMIN_KEY))
    envelope(resp, 413, "payload_too_large")


def test_unexpected_error_is_500_without_trace_or_secret(app):
    resp = app.test_client().post("/test/boom")
    error = envelope(resp, 500, "internal_error")
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and "RuntimeError" not in text and ADMIN_KEY not in text
    assert error["details"] == {}


def test_admin_key_is_forbidden_outside_key_management(app):
    envelope(app.test_client().get("/test/send", headers=bearer(ADMIN_KEY)), 403, "forbidden")


def test_rate_limit_answers_429_with_headers_across_instances(runtime):
    """Two app instances (two function instances) share one counter through the store."""
    created = keys.create_api_key(runtime.store, tenant_id="acme", name="tight",
                                  permissions=Permissions(rate_limit=RateLimit(per_minute=3, per_hour=100)))
    first, second = (create_app(["manage"], runtime).test_client() for _ in range(2))
    answers = [(first if i % 2 else second).get("/v1/api-keys", headers=bearer(created["key"])) for i in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    remaining = [int(r.headers["RateLimit-Remaining"]) for r in answers]
    assert remaining == [2, 1, 0, 0]
    for r in answers:
        assert r.headers["RateLimit-Limit"] == "3"
        assert 1 <= int(r.headers["RateLimit-Reset"]) <= 60
    limited = envelope(answers[3], 429, "rate_limited")
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60 and limited["message"]


def test_hour_window_reported_when_closer_to_its_limit(runtime):
    created = keys.create_api_key(runtime.store, tenant_id="acme", name="hourly",
                                  permissions=Permissions(rate_limit=RateLimit(per_minute=100, per_hour=2)))
    client = create_app(["manage"], runtime).test_client()
    resp = client.get("/v1/api-keys", headers=bearer(created["key"]))
    assert resp.headers["RateLimit-Limit"] == "2" and resp.headers["RateLimit-Remaining"] == "1"
    client.get("/v1/api-keys", headers=bearer(created["key"]))
    third = client.get("/v1/api-keys", headers=bearer(created["key"]))
    envelope(third, 429, "rate_limited")
    assert third.headers["RateLimit-Limit"] == "2"
    assert third.headers["Retry-After"] == third.headers["RateLimit-Reset"]


def test_restricted_key_without_operation_is_forbidden_before_the_view_runs(app, runtime):
    created = keys.create_api_key(runtime.store, tenant_id="acme", name="reader",
                                  permissions=Permissions(operations=["view_email"]))
    envelope(app.test_client().get("/test/send", headers=bearer(created["key"])), 403, "forbidden")
    allowed = keys.create_api_key(runtime.store, tenant_id="acme", name="sender",
                                  permissions=Permissions(operations=["send_email"]))
    assert app.test_client().get("/test/send", headers=bearer(allowed["key"])).get_json() == {"ok": True}
