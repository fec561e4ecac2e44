"""Each Cloud Function entry point, loaded by functions-framework exactly as in the cloud."""
from __future__ import annotations

from pathlib import Path

import functions_framework
import pytest

from mailbridge.api.functions import FUNCTIONS
from mailbridge.runtime import reset_default_runtime

from .conftest import ADMIN_KEY, ENCRYPTION_KEY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def deployed_env(monkeypatch, tmp_path):
    """The environment a deployed function reads, on a local SQLite store."""
    monkeypatch.setenv("MAILBRIDGE_STORE", f"sqlite:///{tmp_path / 'fn.db'}")
    monkeypatch.setenv("MAILBRIDGE_SECRETS", "env")
    monkeypatch.setenv("MAILBRIDGE_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("MAILBRIDGE_ENCRYPTION_KEY", ENCRYPTION_KEY)
    reset_default_runtime()
    yield
    reset_default_runtime()


def function_client(name: str):
    app = functions_framework.create_app(target="handle", source=str(ROOT / "functions" / name / "main.py"))
    return app.test_client()


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_each_function_serves_healthz_and_the_envelope(name, deployed_env):
    client = function_client(name)
    assert client.get("/healthz").get_json() == {"ok": True}
    resp = client.get("/definitely/not/here")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"


def test_post_with_body_through_functions_framework(deployed_env):
    client = function_client("manage")
    resp = client.post("/v1/api-keys", json={"name": "ff", "tenant_id": "acme"},
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    key = resp.get_json()["key"]
    listed = client.get("/v1/api-keys", headers={"Authorization": f"Bearer {key}"})
    assert listed.status_code == 200 and listed.get_json()["api_keys"][0]["name"] == "ff"
    bad = client.post("/v1/api-keys", data=b"{oops", content_type="application/json",
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert bad.status_code == 400 and bad.get_json()["error"]["details"]["field"] == "body"
