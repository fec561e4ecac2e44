"""Resend's own Python SDK, unchanged, against /resend on a real HTTP server backed by the Gmail emulator."""
from __future__ import annotations

import base64
import email
import threading
from email import policy

import pytest
import resend
import resend.exceptions
from werkzeug.serving import make_server

from mailbridge.api.app import create_app
from mailbridge.api.functions import FUNCTIONS
from tests.integration.gmail_stack import *  # noqa: F401,F403
from tests.integration.gmail_stack import ACCOUNT

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


@pytest.fixture
def mailbridge_url(gmail_runtime):
    """`create_app` served by werkzeug on a free loopback port, in a thread, for this test."""
    server = make_server("127.0.0.1", 0, create_app(list(FUNCTIONS), gmail_runtime), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="mailbridge-e2e", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def sdk(mailbridge_url, tenant_key, connected_mailbox):
    """The resend module pointed at mailbridge with a tenant key (restored afterwards)."""
    saved = resend.api_url, resend.api_key
    resend.api_url, resend.api_key = mailbridge_url + "/resend", tenant_key
    yield resend
    resend.api_url, resend.api_key = saved


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=policy.default)


def test_emails_send_then_get(sdk, gmail, connected_mailbox):
    sent = sdk.Emails.send({
        "from": f"Acme Support <{ACCOUNT}>", "to": ["customer@example.org"], "cc": "cc@example.org",
        "subject": "Your order ✓", "html": '<p>Thanks! <img src="cid:logo"></p>', "text": "Thanks!",
        "reply_to": "help@example.org", "headers": {"X-Entity-Ref-ID": "123"},
        "tags": [{"name": "category", "value": "confirm_email"}],
        "attachments": [
            {"filename": "invoice.txt", "content": list(b"total: 42")},
            {"filename": "logo.png", "content": base64.b64encode(PNG).decode(), "content_type": "image/png",
             "content_id": "logo"}],
    })
    [stored] = gmail.sent()
    assert sent["id"] == f"google:{connected_mailbox.id}:{stored.id}"
    msg = parsed(stored.raw)
    assert msg["Subject"] == "Your order ✓" and msg["X-Entity-Ref-ID"] == "123"
    assert msg["From"].addresses[0].display_name == "Acme Support"
    files = {p.get_filename(): p for p in msg.walk() if p.get_filename()}
    assert files["invoice.txt"].get_content() in ("total: 42", b"total: 42")
    assert files["logo.png"]["Content-ID"] == "<logo>" and files["logo.png"].get_content() == PNG

    fetched = sdk.Emails.get(sent["id"])
    assert fetched["object"] == "email" and fetched["id"] == sent["id"]
    assert fetched["subject"] == "Your order ✓" and fetched["to"] == ["customer@example.org"]
    assert fetched["from"] == f"Acme Support <{ACCOUNT}>" and fetched["cc"] == ["cc@example.org"]
    assert fetched["last_event"] == "sent" and "Thanks!" in fetched["text"]


def test_batch_send(sdk, gmail):
    answer = sdk.Batch.send([
        {"from": ACCOUNT, "to": ["one@example.org"], "subject": "first", "text": "1"},
        {"from": ACCOUNT, "to": "two@example.org", "subject": "second", "html": "<b>2</b>"},
    ])
    ids = [item["id"] for item in answer["data"]]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert [parsed(m.raw)["Subject"] for m in gmail.sent()] == ["first", "second"]


def test_idempotent_send_returns_the_same_id_and_sends_once(sdk, gmail):
    params = {"from": ACCOUNT, "to": ["customer@example.org"], "subject": "once", "text": "once"}
    first = sdk.Emails.send(params, {"idempotency_key": "welcome-user-42"})
    second = sdk.Emails.send(params, {"idempotency_key": "welcome-user-42"})
    assert first["id"] == second["id"]
    assert len(gmail.sent()) == 1 and gmail.calls()["gmail.users.messages.send"] == 1
    with pytest.raises(resend.exceptions.ResendError) as conflict:
        sdk.Emails.send({**params, "text": "other"}, {"idempotency_key": "welcome-user-42"})
    assert str(conflict.value.code) == "409"


def test_validation_errors_surface_as_the_sdks_validation_error(sdk, gmail):
    with pytest.raises(resend.exceptions.ValidationError) as unknown_sender:
        sdk.Emails.send({"from": "stranger@example.com", "to": ["a@example.org"], "subject": "s", "text": "t"})
    assert "from" in unknown_sender.value.message
    with pytest.raises(resend.exceptions.ValidationError) as remote:
        sdk.Emails.send({"from": ACCOUNT, "to": ["a@example.org"], "subject": "s", "text": "t",
                         "attachments": [{"filename": "a.pdf", "path": "http://127.0.0.1:9/a.pdf"}]})
    assert "path" in remote.value.message
    with pytest.raises(resend.exceptions.ValidationError) as bad_batch:  # strict: one bad email stops all
        sdk.Batch.send([{"from": ACCOUNT, "to": ["a@example.org"], "subject": "ok", "text": "t"},
                        {"from": ACCOUNT, "to": ["not an address"], "subject": "bad", "text": "t"}])
    assert bad_batch.value.message.startswith("[1].to")
    with pytest.raises(resend.exceptions.ResendError) as missing:
        sdk.Emails.get(f"google:conn_{'0' * 24}:feedbeef")
    assert str(missing.value.code) == "404"
    assert gmail.sent() == []
