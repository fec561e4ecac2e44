"""`make dev`'s stack as a person uses it: connect the emulated mailbox, see a webhook fire for mail
delivered into it, send and read — real processes over HTTP, nothing but this machine."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.emulators import free_port

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "you@example.com"


def wait_for(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def dev_stack(tmp_path):
    ports = {"PORT": free_port(), "GOOGLE_EMULATOR_PORT": free_port(), "WEBHOOK_RECEIVER_PORT": free_port()}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAILBRIDGE_", "GOOGLE_", "GMAIL_", "FIRESTORE_", "PUBSUB_", "PUSH_"))}
    env.update({k: str(v) for k, v in ports.items()}, MAILBRIDGE_DEV_DIR=str(tmp_path / "dev"),
               GOOGLE_EMULATOR_DECISION="approve", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "dev.stack"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{ports['PORT']}"
    try:
        wait_for(lambda: requests.get(base + "/healthz", timeout=1).ok, "the dev stack")
        yield {"api": base, "google": f"http://127.0.0.1:{ports['GOOGLE_EMULATOR_PORT']}",
               "receiver": f"http://127.0.0.1:{ports['WEBHOOK_RECEIVER_PORT']}",
               "store": f"sqlite:///{tmp_path / 'dev' / 'local.db'}", "env": env}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_connect_webhook_send_and_read_on_the_dev_stack(dev_stack):
    api = dev_stack["api"]
    created = subprocess.run([sys.executable, "-m", "mailbridge.cli", "keys", "create", "--tenant", "acme",
                              "--name", "dev"], cwd=ROOT, capture_output=True, text=True, check=True,
                             env={**dev_stack["env"], "MAILBRIDGE_STORE": dev_stack["store"]})
    headers = {"Authorization": f"Bearer {json.loads(created.stdout)['key']}"}

    started = requests.post(api + "/v1/connect", headers=headers, json={
        "provider": "google", "user_id": "u_1", "redirect_url": api + "/healthz"}).json()
    landed = requests.get(started["url"], timeout=10)
    assert "status=success" in landed.url and landed.status_code == 200, landed.url

    hook = requests.post(api + "/v1/webhooks", headers=headers,
                         json={"url": dev_stack["receiver"] + "/hook", "events": ["email.received"]})
    assert hook.status_code == 201, hook.text
    raw = f"From: Ann <ann@example.org>\r\nTo: {ACCOUNT}\r\nSubject: Hello dev\r\n\r\nHi!\r\n".encode()
    delivered = requests.post(f"{dev_stack['google']}/emulator/accounts/{ACCOUNT}/deliver", data=raw,
                              headers={"Content-Type": "message/rfc822"})
    assert delivered.status_code == 201, delivered.text
    received = wait_for(lambda: requests.get(dev_stack["receiver"] + "/received").json(), "the webhook")
    assert [r["body"]["type"] for r in received] == ["email.received"]
    assert received[0]["body"]["data"]["subject"] == "Hello dev"

    sent = requests.post(api + "/v1/send", headers=headers, json={
        "from": ACCOUNT, "to": ["ann@example.org"], "subject": "Reply from dev", "text": "World"})
    assert sent.status_code == 200, sent.text
    found = requests.get(api + "/v1/messages", headers=headers, params={"q": "Reply from dev"}).json()
    assert [e["id"] for e in found["emails"]] == [sent.json()["id"]]
