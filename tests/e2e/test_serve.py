"""`mailbridge serve` and `mailbridge keys create` as a user runs them: real processes, real HTTP."""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

ADMIN_KEY = "mbk_" + "C" * 43


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stack_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILBRIDGE_", "FIRESTORE_", "PUBSUB_"))}
    env.update(MAILBRIDGE_STORE=f"sqlite:///{tmp_path / 'serve.db'}", MAILBRIDGE_ADMIN_KEY=ADMIN_KEY,
               MAILBRIDGE_ENCRYPTION_KEY=base64.b64encode(b"e" * 32).decode())
    return env


@pytest.fixture
def server(stack_env):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mailbridge.cli", "serve", "--port", str(port)],
                            env=stack_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(base + "/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            if time.monotonic() > deadline:
                raise AssertionError("mailbridge serve did not come up")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_mounts_every_function_on_one_port(server):
    assert requests.get(server + "/healthz").json() == {"ok": True}
    created = requests.post(server + "/v1/api-keys", json={"name": "e2e", "tenant_id": "acme"},
                            headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert created.status_code == 201
    listed = requests.get(server + "/v1/api-keys", headers={"Authorization": f"Bearer {created.json()['key']}"})
    assert listed.status_code == 200 and listed.headers["RateLimit-Limit"] == "300"
    missing = requests.get(server + "/v1/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_cli_key_works_against_the_server(server, stack_env):
    out = subprocess.run([sys.executable, "-m", "mailbridge.cli", "keys", "create", "--tenant", "acme",
                          "--name", "from-cli", "--operation", "manage_api_keys"],
                         env=stack_env, capture_output=True, text=True, check=True)
    created = json.loads(out.stdout)
    assert created["permissions"] == {"operations": ["manage_api_keys"]}
    resp = requests.get(server + "/v1/api-keys", headers={"Authorization": f"Bearer {created['key']}"})
    assert resp.status_code == 200 and [k["name"] for k in resp.json()["api_keys"]] == ["from-cli"]
