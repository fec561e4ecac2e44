"""POST /push/gmail over HTTP against the Gmail emulator: each new email stored once and announced once,
whatever the pushes do (repeat, race, arrive out of order, come before the message is readable)."""
from __future__ import annotations

import base64
import dataclasses
import json
import threading
import time
from collections import Counter
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from mailbridge.api.app import create_app
from mailbridge.api.functions import FUNCTIONS
from mailbridge.core.mailbox import provider_for
from mailbridge.core.sync import email_received_id
from mailbridge.errors import CursorExpiredError
from mailbridge.runtime import Runtime
from mailbridge.store.base import CONNECTIONS, EVENTS, MESSAGES, SYNC_CURSORS, THREADS
from tests.integration.gmail_stack import *  # noqa: F401,F403  (fixtures)
from tests.integration.gmail_stack import ACCOUNT, PUBSUB_TOPIC, REDIRECT_URL, USER_ID

HISTORY = "gmail.users.history.list"
GET = "gmail.users.messages.get"


def mail(subject: str, *, sender: str = "alice@example.org", to: str = ACCOUNT, text: str = "Hello",
         html: str | None = "<p>Hello</p>", reply_to: EmailMessage | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = make_msgid(domain="example.org")
    if reply_to is not None:
        msg["In-Reply-To"] = msg["References"] = reply_to["Message-ID"]
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    return bytes(msg)


def envelope(data: dict) -> dict:
    return {"message": {"data": base64.b64encode(json.dumps(data).encode()).decode(), "attributes": {},
                        "messageId": "m-" + str(time.monotonic_ns()), "publishTime": "2026-11-21T11:30:00Z"},
            "subscription": "projects/mailbridge-test/subscriptions/gmail-notifications-push"}


def push(client, history_id, address: str = ACCOUNT):
    return client.post("/push/gmail", json=envelope({"emailAddress": address, "historyId": history_id}))


def received(runtime, connection_id: str) -> list[dict]:
    events = runtime.store.query(EVENTS, [("connection_id", "==", connection_id)])
    return [e["event"] for e in events if e["event_type"] == "email.received"]


def calls_during(gmail, action) -> Counter:
    before = gmail.calls()
    action()
    after = gmail.calls()
    after.subtract(before)
    return +after


def gmail_id(email_id: str) -> str:
    return email_id.rsplit(":", 1)[-1]


@pytest.fixture
def mailbox(api, gmail, connected_mailbox):
    """The connected mailbox, synced once (its cursor set), with no mail yet."""
    assert push(api, gmail.mailbox.history_id).status_code == 204
    return connected_mailbox


def test_a_delivered_message_is_announced_once_with_history_and_one_batch(api, gmail, gmail_runtime, mailbox):
    msg = gmail.deliver(mail("Q1 update", text="Numbers attached", html="<p>Numbers</p>"))
    calls = calls_during(gmail, lambda: _ok(push(api, gmail.mailbox.history_id)))
    assert calls[HISTORY] == 1 and calls["batch"] == 1 and calls[GET] == 1
    assert sum(n for method, n in calls.items() if method != GET) == 2    # round trips: history + batch
    [event] = received(gmail_runtime, mailbox.id)
    assert event["id"] == email_received_id(mailbox.id, msg.id)
    data = event["data"]
    assert data["id"] == f"google:{mailbox.id}:{msg.id}" and data["subject"] == "Q1 update"
    assert data["user_id"] == USER_ID and "Numbers attached" in data["text"] and "<p>Numbers</p>" in data["html"]
    assert data["from"]["email"] == "alice@example.org" and data["is_read"] is False
    stored = gmail_runtime.store.get(MESSAGES, f"{mailbox.id}:{msg.id}")
    assert stored["email"]["subject"] == "Q1 update" and stored["tenant_id"] == "acme"
    thread = gmail_runtime.store.get(THREADS, f"{mailbox.id}:{msg.thread_id}")
    assert thread["message_keys"] == [f"{mailbox.id}:{msg.id}"] and thread["thread"]["message_count"] == 1
    cursor = gmail_runtime.store.get(SYNC_CURSORS, mailbox.id)
    assert int(cursor["history_id"]) == gmail.mailbox.history_id


def test_the_same_push_again_changes_nothing_and_calls_nobody(api, gmail, gmail_runtime, mailbox):
    gmail.deliver(mail("once"))
    hid = gmail.mailbox.history_id
    _ok(push(api, hid))
    calls = calls_during(gmail, lambda: [_ok(push(api, h)) for h in (hid, str(hid), hid - 1)])
    assert calls == Counter()
    assert len(received(gmail_runtime, mailbox.id)) == 1
    assert len(gmail_runtime.store.query(MESSAGES, [("connection_id", "==", mailbox.id)])) == 1


def test_concurrent_pushes_announce_once(api, gmail, gmail_runtime, mailbox):
    msg = gmail.deliver(mail("race"))
    hid = gmail.mailbox.history_id
    answers, start = [], threading.Barrier(4)

    def notify():
        client = api.application.test_client()
        start.wait()
        answers.append(push(client, hid).status_code)

    threads = [threading.Thread(target=notify) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers == [204] * 4
    assert [e["data"]["id"] for e in received(gmail_runtime, mailbox.id)] == [f"google:{mailbox.id}:{msg.id}"]


def test_a_sync_replaying_processed_history_announces_nothing_twice(api, gmail, gmail_runtime, mailbox):
    """Without the lease's help: a sync that starts from an older cursor (as a slow concurrent one
    does) refetches the mail and still stores and announces nothing twice."""
    start = gmail_runtime.store.get(SYNC_CURSORS, mailbox.id)
    msg = gmail.deliver(mail("replayed"))
    _ok(push(api, gmail.mailbox.history_id))
    gmail_runtime.store.put(SYNC_CURSORS, mailbox.id, start)
    calls = calls_during(gmail, lambda: _ok(push(api, gmail.mailbox.history_id)))
    assert calls[HISTORY] == 1 and calls[GET] == 1                   # it did run again
    assert [e["id"] for e in received(gmail_runtime, mailbox.id)] == [email_received_id(mailbox.id, msg.id)]
    assert len(gmail_runtime.store.query(MESSAGES, [("connection_id", "==", mailbox.id)])) == 1
    assert int(gmail_runtime.store.get(SYNC_CURSORS, mailbox.id)["history_id"]) == gmail.mailbox.history_id


def test_out_of_order_pushes_produce_nothing_twice(api, gmail, gmail_runtime, mailbox):
    first = gmail.deliver(mail("first"))
    early = gmail.mailbox.history_id
    second = gmail.deliver(mail("second"))
    _ok(push(api, gmail.mailbox.history_id))
    calls = calls_during(gmail, lambda: _ok(push(api, early)))       # the older notification, late
    assert calls == Counter()
    ids = sorted(gmail_id(e["data"]["id"]) for e in received(gmail_runtime, mailbox.id))
    assert ids == sorted([first.id, second.id])


def test_several_messages_in_one_page_are_fetched_in_one_batch_in_order(api, gmail, gmail_runtime, mailbox):
    first = gmail.deliver(mail("thread start"))
    msgs = [first, gmail.deliver(mail("other")), gmail.deliver(mail("Re: thread start", reply_to=_parsed(first)))]
    calls = calls_during(gmail, lambda: _ok(push(api, gmail.mailbox.history_id)))
    assert calls[HISTORY] == 1 and calls["batch"] == 1 and calls[GET] == 3
    assert [gmail_id(e["data"]["id"]) for e in _by_time(received(gmail_runtime, mailbox.id))] == [m.id for m in msgs]
    assert msgs[2].thread_id == first.thread_id
    thread = gmail_runtime.store.get(THREADS, f"{mailbox.id}:{first.thread_id}")
    assert thread["message_keys"] == [f"{mailbox.id}:{first.id}", f"{mailbox.id}:{msgs[2].id}"]
    assert thread["thread"]["subject"] == "thread start" and thread["thread"]["message_count"] == 2


def test_history_across_pages_is_read_to_the_end_and_fetched_in_one_batch(api, gmail, gmail_runtime, mailbox):
    from mailbridge.providers.gmail import HISTORY_PAGE_SIZE
    msgs = [gmail.deliver(mail(f"bulk {i}")) for i in range(40)]
    box = gmail.mailbox
    for i in range(HISTORY_PAGE_SIZE // 2 + 1):     # label records push the history past one page
        box.modify(msgs[i % 40].id, ["STARRED"], [])
        box.modify(msgs[i % 40].id, [], ["STARRED"])
    calls = calls_during(gmail, lambda: _ok(push(api, box.history_id)))
    assert calls[HISTORY] == 2 and calls["batch"] == 1 and calls[GET] == 40
    events = received(gmail_runtime, mailbox.id)
    assert sorted(gmail_id(e["data"]["id"]) for e in events) == sorted(m.id for m in msgs)
    assert int(gmail_runtime.store.get(SYNC_CURSORS, mailbox.id)["history_id"]) == box.history_id


def test_label_changes_in_the_mailbox_update_the_stored_copy(api, gmail, gmail_runtime, mailbox):
    msg = gmail.deliver(mail("labels"))
    _ok(push(api, gmail.mailbox.history_id))
    gmail.mailbox.modify(msg.id, ["STARRED"], ["UNREAD"])
    calls = calls_during(gmail, lambda: _ok(push(api, gmail.mailbox.history_id)))
    assert calls == Counter({HISTORY: 1})
    email = gmail_runtime.store.get(MESSAGES, f"{mailbox.id}:{msg.id}")["email"]
    assert email["is_read"] is True and "STARRED" in email["labels"] and "UNREAD" not in email["labels"]
    assert len(received(gmail_runtime, mailbox.id)) == 1


def test_mail_the_account_sent_and_drafts_are_not_announced(api, gmail, gmail_runtime, mailbox):
    sent = gmail.mailbox.add(mail("from me", sender=ACCOUNT, to="bob@example.org"), ["SENT"])
    draft = gmail.mailbox.add(mail("unfinished", sender=ACCOUNT, to="bob@example.org"), ["DRAFT"])
    to_self = gmail.mailbox.add(mail("note to self", sender=ACCOUNT), ["SENT", "INBOX", "UNREAD"])
    calls = calls_during(gmail, lambda: _ok(push(api, gmail.mailbox.history_id)))
    assert calls[GET] == 2                          # the draft is not even fetched
    assert [gmail_id(e["data"]["id"]) for e in received(gmail_runtime, mailbox.id)] == [to_self.id]
    assert gmail_runtime.store.get(MESSAGES, f"{mailbox.id}:{sent.id}") is not None   # stored, not announced
    assert gmail_runtime.store.get(MESSAGES, f"{mailbox.id}:{draft.id}") is None


def test_an_expired_history_id_resyncs_and_announces_only_unseen_mail(api, gmail, gmail_runtime, mailbox):
    seen = gmail.deliver(mail("seen before"))
    _ok(push(api, gmail.mailbox.history_id))
    gmail.mailbox.retention = 2                    # Gmail forgets old history: the cursor expires
    old = gmail.deliver(mail("dated before the newest stored"), internal_ms=int((time.time() - 86400) * 1000))
    fresh = [gmail.deliver(mail(f"while expired {i}")) for i in range(3)]
    assert int(gmail_runtime.store.get(SYNC_CURSORS, mailbox.id)["history_id"]) < gmail.mailbox.pruned_through
    calls = calls_during(gmail, lambda: _ok(push(api, gmail.mailbox.history_id)))
    assert calls[HISTORY] == 1 and calls["gmail.users.getProfile"] == 1
    assert calls["gmail.users.messages.list"] == 1 and calls["batch"] == 1
    ids = Counter(gmail_id(e["data"]["id"]) for e in received(gmail_runtime, mailbox.id))
    assert ids == Counter([seen.id] + [m.id for m in fresh]) and old.id not in ids
    assert int(gmail_runtime.store.get(SYNC_CURSORS, mailbox.id)["history_id"]) == gmail.mailbox.history_id
    later = gmail.deliver(mail("after the resync"))
    calls = calls_during(gmail, lambda: _ok(push(api, gmail.mailbox.history_id)))
    assert calls[HISTORY] == 1 and "gmail.users.messages.list" not in calls   # back on history
    assert later.id in {gmail_id(e["data"]["id"]) for e in received(gmail_runtime, mailbox.id)}


def test_a_message_not_yet_readable_is_retried_not_lost(api, gmail, gmail_runtime, mailbox):
    hidden = gmail.deliver(mail("slow"), delay_visible_ms=60_000)
    visible = gmail.deliver(mail("fast"))
    hid = gmail.mailbox.history_id
    resp = push(api, hid)
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "provider_unavailable"
    assert [gmail_id(e["data"]["id"]) for e in received(gmail_runtime, mailbox.id)] == [visible.id]
    assert int(gmail_runtime.store.get(SYNC_CURSORS, mailbox.id)["history_id"]) < hidden.history_id
    assert push(api, hid).status_code == 503       # Pub/Sub's redelivery, still too early
    real_clock = gmail.state.clock
    gmail.state.clock = lambda: real_clock() + 120  # the message becomes readable
    try:
        _ok(push(api, hid))
    finally:
        gmail.state.clock = real_clock
    ids = Counter(gmail_id(e["data"]["id"]) for e in received(gmail_runtime, mailbox.id))
    assert ids == Counter([visible.id, hidden.id])
    _ok(push(api, hid))
    assert len(received(gmail_runtime, mailbox.id)) == 2


def test_a_message_unreadable_for_an_hour_is_given_up_so_the_mailbox_is_not_stuck(
        api, gmail, gmail_runtime, mailbox):
    """The incident this guards against: one history entry whose message never becomes readable made
    every later push fail and refetch it, forever."""
    poison = gmail.deliver(mail("never readable"), delay_visible_ms=10**9)
    _status(push(api, gmail.mailbox.history_id), 503)
    cursor = gmail_runtime.store.get(SYNC_CURSORS, mailbox.id)
    assert list(cursor["waiting"]) == [poison.id]
    cursor["waiting"][poison.id] -= 2 * 3600       # first seen two hours ago
    gmail_runtime.store.put(SYNC_CURSORS, mailbox.id, cursor)
    after = gmail.deliver(mail("next one"))
    _ok(push(api, gmail.mailbox.history_id))
    assert [gmail_id(e["data"]["id"]) for e in received(gmail_runtime, mailbox.id)] == [after.id]
    cursor = gmail_runtime.store.get(SYNC_CURSORS, mailbox.id)
    assert int(cursor["history_id"]) == gmail.mailbox.history_id and not cursor["waiting"]


def test_an_unknown_mailbox_is_acknowledged_and_ignored(api, gmail, gmail_runtime, mailbox):
    gmail.deliver(mail("not for them"))
    calls = calls_during(gmail, lambda: _ok(push(api, gmail.mailbox.history_id, "nobody@example.net")))
    assert calls == Counter() and received(gmail_runtime, mailbox.id) == []


def test_malformed_pushes_are_acknowledged_and_change_nothing(api, gmail, gmail_runtime, mailbox):
    gmail.deliver(mail("waiting"))
    for body in ({"message": {"data": "%%%", "messageId": "1"}}, envelope({"historyId": 5}),
                 envelope({"emailAddress": ACCOUNT, "historyId": "12ab"}),
                 envelope({"emailAddress": ACCOUNT, "historyId": True}), {"nothing": 1}):
        assert api.post("/push/gmail", json=body).status_code == 204
    assert received(gmail_runtime, mailbox.id) == []


def test_every_connection_of_the_address_is_synced(api, gmail, gmail_runtime, auth_headers, mailbox):
    other = _connect(api, gmail, auth_headers, "u_43")
    _ok(push(api, gmail.mailbox.history_id))        # sets the second connection's cursor
    msg = gmail.deliver(mail("for both"))
    _ok(push(api, gmail.mailbox.history_id))
    assert [e["id"] for e in received(gmail_runtime, mailbox.id)] == [email_received_id(mailbox.id, msg.id)]
    assert [e["id"] for e in received(gmail_runtime, other)] == [email_received_id(other, msg.id)]
    assert received(gmail_runtime, other)[0]["data"]["user_id"] == "u_43"


def test_a_revoked_grant_puts_the_connection_in_error_and_the_push_is_acknowledged(
        api, gmail, gmail_runtime, auth_headers, mailbox):
    gmail.deliver(mail("after revoke"))
    gmail.revoke()
    _ok(push(api, gmail.mailbox.history_id))
    conn = api.get(f"/v1/connections/{mailbox.id}", headers=auth_headers).get_json()
    assert conn["status"] == "error" and conn["error"]["code"] == "reauth_required"
    calls = calls_during(gmail, lambda: _ok(push(api, gmail.mailbox.history_id)))
    assert calls == Counter()                       # a known-revoked grant is not tried again
    assert received(gmail_runtime, mailbox.id) == []


def test_a_successful_sync_marks_the_connection_healthy(api, gmail, gmail_runtime, auth_headers, mailbox):
    gmail.deliver(mail("health"))
    _ok(push(api, gmail.mailbox.history_id))
    conn = api.get(f"/v1/connections/{mailbox.id}", headers=auth_headers).get_json()
    assert conn["status"] == "healthy" and conn["last_sync_at"] is not None


def test_gmail_failures_answer_503_so_pubsub_redelivers(api, gmail, gmail_runtime, mailbox):
    gmail.deliver(mail("later"))
    gmail.add_fault(HISTORY, 503, count=4)          # every attempt of the adapter's retries
    resp = push(api, gmail.mailbox.history_id)
    assert resp.status_code == 503 and received(gmail_runtime, mailbox.id) == []
    assert resp.headers.get("Retry-After")
    _ok(push(api, gmail.mailbox.history_id))
    assert len(received(gmail_runtime, mailbox.id)) == 1


def test_a_push_without_a_token_is_refused_when_push_auth_is_on(gmail_runtime, gmail, mailbox):
    settings = dataclasses.replace(gmail_runtime.settings, push_auth="oidc", push_service_account="push@x.iam")
    runtime = Runtime(settings, store=gmail_runtime.store, secrets=gmail_runtime.secrets, bus=gmail_runtime.bus)
    client = create_app(list(FUNCTIONS), runtime).test_client()
    gmail.deliver(mail("guarded"))
    calls = calls_during(gmail, lambda: _status(push(client, gmail.mailbox.history_id), 401))
    assert calls == Counter() and received(gmail_runtime, mailbox.id) == []


def test_adapter_changes_watch_and_stop(gmail, gmail_runtime, mailbox):
    provider = provider_for(gmail_runtime, gmail_runtime.store.get(CONNECTIONS, mailbox.id))
    start = str(gmail.mailbox.history_id)
    msg = gmail.deliver(mail("adapter"))
    gmail.mailbox.modify(msg.id, ["STARRED"], ["UNREAD"])
    gmail.mailbox.modify(msg.id, [], ["STARRED"])
    changes = provider.changes(start)
    assert [a.id for a in changes.added] == [msg.id] and changes.added[0].resume_from == start
    assert "INBOX" in changes.added[0].labels and changes.cursor == str(gmail.mailbox.history_id)
    assert changes.labels[msg.id].removed == {"UNREAD", "STARRED"} and not changes.labels[msg.id].added
    watch = provider.watch(PUBSUB_TOPIC)
    assert watch["history_id"] == str(gmail.mailbox.history_id)
    now = time.time()
    assert 6.9 * 86400 < watch["expires_at"] - now <= 7 * 86400
    assert gmail.mailbox.watch["topicName"] == PUBSUB_TOPIC
    provider.stop()
    assert gmail.mailbox.watch is None
    gmail.mailbox.retention = 1
    gmail.deliver(mail("prune"))
    with pytest.raises(CursorExpiredError):
        provider.changes(start)
    an_hour_ago = time.time() - 3600
    assert provider.recent_message_ids(an_hour_ago, 1) == [gmail.mailbox.visible()[0].id]


# --- helpers ------------------------------------------------------------------------------------

def _ok(resp):
    assert resp.status_code == 204, resp.get_data(as_text=True)
    return resp


def _status(resp, status: int):
    assert resp.status_code == status, resp.get_data(as_text=True)


def _by_time(events: list[dict]) -> list[dict]:
    return sorted(events, key=lambda e: (e["data"]["received_at"], e["data"]["id"]))


def _parsed(stored) -> EmailMessage:
    from email import message_from_bytes, policy
    return message_from_bytes(stored.raw, policy=policy.default)


def _connect(api, gmail, auth_headers, user_id: str) -> str:
    """The same address connected for another user of the tenant: a second connection."""
    from urllib.parse import parse_qs, urlsplit
    resp = api.post("/v1/connect", headers=auth_headers, json={
        "provider": "google", "user_id": user_id, "redirect_url": REDIRECT_URL, "backfill": "none"})
    status, headers = gmail.get(resp.get_json()["url"])
    callback = urlsplit(headers["Location"])
    done = api.get(f"{callback.path}?{callback.query}")
    return parse_qs(urlsplit(done.headers["Location"]).query)["connection_id"][0]
