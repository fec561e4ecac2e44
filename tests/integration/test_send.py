"""Sending end to end over HTTP against the Gmail emulator (API.md section 6), on both store backends."""
from __future__ import annotations

import base64
import email
import json
from email import policy
from email.message import EmailMessage
from urllib.parse import quote

import pytest

from mailbridge.core import idempotency
from mailbridge.core.events import recorded_events
from mailbridge.errors import ConflictError
from mailbridge.store.base import AUDIT_LOG
from tests.integration.gmail_stack import *  # noqa: F401,F403
from tests.integration.gmail_stack import ACCOUNT, TENANT, bearer

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 16 + b"\n%%EOF\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parsed(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


def inbound(*, subject="Plan for Q1", sender="Boss <boss@example.org>", to=ACCOUNT, cc=None,
            message_id="<orig-1@mail.example.org>", references=None, attachment: bytes | None = None,
            reply_to=None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = sender, to, subject, message_id
    msg["Date"] = "Mon, 02 Feb 2026 10:00:00 +0000"
    if cc:
        msg["Cc"] = cc
    if reply_to:
        msg["Reply-To"] = reply_to
    if references:
        msg["References"] = references
    msg.set_content("The plan is attached.\nRegards")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="plan.pdf")
    return msg.as_bytes(policy=policy.SMTP)


def public(mailbox, gmail_id: str) -> str:
    return f"google:{mailbox.id}:{gmail_id}"


def sent_events(runtime) -> list[dict]:
    return recorded_events(runtime.store, "email.sent")


def audit_entries(runtime) -> list[dict]:
    return sorted(runtime.store.query(AUDIT_LOG), key=lambda e: e["created_ts"])


def test_send_builds_the_mime_and_spends_exactly_one_upstream_call(api, auth_headers, connected_mailbox,
                                                                    gmail, gmail_runtime):
    before = gmail.calls()
    resp = api.post("/v1/send", headers=auth_headers, json={
        "from": "Zoë Åberg <me@example.com>", "to": ["Ünïcode Name <a@example.org>", "b@example.org"],
        "cc": "c@example.org", "bcc": ["d@example.org"], "reply_to": "replies@example.org",
        "subject": "Héllo wörld ✓ – a subject long enough to need folding when encoded as words",
        "text": "Plain body ✓", "html": '<p>Html body ✓ <img src="cid:logo"></p>',
        "headers": {"X-Campaign": "7"},
        "attachments": [{"filename": "logo.png", "content": b64(PNG), "content_type": "image/png",
                         "content_id": "logo"},
                        {"filename": "résumé.pdf", "content": b64(PDF), "content_type": "application/pdf"}]})
    assert resp.status_code == 200, resp.get_json()
    assert gmail.calls() - before == {"gmail.users.messages.send": 1}, "send is one round trip, no read back"

    [stored] = gmail.sent()
    result = resp.get_json()
    assert result == {"id": public(connected_mailbox, stored.id), "connection_id": connected_mailbox.id,
                      "thread_id": public(connected_mailbox, stored.thread_id), "provider": "google"}
    raw = stored.raw
    assert b"\n" not in raw.replace(b"\r\n", b""), "CRLF line endings only"
    msg = parsed(raw)
    assert msg["Subject"] == "Héllo wörld ✓ – a subject long enough to need folding when encoded as words"
    assert msg["From"].addresses[0].display_name == "Zoë Åberg"
    assert [a.addr_spec for a in msg["To"].addresses] == ["a@example.org", "b@example.org"]
    assert msg["To"].addresses[0].display_name == "Ünïcode Name"
    assert msg["Cc"] == "c@example.org" and msg["Reply-To"] == "replies@example.org"
    assert msg["X-Campaign"] == "7" and msg["Message-ID"].endswith("@example.com>")
    assert msg.get_content_type() == "multipart/mixed"
    alternative, pdf = msg.get_payload()
    assert alternative.get_content_type() == "multipart/alternative"
    plain, related = alternative.get_payload()
    assert plain.get_content().rstrip() == "Plain body ✓"
    html, logo = related.get_payload()
    assert related.get_content_type() == "multipart/related" and html.get_content_type() == "text/html"
    assert logo["Content-ID"] == "<logo>" and logo.get_content() == PNG
    assert pdf.get_filename() == "résumé.pdf" and pdf.get_content() == PDF

    [event] = sent_events(gmail_runtime)
    data = event["data"]
    assert data["id"] == result["id"] and data["thread_id"] == result["thread_id"]
    assert data["subject"] == msg["Subject"] and data["message_id"] == msg["Message-ID"]
    assert [a["email"] for a in data["bcc"]] == ["d@example.org"] and data["labels"] == ["SENT"]
    assert [a["filename"] for a in data["attachments"]] == ["logo.png", "résumé.pdf"]

    [entry] = audit_entries(gmail_runtime)
    assert entry["outcome"] == "sent" and entry["direction"] == "sent" and entry["tenant_id"] == TENANT
    assert entry["message_id"] == result["id"] and entry["connection_id"] == connected_mailbox.id
    assert entry["recipients"] == 4 and entry["subject_length"] == len(msg["Subject"])
    assert "Héllo" not in str(entry) and "Plain body" not in str(entry), "no content in the audit log"


def test_connection_is_chosen_by_from_and_unknown_addresses_name_from(api, auth_headers, connected_mailbox,
                                                                       gmail):
    ok = api.post("/v1/send", headers=auth_headers, json={"from": "ME@example.com", "to": "a@example.org",
                                                          "subject": "s", "text": "t"})
    assert ok.status_code == 200 and ok.get_json()["connection_id"] == connected_mailbox.id
    bad = api.post("/v1/send", headers=auth_headers, json={"from": "other@example.com", "to": "a@example.org"})
    assert bad.status_code == 422 and bad.get_json()["error"]["details"]["field"] == "from"
    foreign = api.post("/v1/send", headers=auth_headers, json={"connection_id": "conn_" + "0" * 24,
                                                               "to": "a@example.org"})
    assert foreign.status_code == 404 and foreign.get_json()["error"]["code"] == "not_found"
    assert len(gmail.sent()) == 1


def test_unknown_fields_are_refused_by_name(api, auth_headers, connected_mailbox, gmail):
    resp = api.post("/v1/send", headers=auth_headers, json={"from": ACCOUNT, "to": "a@example.org",
                                                            "subjekt": "typo"})
    assert resp.status_code == 422
    assert resp.get_json()["error"]["details"]["field"] == "subjekt"
    assert gmail.sent() == []


def test_reply_sets_in_reply_to_references_thread_and_subject(api, auth_headers, connected_mailbox, gmail):
    original = gmail.deliver(inbound(subject="RE: Plan for Q1", references="<root@mail.example.org>"))
    before = gmail.calls()
    path = f"/v1/messages/{quote(public(connected_mailbox, original.id), safe='')}/reply"
    resp = api.post(path, headers=auth_headers, json={"text": "Sounds good"})
    assert resp.status_code == 200, resp.get_json()
    assert gmail.calls() - before == {"gmail.users.messages.get": 1, "gmail.users.messages.send": 1}
    [reply] = gmail.sent()
    msg = parsed(reply.raw)
    assert msg["In-Reply-To"] == "<orig-1@mail.example.org>"
    assert msg["References"].split() == ["<root@mail.example.org>", "<orig-1@mail.example.org>"]
    assert msg["Subject"] == "Re: Plan for Q1" and msg["To"] == "Boss <boss@example.org>"
    assert reply.thread_id == original.thread_id
    assert resp.get_json()["thread_id"] == public(connected_mailbox, original.thread_id)


def test_reply_to_an_unknown_or_malformed_id_is_404(api, auth_headers, connected_mailbox, gmail):
    for message_id in (public(connected_mailbox, "ffff000000000000"), "not-an-id",
                       f"google:conn_{'2' * 24}:ffff000000000000"):
        resp = api.post(f"/v1/messages/{message_id}/reply", headers=auth_headers, json={"text": "x"})
        assert resp.status_code == 404, (message_id, resp.get_json())
    assert gmail.sent() == []


def test_reply_all_picks_the_other_recipients_without_me(api, auth_headers, connected_mailbox, gmail):
    original = gmail.deliver(inbound(to=f"Me <{ACCOUNT}>, Alice <alice@example.org>", cc="bob@example.org",
                                     reply_to="Boss Desk <desk@example.org>"))
    resp = api.post(f"/v1/messages/{public(connected_mailbox, original.id)}/reply", headers=auth_headers,
                    json={"text": "All: noted", "reply_all": True, "cc": ["carol@example.org"]})
    assert resp.status_code == 200, resp.get_json()
    msg = parsed(gmail.sent()[0].raw)
    assert [a.addr_spec for a in msg["To"].addresses] == ["desk@example.org"]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["alice@example.org", "bob@example.org",
                                                          "carol@example.org"]


def test_send_with_in_reply_to_threads_and_refuses_another_connections_ids(api, auth_headers,
                                                                           connected_mailbox, gmail):
    original = gmail.deliver(inbound())
    resp = api.post("/v1/send", headers=auth_headers, json={
        "connection_id": connected_mailbox.id, "to": "boss@example.org", "text": "answer",
        "in_reply_to": public(connected_mailbox, original.id)})
    assert resp.status_code == 200, resp.get_json()
    [reply] = gmail.sent()
    assert reply.thread_id == original.thread_id and parsed(reply.raw)["Subject"] == "Re: Plan for Q1"
    other = api.post("/v1/send", headers=auth_headers, json={
        "connection_id": connected_mailbox.id, "to": "boss@example.org", "text": "answer",
        "in_reply_to": f"google:conn_{'1' * 24}:{original.id}"})
    assert other.status_code == 422 and other.get_json()["error"]["details"]["field"] == "in_reply_to"
    assert len(gmail.sent()) == 1


def test_forward_includes_the_original_attachments_and_quotes_it(api, auth_headers, connected_mailbox, gmail):
    original = gmail.deliver(inbound(attachment=PDF))
    before = gmail.calls()
    resp = api.post(f"/v1/messages/{public(connected_mailbox, original.id)}/forward", headers=auth_headers,
                    json={"to": "partner@example.org", "text": "FYI"})
    assert resp.status_code == 200, resp.get_json()
    assert gmail.calls() - before == {"gmail.users.messages.get": 1, "gmail.users.messages.send": 1}
    msg = parsed(gmail.sent()[0].raw)
    assert msg["Subject"] == "Fwd: Plan for Q1" and msg["To"] == "partner@example.org"
    body = msg.get_body(("plain",)).get_content()
    assert body.startswith("FYI") and "Forwarded message" in body and "The plan is attached." in body
    assert "From: Boss <boss@example.org>" in body
    [pdf] = list(msg.iter_attachments())
    assert pdf.get_filename() == "plan.pdf" and pdf.get_content() == PDF


def test_idempotency_key_replays_the_first_answer_and_sends_once(api, auth_headers, connected_mailbox, gmail):
    body = {"from": ACCOUNT, "to": "a@example.org", "subject": "once", "text": "only once"}
    headers = {**auth_headers, "Idempotency-Key": "order-42/confirmation"}
    first = api.post("/v1/send", headers=headers, json=body)
    again = api.post("/v1/send", headers=headers, json=dict(reversed(list(body.items()))))
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert gmail.calls()["gmail.users.messages.send"] == 1 and len(gmail.sent()) == 1

    other = api.post("/v1/send", headers=headers, json={**body, "text": "changed"})
    assert other.status_code == 409 and other.get_json()["error"]["code"] == "conflict"
    bad = api.post("/v1/send", headers={**auth_headers, "Idempotency-Key": "x" * 257}, json=body)
    assert bad.status_code == 422 and bad.get_json()["error"]["details"]["field"] == "Idempotency-Key"
    assert len(gmail.sent()) == 1


def test_a_duplicate_while_the_first_is_pending_is_409_and_sends_nothing(api, auth_headers, connected_mailbox,
                                                                        gmail, gmail_runtime):
    body = {"from": ACCOUNT, "to": "a@example.org", "text": "x"}
    fingerprint = idempotency.request_hash("POST", "/v1/send", json.dumps(body).encode())
    first = idempotency.begin(gmail_runtime.store, TENANT, "in-flight", fingerprint)  # the first request
    assert isinstance(first, idempotency.Claim)
    resp = api.post("/v1/send", headers={**auth_headers, "Idempotency-Key": "in-flight"}, json=body)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "conflict"
    assert gmail.sent() == []
    idempotency.complete(gmail_runtime.store, first, 200, {"id": "google:conn_x:first"})
    replay = api.post("/v1/send", headers={**auth_headers, "Idempotency-Key": "in-flight"}, json=body)
    assert replay.status_code == 200 and replay.get_json() == {"id": "google:conn_x:first"}
    assert gmail.sent() == []


def test_a_pending_key_abandoned_by_a_crashed_request_is_taken_over(gmail_runtime, monkeypatch):
    from mailbridge import clock
    crashed = idempotency.begin(gmail_runtime.store, TENANT, "k", "hash-a")
    now = clock.now()
    monkeypatch.setattr(clock, "now", lambda: now + idempotency.PENDING_TIMEOUT + 1)
    taken = idempotency.begin(gmail_runtime.store, TENANT, "k", "hash-a")
    assert isinstance(taken, idempotency.Claim) and taken.token != crashed.token
    idempotency.complete(gmail_runtime.store, crashed, 200, {"stale": True})  # the lost claim writes nothing
    idempotency.complete(gmail_runtime.store, taken, 200, {"id": "new"})
    assert idempotency.begin(gmail_runtime.store, TENANT, "k", "hash-a") == idempotency.Replay(200, {"id": "new"})
    with pytest.raises(ConflictError):
        idempotency.begin(gmail_runtime.store, TENANT, "k", "hash-b")
    assert isinstance(idempotency.begin(gmail_runtime.store, "other-tenant", "k", "hash-b"), idempotency.Claim)


def test_a_failed_send_releases_its_idempotency_key(api, auth_headers, connected_mailbox, gmail):
    gmail.add_fault("gmail.users.messages.send", 503, retry_after=7)
    headers = {**auth_headers, "Idempotency-Key": "retry-me"}
    body = {"from": ACCOUNT, "to": "a@example.org", "text": "x"}
    failed = api.post("/v1/send", headers=headers, json=body)
    assert failed.status_code == 503
    retried = api.post("/v1/send", headers=headers, json=body)
    assert retried.status_code == 200 and len(gmail.sent()) == 1


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # size, not storage, is under test
def test_message_over_25_mib_is_413_and_nothing_is_sent(api, auth_headers, connected_mailbox, gmail,
                                                        gmail_runtime):
    big = b64(b"\0" * (19 * 1024 * 1024))  # 19 MiB → over 25 MiB once base64-encoded in the MIME
    resp = api.post("/v1/send", headers=auth_headers, json={
        "from": ACCOUNT, "to": "a@example.org", "attachments": [{"filename": "big.bin", "content": big}]})
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "payload_too_large"
    assert gmail.sent() == [] and gmail.calls()["gmail.users.messages.send"] == 0
    [entry] = audit_entries(gmail_runtime)
    assert entry["outcome"] == "failed" and entry["error_code"] == "payload_too_large"


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_six_megabyte_message_goes_through_the_upload_endpoint(api, auth_headers, connected_mailbox, gmail):
    data = bytes(range(256)) * (6 * 1024 * 4)  # 6 MiB: over the 5 MiB the JSON send endpoint takes
    resp = api.post("/v1/send", headers=auth_headers, json={
        "from": ACCOUNT, "to": "a@example.org", "attachments": [{"filename": "six.bin", "content": b64(data)}]})
    assert resp.status_code == 200, resp.get_json()
    [stored] = gmail.sent()
    assert len(stored.raw) > gmail.state.max_json_body
    [part] = list(parsed(stored.raw).iter_attachments())
    assert part.get_content() == data


@pytest.mark.parametrize("change", [
    {"subject": "hi\r\nBcc: evil@example.org"}, {"subject": "hi\nthere"},
    {"headers": {"X-Tag": "a\r\nBcc: evil@example.org"}}, {"to": "a@example.org\r\nBcc: evil@example.org"},
    {"from": "Me\r\nBcc: evil@example.org <me@example.com>"},
    {"attachments": [{"filename": "a\r\n.txt", "content": "aGk="}]}])
def test_line_breaks_in_headers_are_422_and_nothing_is_sent(api, auth_headers, connected_mailbox, gmail,
                                                           change):
    body = {"from": ACCOUNT, "to": "a@example.org", "subject": "ok", "text": "t", **change}
    resp = api.post("/v1/send", headers=auth_headers, json=body)
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]["code"] == "invalid_request"
    assert gmail.sent() == []


def test_more_than_100_recipients_is_422(api, auth_headers, connected_mailbox, gmail):
    many = [f"r{i}@example.org" for i in range(101)]
    resp = api.post("/v1/send", headers=auth_headers, json={"from": ACCOUNT, "to": many, "text": "t"})
    assert resp.status_code == 422 and resp.get_json()["error"]["details"]["field"] == "to"
    split = api.post("/v1/send", headers=auth_headers, json={"from": ACCOUNT, "to": many[:60], "cc": many[60:]})
    assert split.status_code == 422, "Gmail's limit is per message: to, cc and bcc together"
    assert gmail.sent() == []


def test_send_on_a_revoked_grant_is_409_reauth_required(api, auth_headers, connected_mailbox, gmail,
                                                        gmail_runtime):
    gmail.revoke()
    resp = api.post("/v1/send", headers=auth_headers, json={"from": ACCOUNT, "to": "a@example.org", "text": "t"})
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "reauth_required"
    assert gmail.sent() == [] and sent_events(gmail_runtime) == []
    [entry] = audit_entries(gmail_runtime)
    assert entry["outcome"] == "failed" and entry["error_code"] == "reauth_required"
    assert entry["connection_id"] == connected_mailbox.id and entry["recipients"] == 1


def test_provider_503_is_503_provider_unavailable_with_retry_after(api, auth_headers, connected_mailbox, gmail,
                                                                   gmail_runtime):
    gmail.add_fault("gmail.users.messages.send", 503, count=5, retry_after=30)
    resp = api.post("/v1/send", headers=auth_headers, json={"from": ACCOUNT, "to": "a@example.org", "text": "t"})
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "provider_unavailable"
    assert int(resp.headers["Retry-After"]) >= 1
    assert gmail.sent() == [] and sent_events(gmail_runtime) == []
    [entry] = audit_entries(gmail_runtime)
    assert (entry["outcome"], entry["error_code"], entry["connection_id"]) == (
        "failed", "provider_unavailable", connected_mailbox.id)


def test_a_key_limited_to_other_connections_cannot_send(api, connected_mailbox, gmail, gmail_runtime):
    from mailbridge.core import keys
    from mailbridge.core.permissions import Permissions
    limited = keys.create_api_key(gmail_runtime.store, tenant_id=TENANT, name="limited",
                                  permissions=Permissions(connection_ids=["conn_other"]))["key"]
    resp = api.post("/v1/send", headers=bearer(limited), json={"connection_id": connected_mailbox.id,
                                                               "to": "a@example.org", "text": "t"})
    assert resp.status_code == 404
    by_from = api.post("/v1/send", headers=bearer(limited), json={"from": ACCOUNT, "to": "a@example.org"})
    assert by_from.status_code == 422 and by_from.get_json()["error"]["details"]["field"] == "from"
    assert gmail.sent() == []
