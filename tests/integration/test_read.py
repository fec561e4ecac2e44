"""Reading mail over HTTP (API.md section 5) against the Gmail emulator, with mail delivered into it, on both stores."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from mailbridge import clock
from mailbridge.api.app import create_app
from mailbridge.api.functions import FUNCTIONS
from mailbridge.core import keys
from mailbridge.core.permissions import Permissions
from mailbridge.runtime import Runtime
from mailbridge.store.base import CONNECTIONS
from tests.integration.gmail_stack import *  # noqa: F401,F403  (the fixtures)
from tests.integration.gmail_stack import ACCOUNT, REDIRECT_URL, TENANT, USER_ID, bearer

OTHER = "other@example.com"
T0 = 1_770_000_000_000          # ms: every delivered message gets an explicit, distinct internal date
FULL_SCOPE = "https://mail.google.com/"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4


def mail(subject: str, *, sender: str = "alice@example.com", to: str = ACCOUNT, body: str = "hello there",
         html: str | None = None, attachment: tuple[str, bytes] | None = None, reply_to: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = subject, sender, to
    msg["Message-ID"] = make_msgid(domain="example.com")
    if reply_to:
        msg["In-Reply-To"] = msg["References"] = reply_to
    msg.set_content(body)
    if html:
        msg.add_alternative(html, subtype="html")
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="pdf", filename=attachment[0])
    return msg.as_bytes()


def connect(api, headers, gmail, *, user_id: str, account: str) -> str:
    """Connect `account` for `user_id` through the real HTTP flow; returns the connection id."""
    gmail.state.add_account(account)
    gmail.state.oauth_account = account.lower()
    try:
        resp = api.post("/v1/connect", headers=headers, json={"provider": "google", "user_id": user_id,
                                                               "redirect_url": REDIRECT_URL, "backfill": "none"})
        status, location = gmail.get(resp.get_json()["url"])
        callback = urlsplit(location["Location"])
        done = api.get(f"{callback.path}?{callback.query}")
        return parse_qs(urlsplit(done.headers["Location"]).query)["connection_id"][0]
    finally:
        gmail.state.oauth_account = None


def restricted_key(runtime, tenant: str = TENANT, **permissions) -> dict:
    created = keys.create_api_key(runtime.store, tenant_id=tenant, name="restricted",
                                  permissions=Permissions(**permissions))
    return bearer(created["key"])


def mid(conn: str, stored) -> str:
    return f"google:{conn}:{stored.id}"


def error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()["error"]
    assert body["code"] == code
    return body


def search(api, headers, **params) -> dict:
    resp = api.get("/v1/messages", headers=headers, query_string=params)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def subjects(body: dict) -> list[str]:
    return [e["subject"] for e in body["emails"]]


def round_trips(gmail, before: Counter, batched: str) -> int:
    """Upstream HTTP requests since `before`: every counted call except the sub-calls of a batch."""
    delta = gmail.calls() - before
    return sum(delta.values()) - delta[batched]


# --- search -----------------------------------------------------------------------------------------

def test_search_filters_each_narrow_the_results(api, auth_headers, gmail, connected_mailbox):
    box = gmail.mailbox
    label = box.label_create("Clients")["id"]
    a = gmail.deliver(mail("Invoice March", sender="Alice <alice@example.com>"), internal_ms=T0)
    b = gmail.deliver(mail("Lunch", sender="bob@example.com", to="bob@example.com, me@example.com"),
                      internal_ms=T0 + 60_000)
    c = gmail.deliver(mail("Report", sender="carol@example.com", attachment=("r.pdf", PDF)),
                      internal_ms=T0 + 120_000)
    box.modify(a.id, [label], ["UNREAD"])
    h = auth_headers
    assert subjects(search(api, h)) == ["Report", "Lunch", "Invoice March"]
    assert subjects(search(api, h, q="invoice")) == ["Invoice March"]
    assert subjects(search(api, h, **{"from": "bob@example.com"})) == ["Lunch"]
    assert subjects(search(api, h, to="bob@example.com")) == ["Lunch"]
    assert subjects(search(api, h, subject="report")) == ["Report"]
    assert subjects(search(api, h, label="Clients")) == ["Invoice March"]
    assert subjects(search(api, h, label="INBOX")) == ["Report", "Lunch", "Invoice March"]
    assert subjects(search(api, h, unread="true")) == ["Report", "Lunch"]
    assert subjects(search(api, h, unread="false")) == ["Invoice March"]
    assert subjects(search(api, h, has_attachment="true")) == ["Report"]
    assert subjects(search(api, h, has_attachment="false")) == ["Lunch", "Invoice March"]
    assert subjects(search(api, h, after=clock.rfc3339((T0 + 60_000) / 1000))) == ["Report", "Lunch"]
    assert subjects(search(api, h, before=clock.rfc3339((T0 + 60_000) / 1000))) == ["Invoice March"]
    assert subjects(search(api, h, connection_id=connected_mailbox.id)) == ["Report", "Lunch", "Invoice March"]
    assert subjects(search(api, h, user_id=USER_ID)) == ["Report", "Lunch", "Invoice March"]
    assert subjects(search(api, h, user_id="nobody")) == []
    found = search(api, h, q="report")["emails"][0]
    assert found["id"] == mid(connected_mailbox.id, c)
    assert found["thread_id"] == f"google:{connected_mailbox.id}:{c.thread_id}"
    assert found["from"] == {"email": "carol@example.com", "name": None} and found["is_read"] is False
    assert found["text"] is None and found["html"] is None     # include_body defaults to false
    assert b.id != a.id


def test_search_text_is_literal_never_gmail_operators(api, auth_headers, gmail, connected_mailbox):
    gmail.deliver(mail("From Alice", sender="alice@example.com", body="plain"), internal_ms=T0)
    gmail.deliver(mail("Notes", sender="zed@example.com", body="filter tip: from:alice@example.com OR is:unread"),
                  internal_ms=T0 + 1000)
    gmail.deliver(mail("Other", sender="zed@example.com", body="nothing"), internal_ms=T0 + 2000)
    assert subjects(search(api, auth_headers, q="from:alice@example.com")) == ["Notes"]
    assert subjects(search(api, auth_headers, q="is:unread")) == ["Notes"]
    assert subjects(search(api, auth_headers, q='example.com" OR is:unread')) == ["Notes"]
    assert subjects(search(api, auth_headers, subject="-has:attachment")) == []


def test_search_include_body_returns_text_and_html(api, auth_headers, gmail, connected_mailbox):
    gmail.deliver(mail("Bodies", body="the text part", html="<p>the html part</p>"), internal_ms=T0)
    before = gmail.calls()
    email = search(api, auth_headers, include_body="true")["emails"][0]
    assert round_trips(gmail, before, "gmail.users.messages.get") == 2     # list + one batch
    assert email["text"].strip() == "the text part" and "<p>the html part</p>" in email["html"]


def test_search_pages_across_two_connections_with_opaque_tokens(api, auth_headers, gmail, connected_mailbox):
    other = connect(api, auth_headers, gmail, user_id="u_7", account=OTHER)
    expected = []
    for i in range(7):   # interleaved in time across the two mailboxes, unevenly
        account = OTHER if i in (1, 2, 5) else ACCOUNT
        gmail.state.deliver(account, mail(f"m{i}"), internal_ms=T0 + i * 1000)
        expected.insert(0, f"m{i}")
    for limit in (1, 2, 3, 4, 7, 50):   # every split of the interleaving: nothing lost, nothing repeated
        seen, token, pages = [], None, 0
        while True:
            body = search(api, auth_headers, limit=limit, **({"page_token": token} if token else {}))
            pages += 1
            assert body["errors"] == [] and len(body["emails"]) <= limit
            seen += subjects(body)
            token = body["next_page_token"]
            assert body["has_more"] is (token is not None)
            if token is None:
                break
            assert connected_mailbox.id not in token and other not in token
        assert seen == expected, limit
        assert pages >= -(-len(expected) // limit)
    assert {e["connection_id"] for e in search(api, auth_headers)["emails"]} == {connected_mailbox.id, other}
    first = search(api, auth_headers, limit=3)["next_page_token"]
    forged = first[:-6] + ("AAAAAA" if not first.endswith("AAAAAA") else "BBBBBB")
    assert error(api.get("/v1/messages", headers=auth_headers, query_string={"page_token": forged, "limit": 3}),
                 422, "invalid_request")["details"] == {"field": "page_token"}
    assert error(api.get("/v1/messages", headers=auth_headers,
                         query_string={"page_token": first, "q": "m1"}), 422, "invalid_request")["details"] == {
        "field": "page_token"}   # a token is only good for the filters it was made with


def test_search_reports_a_failing_connection_while_the_other_answers(api, auth_headers, gmail, connected_mailbox):
    other = connect(api, auth_headers, gmail, user_id="u_7", account=OTHER)
    gmail.deliver(mail("mine"), internal_ms=T0)
    gmail.state.deliver(OTHER, mail("theirs"), internal_ms=T0 + 1)
    gmail.add_fault("gmail.users.messages.list", 400)      # one of the two parallel list calls is refused
    body = search(api, auth_headers)
    assert len(body["errors"]) == 1 and body["errors"][0]["code"] == "invalid_request"
    failed = body["errors"][0]["connection_id"]
    assert failed in (connected_mailbox.id, other)
    assert [e["connection_id"] for e in body["emails"]] == [({connected_mailbox.id, other} - {failed}).pop()]
    gmail.state.revoke_account(OTHER)                       # the user removed our access to OTHER
    gmail.state.expire_access_tokens(OTHER)
    body = search(api, auth_headers)
    assert subjects(body) == ["mine"]
    assert [(e["connection_id"], e["code"]) for e in body["errors"]] == [(other, "reauth_required")]
    assert "ya29" not in str(body)
    # the only connection asked fails: its error is the answer
    error(api.get("/v1/messages", headers=auth_headers, query_string={"connection_id": other}), 409, "reauth_required")


# --- one message ------------------------------------------------------------------------------------

def test_get_message_raw_and_attachment_with_a_non_ascii_filename(api, auth_headers, gmail, connected_mailbox):
    stored = gmail.deliver(mail("Files", body="see attached", attachment=("Résumé €.pdf", PDF)), internal_ms=T0)
    encoded = quote(mid(connected_mailbox.id, stored), safe="")
    resp = api.get(f"/v1/messages/{encoded}?include_body=true", headers=auth_headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    email = resp.get_json()
    assert email["id"] == mid(connected_mailbox.id, stored) and email["text"].strip() == "see attached"
    assert "access_info" not in email
    [att] = email["attachments"]
    assert (att["filename"], att["content_type"], email["has_attachments"]) == (
        "Résumé €.pdf", "application/pdf", True)
    raw = api.get(f"/v1/messages/{encoded}/raw", headers=auth_headers)
    assert raw.status_code == 200 and raw.mimetype == "message/rfc822"
    assert raw.get_data() == gmail.mailbox.messages[stored.id].raw
    got = api.get(f"/v1/messages/{encoded}/attachments/{att['id']}", headers=auth_headers)
    assert got.status_code == 200 and got.get_data() == PDF and got.mimetype == "application/pdf"
    disposition = got.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and "filename*=UTF-8''R%C3%A9sum%C3%A9%20%E2%82%AC.pdf" in disposition
    assert 'filename="R_sum_ _.pdf"' in disposition
    error(api.get(f"/v1/messages/{encoded}/attachments/9", headers=auth_headers), 404, "not_found")
    error(api.get(f"/v1/messages/google:{connected_mailbox.id}:ffffffffffffffff", headers=auth_headers),
          404, "not_found")


def test_ids_route_with_colons_percent_encoding_and_suffixes(api, auth_headers, gmail, connected_mailbox):
    stored = gmail.deliver(mail("Route"), internal_ms=T0)
    plain, encoded = mid(connected_mailbox.id, stored), quote(mid(connected_mailbox.id, stored), safe="")
    for path in (plain, encoded):
        assert api.get(f"/v1/messages/{path}", headers=auth_headers).get_json()["subject"] == "Route"
        assert api.get(f"/v1/messages/{path}/raw", headers=auth_headers).mimetype == "message/rfc822"
        thread = f"google:{connected_mailbox.id}:{stored.thread_id}"
        tpath = thread if path == plain else quote(thread, safe="")
        assert api.get(f"/v1/threads/{tpath}", headers=auth_headers).get_json()["id"] == thread
        error(api.get(f"/v1/threads/{tpath}/context", headers=auth_headers), 404, "not_found")
    for bad in ("nonsense", "google:conn_x", "imap:conn_1:abc", "google:conn_1:a%20b"):
        error(api.get(f"/v1/messages/{bad}", headers=auth_headers), 404, "not_found")
        error(api.get(f"/v1/threads/{bad}/context", headers=auth_headers), 404, "not_found")


def test_patch_read_state_and_labels_show_in_the_mailbox_and_back(api, auth_headers, gmail, connected_mailbox,
                                                                   gmail_runtime):
    stored = gmail.deliver(mail("Patch me"), internal_ms=T0)
    label = gmail.mailbox.label_create("Follow-up")["id"]
    path = f"/v1/messages/{quote(mid(connected_mailbox.id, stored), safe='')}"
    before = gmail.calls()
    resp = api.patch(path, headers=auth_headers, json={"is_read": True, "add_labels": [label]})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert (gmail.calls() - before)["gmail.users.messages.modify"] == 1
    assert resp.get_json()["is_read"] is True and label in resp.get_json()["labels"]
    in_gmail = gmail.mailbox.messages[stored.id].labels
    assert "UNREAD" not in in_gmail and label in in_gmail
    gmail.mailbox.modify(stored.id, ["UNREAD", "STARRED"], [label])   # the user changes it in Gmail
    email = api.get(path, headers=auth_headers).get_json()
    assert email["is_read"] is False and "STARRED" in email["labels"] and label not in email["labels"]
    unstarred = api.patch(path, headers=auth_headers, json={"remove_labels": ["STARRED"]}).get_json()
    assert unstarred["labels"] == ["INBOX", "UNREAD"]
    only_read = restricted_key(gmail_runtime, operations=["view_email", "mark_as_read"])
    assert api.patch(path, headers=only_read, json={"is_read": True}).status_code == 200
    assert error(api.patch(path, headers=only_read, json={"add_labels": ["STARRED"]}), 403, "forbidden")[
        "details"] == {"operation": "apply_labels"}
    for body in ({}, {"is_read": "true"}, {"add_labels": "STARRED"}, {"colour": "red"},
                 {"add_labels": ["STARRED"], "remove_labels": ["STARRED"]}):
        error(api.patch(path, headers=auth_headers, json=body), 422, "invalid_request")
    error(api.patch(path, headers=auth_headers, data="{", content_type="application/json"), 400, "invalid_request")


def test_delete_trashes_and_permanent_delete_needs_the_full_scope(api, auth_headers, gmail, connected_mailbox,
                                                                 gmail_runtime, gmail_settings):
    trashed, kept = gmail.deliver(mail("Trash me"), internal_ms=T0), gmail.deliver(mail("Keep"), internal_ms=T0 + 1)
    path = lambda m, conn=connected_mailbox.id: f"/v1/messages/{quote(f'google:{conn}:{m.id}', safe='')}"  # noqa: E731
    assert api.delete(path(trashed), headers=auth_headers).status_code == 204
    assert "TRASH" in gmail.mailbox.messages[trashed.id].labels
    refused = error(api.delete(path(kept) + "?permanent=true", headers=auth_headers), 403, "forbidden")
    assert FULL_SCOPE in refused["message"]
    assert kept.id in gmail.mailbox.messages
    error(api.delete(path(kept) + "?permanent=1", headers=auth_headers), 422, "invalid_request")
    # A deployment whose GOOGLE_SCOPES include the full scope: the mailbox connected there may delete.
    full = Runtime(replace(gmail_settings, google_scopes=(*gmail_settings.google_scopes, FULL_SCOPE)),
                   store=gmail_runtime.store, secrets=gmail_runtime.secrets, bus=gmail_runtime.bus)
    full_api = create_app(list(FUNCTIONS), full).test_client()
    conn = connect(full_api, auth_headers, gmail, user_id="u_admin", account=ACCOUNT)
    assert FULL_SCOPE in gmail_runtime.store.get(CONNECTIONS, conn)["scopes"]
    assert full_api.delete(path(kept, conn) + "?permanent=true", headers=auth_headers).status_code == 204
    assert kept.id not in gmail.mailbox.messages
    error(api.get(path(kept, conn), headers=auth_headers), 404, "not_found")


# --- threads ----------------------------------------------------------------------------------------

def _threads(gmail) -> tuple:
    """Two threads: "Kickoff" (Alice, then Bob's reply) and "Unrelated" in between."""
    root = gmail.deliver(mail("Kickoff", sender="Alice <alice@example.com>", body="first"), internal_ms=T0)
    reply = gmail.deliver(mail("Re: Kickoff", sender="bob@example.com", body="second",
                               reply_to=gmail.mailbox.messages[root.id].parsed.header("Message-ID")),
                          internal_ms=T0 + 5000)
    other = gmail.deliver(mail("Unrelated", body="third"), internal_ms=T0 + 2000)
    assert reply.thread_id == root.thread_id != other.thread_id
    return root, reply, other


def test_thread_list_is_two_round_trips_and_get_thread_one(api, auth_headers, gmail, connected_mailbox):
    root, reply, other = _threads(gmail)
    before = gmail.calls()
    body = api.get("/v1/threads", headers=auth_headers, query_string={"connection_id": connected_mailbox.id,
                                                                      "limit": 50}).get_json()
    assert round_trips(gmail, before, "gmail.users.threads.get") == 2 and (gmail.calls() - before)["batch"] == 1
    assert [t["id"].rsplit(":", 1)[1] for t in body["threads"]] == [root.thread_id, other.thread_id]
    kickoff = body["threads"][0]
    assert (kickoff["subject"], kickoff["message_count"], kickoff["is_unread"], body["next_page_token"]) == (
        "Kickoff", 2, True, None)
    assert [p["email"] for p in kickoff["participants"]] == ["alice@example.com", ACCOUNT, "bob@example.com"]
    before = gmail.calls()
    thread = api.get(f"/v1/threads/{kickoff['id']}", headers=auth_headers).get_json()
    assert gmail.calls() - before == Counter({"gmail.users.threads.get": 1})
    assert [m["text"].strip() for m in thread["messages"]] == ["first", "second"]
    assert (thread["subject"], thread["message_count"], thread["provider"], thread["context"]) == (
        "Kickoff", 2, "google", None)
    assert "last_synced_at" not in thread


def test_thread_from_store_makes_no_upstream_call(api, auth_headers, gmail, connected_mailbox):
    root, reply, _ = _threads(gmail)
    tid = f"google:{connected_mailbox.id}:{root.thread_id}"
    error(api.get(f"/v1/threads/{tid}?source=store", headers=auth_headers), 404, "not_found")
    live = api.get(f"/v1/threads/{tid}", headers=auth_headers).get_json()
    gmail.mailbox.modify(reply.id, [], ["UNREAD"])            # changes after the sync are not seen from the store
    before = gmail.calls()
    stored = api.get(f"/v1/threads/{tid}?source=store", headers=auth_headers)
    assert stored.status_code == 200 and gmail.calls() == before
    body = stored.get_json()
    assert body["last_synced_at"] and body["messages"] == live["messages"]
    assert {k: body[k] for k in ("id", "subject", "message_count", "participants", "last_message_at")} == {
        k: live[k] for k in ("id", "subject", "message_count", "participants", "last_message_at")}
    error(api.get(f"/v1/threads/{tid}?source=cache", headers=auth_headers), 422, "invalid_request")


def test_thread_context_put_get_replace_413_and_404(api, auth_headers, gmail, connected_mailbox, gmail_runtime):
    root, _, _ = _threads(gmail)
    path = f"/v1/threads/{quote(f'google:{connected_mailbox.id}:{root.thread_id}', safe='')}/context"
    error(api.get(path, headers=auth_headers), 404, "not_found")
    context = {"crm": {"order": 1042, "client": "Globex"}, "tags": [["a", "b"], []], "__name__": "ok"}
    put = api.put(path, headers=auth_headers, json=context)
    assert put.status_code == 200 and put.get_json()["context"] == context and put.get_json()["updated_at"]
    assert api.get(path, headers=auth_headers).get_json() == put.get_json()
    assert api.put(path, headers=auth_headers, json={"new": True}).get_json()["context"] == {"new": True}
    assert api.get(path[: -len("/context")], headers=auth_headers).get_json()["context"] == {"new": True}
    error(api.put(path, headers=auth_headers, json={"blob": "x" * (64 * 1024)}), 413, "payload_too_large")
    error(api.put(path, headers=auth_headers, json=[1, 2]), 400, "invalid_request")
    assert api.get(path, headers=auth_headers).get_json()["context"] == {"new": True}
    stranger = restricted_key(gmail_runtime, tenant="globex")
    error(api.get(path, headers=stranger), 404, "not_found")
    error(api.put(path, headers=stranger, json={"x": 1}), 404, "not_found")


# --- permissions ------------------------------------------------------------------------------------

def test_visible_fields_null_the_rest_everywhere_and_access_info_only_when_restricted(
        api, auth_headers, gmail, connected_mailbox, gmail_runtime):
    root, _, _ = _threads(gmail)
    headers = restricted_key(gmail_runtime, visible_fields=["subject"])
    email = search(api, headers)["emails"][0]
    assert email["subject"] and email["from"] is None and email["snippet"] is None and email["labels"] is None
    assert email["id"] and email["thread_id"] and email["connection_id"] == connected_mailbox.id
    assert email["provider"] == "google"
    info = {"operations": None, "visible_fields": ["subject"], "connection_ids": None}
    assert search(api, headers)["access_info"] == info
    thread = api.get(f"/v1/threads/{email['thread_id']}", headers=headers).get_json()
    assert thread["access_info"] == info and thread["participants"] is None and thread["subject"]
    assert all(m["text"] is None and m["from"] is None and m["subject"] for m in thread["messages"])
    listed = api.get("/v1/threads", headers=headers).get_json()
    assert listed["access_info"] == info and all(t["snippet"] is None and t["subject"] for t in listed["threads"])
    assert api.get(f"/v1/messages/{email['id']}", headers=headers).get_json()["access_info"] == info
    error(api.get(f"/v1/messages/{email['id']}/raw", headers=headers), 403, "forbidden")
    assert "access_info" not in search(api, auth_headers)
    assert "access_info" not in api.get(f"/v1/threads/{email['thread_id']}", headers=auth_headers).get_json()


def test_connection_ids_restriction_hides_the_other_connection(api, auth_headers, gmail, connected_mailbox,
                                                               gmail_runtime):
    other = connect(api, auth_headers, gmail, user_id="u_7", account=OTHER)
    mine = gmail.deliver(mail("mine"), internal_ms=T0)
    theirs = gmail.state.deliver(OTHER, mail("theirs"), internal_ms=T0 + 1)
    headers = restricted_key(gmail_runtime, connection_ids=[connected_mailbox.id])
    body = search(api, headers)
    assert subjects(body) == ["mine"] and body["access_info"]["connection_ids"] == [connected_mailbox.id]
    assert api.get(f"/v1/messages/{mid(connected_mailbox.id, mine)}", headers=headers).status_code == 200
    error(api.get(f"/v1/messages/{mid(other, theirs)}", headers=headers), 404, "not_found")
    error(api.get(f"/v1/threads/google:{other}:{theirs.thread_id}", headers=headers), 404, "not_found")
    error(api.get("/v1/messages", headers=headers, query_string={"connection_id": other}), 404, "not_found")
    error(api.delete(f"/v1/messages/{mid(other, theirs)}", headers=headers), 404, "not_found")
    assert "TRASH" not in gmail.state.mailbox(OTHER).messages[theirs.id].labels


def test_another_tenants_message_and_thread_are_not_found(api, gmail, connected_mailbox, gmail_runtime):
    stored = gmail.deliver(mail("secret"), internal_ms=T0)
    stranger = restricted_key(gmail_runtime, tenant="globex")
    for path in (f"/v1/messages/{mid(connected_mailbox.id, stored)}",
                 f"/v1/messages/{mid(connected_mailbox.id, stored)}/raw",
                 f"/v1/threads/google:{connected_mailbox.id}:{stored.thread_id}"):
        error(api.get(path, headers=stranger), 404, "not_found")
    error(api.patch(f"/v1/messages/{mid(connected_mailbox.id, stored)}", headers=stranger,
                    json={"is_read": True}), 404, "not_found")
    assert "UNREAD" in gmail.mailbox.messages[stored.id].labels
    assert search(api, stranger)["emails"] == []


@pytest.mark.parametrize("params, field", [
    ({"unread": "yes"}, "unread"), ({"has_attachment": "1"}, "has_attachment"),
    ({"include_body": "True"}, "include_body"), ({"after": "yesterday"}, "after"),
    ({"before": "2026-02-07T14:30:00"}, "before"), ({"limit": "0"}, "limit"), ({"limit": "51"}, "limit"),
    ({"limit": "ten"}, "limit"), ({"from": "not an address"}, "from"), ({"to": "a@b, c@d"}, "to"),
    ({"page_token": "garbage"}, "page_token"), ({"q": ["a", "b"]}, "q"),
    ({"after": "2026-02-08T00:00:00Z", "before": "2026-02-07T00:00:00Z"}, "after")])
def test_search_query_validation_is_422_naming_the_parameter(api, auth_headers, connected_mailbox, params, field):
    resp = api.get("/v1/messages", headers=auth_headers, query_string=params)
    assert error(resp, 422, "invalid_request")["details"]["field"] == field


def test_thread_list_limit_and_paging(api, auth_headers, gmail, connected_mailbox):
    for i in range(5):
        gmail.deliver(mail(f"t{i}"), internal_ms=T0 + i * 1000)
    seen, token = [], None
    while True:
        body = api.get("/v1/threads", headers=auth_headers,
                       query_string={"limit": 2, **({"page_token": token} if token else {})}).get_json()
        seen += [t["subject"] for t in body["threads"]]
        token = body["next_page_token"]
        if token is None:
            break
    assert seen == ["t4", "t3", "t2", "t1", "t0"]
    assert error(api.get("/v1/threads", headers=auth_headers, query_string={"limit": 99}), 422,
                 "invalid_request")["details"]["field"] == "limit"
