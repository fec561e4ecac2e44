"""API keys and tenants over HTTP (API.md section 2), on both store backends."""
from __future__ import annotations

import logging

import pytest

from mailbridge.api.app import create_app
from mailbridge.core import keys
from mailbridge.store.base import API_KEYS, TENANTS

from .conftest import ADMIN_KEY


@pytest.fixture
def client(runtime):
    return create_app(["manage"], runtime).test_client()


def create_key(client, admin_headers, **body):
    body.setdefault("name", "k")
    body.setdefault("tenant_id", "acme")
    resp = client.post("/v1/api-keys", json=body, headers=admin_headers)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_admin_creates_tenant_and_key_shown_once(client, admin_headers, runtime):
    created = create_key(client, admin_headers, name="backend", tenant_id="acme")
    assert created["key"].startswith("mbk_") and len(created["key"]) == 47
    assert created["tenant_id"] == "acme" and created["name"] == "backend"
    assert created["expires_at"] is None and created["created_at"].endswith("Z")
    assert runtime.store.get(TENANTS, "acme") is not None
    stored = runtime.store.get(API_KEYS, created["id"])
    assert created["key"] not in str(stored), "only the hash is stored"
    listed = client.get("/v1/api-keys", headers=bearer(created["key"])).get_json()["api_keys"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and "key_hash" not in listed[0]


def test_expiry_and_revocation_take_effect_on_next_request(client, admin_headers, runtime):
    key = create_key(client, admin_headers, expires_in=3600)
    assert key["expires_at"] is not None
    assert client.get("/v1/api-keys", headers=bearer(key["key"])).status_code == 200
    runtime.store.update(API_KEYS, key["id"], {"expires_ts": 1.0})
    resp = client.get("/v1/api-keys", headers=bearer(key["key"]))
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthenticated"

    other = create_key(client, admin_headers)
    extra = create_key(client, admin_headers)
    assert client.delete(f"/v1/api-keys/{other['id']}", headers=bearer(extra["key"])).status_code == 204
    assert client.get("/v1/api-keys", headers=bearer(other["key"])).status_code == 401
    assert client.get("/v1/api-keys", headers=bearer(extra["key"])).status_code == 200


def test_other_tenants_key_is_not_found_and_naming_another_tenant_is_forbidden(client, admin_headers):
    mine = create_key(client, admin_headers, tenant_id="acme")
    theirs = create_key(client, admin_headers, tenant_id="globex")
    resp = client.delete(f"/v1/api-keys/{theirs['id']}", headers=bearer(mine["key"]))
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    resp = client.post("/v1/api-keys", json={"name": "x", "tenant_id": "globex"}, headers=bearer(mine["key"]))
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    own = client.post("/v1/api-keys", json={"name": "x"}, headers=bearer(mine["key"]))
    assert own.status_code == 201 and own.get_json()["tenant_id"] == "acme"
    assert client.get("/v1/api-keys", headers=bearer(theirs["key"])).get_json()["api_keys"][0]["tenant_id"] == "globex"


def test_operations_permission_is_enforced(client, admin_headers):
    limited = create_key(client, admin_headers, permissions={"operations": ["send_email"]})
    resp = client.get("/v1/api-keys", headers=bearer(limited["key"]))
    assert resp.status_code == 403 and resp.get_json()["error"]["details"]["operation"] == "manage_api_keys"
    manager = create_key(client, admin_headers, permissions={"operations": ["manage_api_keys"],
                                                             "connection_ids": ["conn_1"]})
    assert client.get("/v1/api-keys", headers=bearer(manager["key"])).status_code == 200


def test_bad_input_names_the_field_and_changes_nothing(client, admin_headers, runtime):
    before = runtime.store.query(API_KEYS)
    cases = [({"tenant_id": "acme"}, "name"),
             ({"name": "x", "tenant_id": "acme", "permissions": {"operations": ["fly"]}}, "permissions.operations.0"),
             ({"name": "x", "tenant_id": "acme", "expires_in": 0}, "expires_in"),
             ({"name": "x", "tenant_id": "acme", "surprise": 1}, "surprise"),
             ({"name": "x"}, "tenant_id")]
    for body, field in cases:
        resp = client.post("/v1/api-keys", json=body, headers=admin_headers)
        assert resp.status_code == 422, (body, resp.get_json())
        error = resp.get_json()["error"]
        assert error["code"] == "invalid_request" and error["details"]["field"] == field
        assert field.split(".")[0] in error["message"]
    for raw, ctype in ((b"{not json", "application/json"), (b"[1, 2]", "application/json"), (b"", "application/json")):
        resp = client.post("/v1/api-keys", data=raw, content_type=ctype, headers=admin_headers)
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_request"
    assert runtime.store.query(API_KEYS) == before


def test_unauthenticated_calls_never_echo_the_key(client, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "mbk_" + "B" * 43
    for headers in ({}, {"Authorization": "Basic abc"}, bearer(wrong), bearer("short")):
        resp = client.get("/v1/api-keys", headers=headers)
        assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthenticated"
        assert wrong not in resp.get_data(as_text=True)
    assert wrong not in caplog.text and ADMIN_KEY not in caplog.text


def test_admin_key_must_name_a_tenant_to_list(client, admin_headers):
    resp = client.get("/v1/api-keys", headers=admin_headers)
    assert resp.status_code == 422 and resp.get_json()["error"]["details"]["field"] == "tenant_id"
    create_key(client, admin_headers, tenant_id="acme")
    listed = client.get("/v1/api-keys?tenant_id=acme", headers=admin_headers).get_json()["api_keys"]
    assert len(listed) == 1


def test_key_created_in_code_authenticates_over_http(client, runtime):
    created = keys.create_api_key(runtime.store, tenant_id="initech", name="cli")
    resp = client.get("/v1/api-keys", headers=bearer(created["key"]))
    assert resp.status_code == 200 and resp.get_json()["api_keys"][0]["name"] == "cli"
