"""GmailProvider against the in-process Gmail emulator through the real googleapiclient: every method,
round trips per operation (the emulator's call counts), retries, token refresh, uploads, batch, TLS."""
from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import secrets
import ssl
import threading
import urllib.parse
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

import pytest
import requests
from werkzeug.serving import make_server

from dev.google_emulator import EmulatorState, create_app, run_in_thread
from mailbridge.config import DEFAULT_GOOGLE_SCOPES, Settings
from mailbridge.errors import (ForbiddenError, InvalidRequestError, NotFoundError, PayloadTooLargeError,
                               ProviderUnavailableError, ReauthRequiredError)
from mailbridge.providers.base import SearchQuery
from mailbridge.providers.gmail import FULL_SCOPE, GmailProvider, RetryPolicy

ACCOUNT = "me@example.com"
CLIENT_ID, CLIENT_SECRET = "test-client", "test-secret"
MODIFY_SCOPE = DEFAULT_GOOGLE_SCOPES
REDIRECT = "http://127.0.0.1/cb"
T0 = 1_700_000_000  # epoch seconds of the first delivered message


class EmulatorTokens:
    """The connection's `access_token(force=False)` callable, backed by the emulator's real /token."""

    def __init__(self, base_url: str, scopes: tuple[str, ...]):
        self.base_url, self.forced = base_url, 0
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies, no REQUESTS_CA_BUNDLE: 127.0.0.1 only
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        answer = self.session.get(base_url + "/o/oauth2/v2/auth", allow_redirects=False, params={
            "client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code", "scope": " ".join(scopes),
            "access_type": "offline", "login_hint": ACCOUNT, "code_challenge": challenge,
            "code_challenge_method": "S256"})
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(answer.headers["Location"]).query)["code"][0]
        body = self._token({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                            "code_verifier": verifier})
        self.refresh_token, self.token = body["refresh_token"], body["access_token"]

    def _token(self, form: dict) -> dict:
        answer = self.session.post(self.base_url + "/token",
                                   data={**form, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
        if answer.status_code == 400 and answer.json().get("error") == "invalid_grant":
            raise ReauthRequiredError("the grant is revoked")
        answer.raise_for_status()
        return answer.json()

    def __call__(self, force: bool = False) -> str:
        if force:
            self.forced += 1
            self.token = self._token({"grant_type": "refresh_token", "refresh_token": self.refresh_token})[
                "access_token"]
        return self.token


class Gmail:
    """The emulator for one test: its state, base URL, and helpers to fill it and read its counts."""

    def __init__(self, state: EmulatorState, base_url: str):
        self.state, self.base_url = state, base_url
        self.sleeps: list[float] = []

    def provider(self, scopes=(MODIFY_SCOPE,), endpoint=None, ca_bundle=None, tokens=None, **retry):
        tokens = tokens or EmulatorTokens(self.base_url, scopes)
        settings = Settings(gmail_api_endpoint=endpoint or self.base_url, ca_bundle=ca_bundle)
        policy = RetryPolicy(sleep=self.sleeps.append, **retry)  # record sleeps instead of waiting
        provider = GmailProvider("conn_1", tokens, settings, scopes=scopes, retry=policy)
        self.state.calls.clear()  # count only what the adapter does from here on
        return provider

    def deliver(self, subject: str, *, minute: int = 0, labels=None, **kw) -> tuple[str, str, bytes]:
        raw = message(subject, minute=minute, **kw)
        stored = self.state.deliver(ACCOUNT, raw, labels=labels, internal_ms=(T0 + 60 * minute) * 1000)
        return stored.id, stored.thread_id, raw

    def calls(self) -> dict[str, int]:
        return {k: v for k, v in self.state.snapshot()["calls"].items() if not k.startswith("oauth2.")}


def message(subject: str, *, minute: int = 0, sender="Jane Boss <boss@example.com>", to=ACCOUNT,
            cc=None, body="hello there", in_reply_to=None, attachment: tuple[str, bytes] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    if cc:
        msg["Cc"] = cc
    msg["Date"] = format_datetime(datetime.datetime.fromtimestamp(T0 + 60 * minute, datetime.timezone.utc))
    msg["Message-ID"] = make_msgid(domain="example.com")
    if in_reply_to:
        msg["In-Reply-To"] = msg["References"] = in_reply_to
    msg.set_content(body)
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="octet-stream", filename=attachment[0])
    return msg.as_bytes(policy=SMTP)


def message_id_of(raw: bytes) -> str:
    return next(line.split(b":", 1)[1].strip().decode() for line in raw.split(b"\r\n")
                if line.lower().startswith(b"message-id:"))


@pytest.fixture(scope="module")
def server():
    state = EmulatorState()
    state.add_client(CLIENT_ID, CLIENT_SECRET)
    state.add_account(ACCOUNT)
    with run_in_thread(state) as (base_url, _stop):
        yield state, base_url


@pytest.fixture
def gmail(server) -> Gmail:
    state, base_url = server
    state.reset()
    state.max_json_body, state.max_upload_body = 5 * 1024 * 1024, 35 * 1024 * 1024
    return Gmail(state, base_url)


# ---- reads ---------------------------------------------------------------------------------------

def test_profile_returns_address_and_history_id_in_one_call(gmail):
    provider = gmail.provider()
    profile = provider.profile()
    assert profile["email"] == ACCOUNT and profile["history_id"].isdigit()
    assert gmail.calls() == {"gmail.users.getProfile": 1}
    assert (provider.stats.calls, provider.stats.quota_units) == (1, 1)


def test_get_message_full_and_metadata_take_one_call_each(gmail):
    mid, tid, raw = gmail.deliver("Q1 update", body="the body text")
    provider = gmail.provider()
    full = provider.get_message(mid)
    assert full["id"] == f"google:conn_1:{mid}" and full["thread_id"] == f"google:conn_1:{tid}"
    assert full["subject"] == "Q1 update" and full["text"].strip() == "the body text"
    assert full["from"] == {"email": "boss@example.com", "name": "Jane Boss"} and full["is_read"] is False
    meta = provider.get_message(mid, include_body=False)
    assert meta["subject"] == "Q1 update" and meta["text"] is None
    assert meta["message_id"] == message_id_of(raw)
    assert gmail.calls() == {"gmail.users.messages.get": 2}


def test_unknown_message_is_not_found(gmail):
    provider = gmail.provider()
    with pytest.raises(NotFoundError, match="0123456789abcdef"):
        provider.get_message("0123456789abcdef")
    assert gmail.calls() == {"gmail.users.messages.get": 1}  # a 404 is not retried


def test_search_is_one_list_and_one_batch_newest_first(gmail):
    ids = [gmail.deliver(f"report {n}", minute=n)[0] for n in range(5)]
    gmail.deliver("unrelated", minute=9)
    provider = gmail.provider()
    page = provider.search(SearchQuery(subject="report"), limit=3, page_token=None, include_body=False)
    assert [e["id"] for e in page.items] == [f"google:conn_1:{i}" for i in ids[::-1][:3]]
    assert all(e["text"] is None and e["subject"].startswith("report") for e in page.items)
    assert page.next_page_token
    assert gmail.calls() == {"gmail.users.messages.list": 1, "batch": 1, "gmail.users.messages.get": 3}
    assert (provider.stats.calls, provider.stats.quota_units) == (2, 5 + 3 * 5)
    rest = provider.search(SearchQuery(subject="report"), limit=3, page_token=page.next_page_token,
                           include_body=True)
    assert [e["id"] for e in rest.items] == [f"google:conn_1:{i}" for i in ids[1::-1]]
    assert rest.next_page_token is None and rest.items[0]["text"].strip() == "hello there"


def test_search_with_no_match_makes_no_batch(gmail):
    gmail.deliver("something")
    provider = gmail.provider()
    page = provider.search(SearchQuery(q="nothing-matches-this"), limit=10, page_token=None, include_body=False)
    assert page.items == [] and gmail.calls() == {"gmail.users.messages.list": 1}


def test_search_operator_injection_matches_only_literal_text(gmail):
    from_boss, _, _ = gmail.deliver("hello")
    literal, _, _ = gmail.deliver("notes", sender="other@example.com", body="please search from:boss OR x now")
    provider = gmail.provider()
    for attack in ("from:boss OR x", 'x" OR from:boss "', "{from:boss from:other}"):
        page = provider.search(SearchQuery(q=attack), limit=10, page_token=None, include_body=False)
        ids = [e["id"].rsplit(":", 1)[1] for e in page.items]
        assert from_boss not in ids, attack
    page = provider.search(SearchQuery(q="from:boss OR x"), limit=10, page_token=None, include_body=False)
    assert [e["id"] for e in page.items] == [f"google:conn_1:{literal}"]
    page = provider.search(SearchQuery(subject='hello" OR subject:"notes'), limit=10, page_token=None,
                           include_body=False)
    assert page.items == []


def test_search_filters_reach_gmail(gmail):
    old, _, _ = gmail.deliver("old", minute=0)
    new, _, _ = gmail.deliver("new", minute=10, sender="ann@example.com", attachment=("a.bin", b"\x00\x01"))
    read, _, _ = gmail.deliver("read", minute=20, labels=["INBOX"])
    provider = gmail.provider()

    def found(**filters) -> set[str]:
        page = provider.search(SearchQuery(**filters), limit=50, page_token=None, include_body=False)
        return {e["id"].rsplit(":", 1)[1] for e in page.items}

    assert found(from_="ann@example.com") == {new}
    assert found(unread=False) == {read} and found(unread=True) == {old, new}
    assert found(has_attachment=True) == {new} and found(has_attachment=False) == {old, read}
    assert found(after=T0 + 300) == {new, read} and found(before=T0 + 300) == {old}
    assert found(label="INBOX") == {old, new, read}


def test_get_messages_is_one_batch_in_order_leaving_out_missing(gmail):
    a, _, _ = gmail.deliver("a", minute=1)
    b, _, _ = gmail.deliver("b", minute=2)
    provider = gmail.provider()
    emails = provider.get_messages([b, "0123456789abcdef", a, b], include_body=True)
    assert [e["subject"] for e in emails] == ["b", "a"]
    assert gmail.calls() == {"batch": 1, "gmail.users.messages.get": 3}


def test_get_raw_returns_the_exact_bytes(gmail):
    mid, _, raw = gmail.deliver("raw one", body="line one\nline two")
    provider = gmail.provider()
    assert provider.get_raw(mid) == raw
    assert gmail.calls() == {"gmail.users.messages.get": 1}


def test_get_attachment_is_two_calls_with_the_listed_name_and_type(gmail):
    data = bytes(range(256)) * 40
    mid, _, _ = gmail.deliver("with file", attachment=("report.bin", data))
    provider = gmail.provider()
    listed = provider.get_message(mid)["attachments"]
    assert len(listed) == 1
    gmail.state.calls.clear()
    content = provider.get_attachment(mid, listed[0]["id"])
    assert content.data == data and content.filename == "report.bin"
    assert content.content_type == "application/octet-stream"
    assert gmail.calls() == {"gmail.users.messages.get": 1, "gmail.users.messages.attachments.get": 1}
    with pytest.raises(NotFoundError):
        provider.get_attachment(mid, "9.9")


def test_get_attachment_with_inline_data_needs_one_call(gmail):
    mid, _, _ = gmail.deliver("plain", body="inline body")
    provider = gmail.provider()
    content = provider.get_attachment(mid, "")  # the single-part message's root part carries its data
    assert content.data.strip() == b"inline body" and content.content_type == "text/plain"
    assert gmail.calls() == {"gmail.users.messages.get": 1}


# ---- writes --------------------------------------------------------------------------------------

def test_modify_marks_read_and_labels_in_two_calls(gmail):
    mid, _, _ = gmail.deliver("to modify")
    provider = gmail.provider()
    email = provider.modify(mid, add_labels=["STARRED"], remove_labels=["UNREAD"])
    assert email["is_read"] is True and "STARRED" in email["labels"] and "UNREAD" not in email["labels"]
    assert gmail.calls() == {"gmail.users.messages.modify": 1, "gmail.users.messages.get": 1}
    assert set(gmail.state.mailbox(ACCOUNT).messages[mid].labels) >= {"STARRED", "INBOX"}


def test_modify_with_an_unknown_label_is_invalid_request(gmail):
    mid, _, _ = gmail.deliver("bad label")
    provider = gmail.provider()
    with pytest.raises(InvalidRequestError) as err:
        provider.modify(mid, add_labels=["NO_SUCH_LABEL"])
    assert err.value.details["provider_status"] == 400
    assert gmail.calls() == {"gmail.users.messages.modify": 1}


def test_trash_moves_to_trash_in_one_call(gmail):
    mid, _, _ = gmail.deliver("to trash")
    provider = gmail.provider()
    provider.trash(mid)
    assert "TRASH" in gmail.state.mailbox(ACCOUNT).messages[mid].labels
    assert gmail.calls() == {"gmail.users.messages.trash": 1}


def test_permanent_delete_without_full_scope_is_forbidden_before_any_call(gmail):
    mid, _, _ = gmail.deliver("keep me")
    provider = gmail.provider(scopes=(MODIFY_SCOPE,))
    with pytest.raises(ForbiddenError, match="https://mail.google.com/") as err:
        provider.delete(mid)
    assert err.value.details == {"scope": FULL_SCOPE}
    assert gmail.calls() == {} and mid in gmail.state.mailbox(ACCOUNT).messages


def test_permanent_delete_with_full_scope(gmail):
    mid, _, _ = gmail.deliver("delete me")
    provider = gmail.provider(scopes=(FULL_SCOPE,))
    provider.delete(mid)
    assert mid not in gmail.state.mailbox(ACCOUNT).messages
    assert gmail.calls() == {"gmail.users.messages.delete": 1}


def test_send_small_message_is_one_json_call(gmail):
    raw = message("sent small", sender=ACCOUNT, to="friend@example.com")
    provider = gmail.provider()
    sent = provider.send(raw)
    assert gmail.calls() == {"gmail.users.messages.send": 1}
    assert (provider.stats.calls, provider.stats.quota_units) == (1, 100)
    stored = gmail.state.mailbox(ACCOUNT).messages[sent.id]
    assert stored.raw == raw and stored.thread_id == sent.thread_id and "SENT" in stored.labels


def test_send_reply_joins_the_thread(gmail):
    first, thread, first_raw = gmail.deliver("Question")
    reply = message("Re: Question", sender=ACCOUNT, to="boss@example.com", in_reply_to=message_id_of(first_raw))
    sent = gmail.provider().send(reply, thread_id=thread)
    assert sent.thread_id == thread


def _big_message(size: int, **kw) -> bytes:
    # 8-bit bytes in the body: the upload must carry them byte for byte.
    msg = message("big one", sender=ACCOUNT, to="friend@example.com", **kw)
    blob = secrets.token_bytes(size)
    head, _, _ = msg.partition(b"\r\n\r\n")
    return head.replace(b"Content-Transfer-Encoding: 7bit", b"Content-Transfer-Encoding: 8bit") \
        + b"\r\n\r\n" + blob.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"


def test_large_send_with_thread_goes_through_the_upload_endpoint(gmail):
    first, thread, first_raw = gmail.deliver("big one")
    raw = _big_message(6 * 1024 * 1024, in_reply_to=message_id_of(first_raw))
    provider = gmail.provider()
    sent = provider.send(raw, thread_id=thread)  # base64 JSON would be ~8 MB: the emulator's JSON limit is 5 MiB
    assert sent.thread_id == thread
    assert gmail.calls() == {"gmail.users.messages.send": 1}
    assert gmail.state.mailbox(ACCOUNT).messages[sent.id].raw == raw


def test_large_send_without_thread_is_a_media_upload(gmail):
    raw = _big_message(4 * 1024 * 1024)
    provider = gmail.provider()
    sent = provider.send(raw)
    assert gmail.calls() == {"gmail.users.messages.send": 1}
    assert gmail.state.mailbox(ACCOUNT).messages[sent.id].raw == raw


def test_large_send_meets_the_upload_limit_not_the_json_one(gmail):
    gmail.state.max_json_body, gmail.state.max_upload_body = 100 * 1024 * 1024, 4 * 1024 * 1024
    provider = gmail.provider()
    with pytest.raises(PayloadTooLargeError):
        provider.send(_big_message(6 * 1024 * 1024))
    assert gmail.calls() == {"gmail.users.messages.send": 1}


# ---- threads -------------------------------------------------------------------------------------

def _conversation(gmail) -> tuple[str, list[str]]:
    first, thread, raw1 = gmail.deliver("Plan", minute=1, cc="Carl <carl@example.com>", labels=["INBOX"])
    second, _, raw2 = gmail.deliver("Re: Plan", minute=2, sender="Ann <ann@example.com>",
                                    to="Me <ME@example.com>", body="second words", in_reply_to=message_id_of(raw1))
    return thread, [first, second]


def test_list_threads_is_one_list_and_one_batch_of_summaries(gmail):
    thread, ids = _conversation(gmail)
    other, _, _ = gmail.deliver("Lonely", minute=5)
    provider = gmail.provider()
    page = provider.list_threads(q=None, limit=10, page_token=None)
    assert gmail.calls() == {"gmail.users.threads.list": 1, "batch": 1, "gmail.users.threads.get": 2}
    assert (provider.stats.calls, provider.stats.quota_units) == (2, 10 + 2 * 10)
    assert [t["id"] for t in page.items] == [f"google:conn_1:{other}", f"google:conn_1:{thread}"]
    summary = page.items[1]
    assert summary["subject"] == "Plan" and summary["snippet"].startswith("second words")
    assert summary["message_count"] == 2 and summary["is_unread"] is True
    assert summary["last_message_at"] == "2023-11-14T22:15:20Z"
    assert summary["labels"] == ["INBOX", "UNREAD"]
    assert summary["participants"] == [
        {"email": "boss@example.com", "name": "Jane Boss"}, {"email": ACCOUNT, "name": "Me"},
        {"email": "carl@example.com", "name": "Carl"}, {"email": "ann@example.com", "name": "Ann"}]


def test_list_threads_q_is_literal(gmail):
    _conversation(gmail)
    provider = gmail.provider()
    assert provider.list_threads(q="from:ann", limit=10, page_token=None).items == []
    assert len(provider.list_threads(q="second words", limit=10, page_token=None).items) == 1


def test_get_thread_is_one_call_oldest_first_with_bodies(gmail):
    thread, ids = _conversation(gmail)
    provider = gmail.provider()
    got = provider.get_thread(thread)
    assert gmail.calls() == {"gmail.users.threads.get": 1}
    assert got["id"] == f"google:conn_1:{thread}" and got["provider"] == "google"
    assert [m["id"] for m in got["messages"]] == [f"google:conn_1:{i}" for i in ids]
    assert got["messages"][1]["text"].strip() == "second words" and got["subject"] == "Plan"
    assert got["message_count"] == 2 and len(got["participants"]) == 4
    with pytest.raises(NotFoundError):
        provider.get_thread("0123456789abcdef")


# ---- retries, tokens, errors ---------------------------------------------------------------------

def test_429_with_retry_after_is_waited_out_then_succeeds(gmail):
    mid, _, _ = gmail.deliver("throttled")
    gmail.state.add_fault("gmail.users.messages.get", 429, count=1, retry_after=2)
    provider = gmail.provider()
    assert provider.get_message(mid)["subject"] == "throttled"
    assert gmail.calls() == {"gmail.users.messages.get": 2}
    assert len(gmail.sleeps) == 1 and 2 <= gmail.sleeps[0] <= 4


def test_persistent_503_gives_provider_unavailable_with_retry_after(gmail):
    mid, _, _ = gmail.deliver("down")
    gmail.state.add_fault("gmail.users.messages.get", 503, count=100)
    provider = gmail.provider()
    with pytest.raises(ProviderUnavailableError) as err:
        provider.get_message(mid)
    assert err.value.retry_after >= 1 and err.value.details["provider_status"] == 503
    assert gmail.calls() == {"gmail.users.messages.get": 4}
    assert len(gmail.sleeps) == 3 and sum(gmail.sleeps) <= 8
    assert gmail.sleeps[0] < gmail.sleeps[2]  # exponential


def test_retry_after_beyond_the_cap_fails_at_once(gmail):
    mid, _, _ = gmail.deliver("long wait")
    gmail.state.add_fault("gmail.users.messages.get", 429, count=1, retry_after=120)
    provider = gmail.provider()
    with pytest.raises(ProviderUnavailableError) as err:
        provider.get_message(mid)
    assert err.value.retry_after == 120 and gmail.calls() == {"gmail.users.messages.get": 1}
    assert gmail.sleeps == []


def test_send_is_not_repeated_after_a_500(gmail):
    gmail.state.add_fault("gmail.users.messages.send", 500, count=1)
    provider = gmail.provider()
    with pytest.raises(ProviderUnavailableError):
        provider.send(message("once", sender=ACCOUNT, to="friend@example.com"))
    assert gmail.calls() == {"gmail.users.messages.send": 1}


def test_send_is_retried_after_a_429(gmail):
    gmail.state.add_fault("gmail.users.messages.send", 429, count=1)
    provider = gmail.provider()
    provider.send(message("twice", sender=ACCOUNT, to="friend@example.com"))
    assert gmail.calls() == {"gmail.users.messages.send": 2}


def test_batch_retries_only_the_failed_sub_requests(gmail):
    ids = [gmail.deliver(f"m{n}", minute=n)[0] for n in range(3)]
    gmail.state.add_fault("gmail.users.messages.get", 503, count=1)  # the first sub-request fails once
    provider = gmail.provider()
    emails = provider.get_messages(ids, include_body=False)
    assert [e["subject"] for e in emails] == ["m0", "m1", "m2"]
    assert gmail.calls() == {"batch": 2, "gmail.users.messages.get": 4}
    assert provider.stats.by_method == {"batch": 2, "gmail.users.messages.get": 4}


def test_401_forces_one_token_refresh_and_retries(gmail):
    mid, _, _ = gmail.deliver("refresh me")
    provider = gmail.provider()
    tokens = provider._gmail._access_token
    gmail.state.expire_access_tokens(ACCOUNT)
    assert provider.get_message(mid)["subject"] == "refresh me"
    assert tokens.forced == 1 and gmail.calls() == {"gmail.users.messages.get": 2}


def test_401_inside_a_batch_is_resent_once_with_a_refreshed_token(gmail):
    ids = [gmail.deliver(f"m{n}", minute=n)[0] for n in range(2)]
    provider = gmail.provider()
    tokens = provider._gmail._access_token
    gmail.state.expire_access_tokens(ACCOUNT)
    assert len(provider.get_messages(ids, include_body=False)) == 2
    assert tokens.forced == 1 and gmail.calls() == {"batch": 2, "gmail.users.messages.get": 4}


def test_credentials_gmail_keeps_refusing_mean_reauth(gmail):
    mid, _, _ = gmail.deliver("bad token")
    provider = gmail.provider(tokens=lambda force=False: "ya29.not-a-token")
    with pytest.raises(ReauthRequiredError) as err:
        provider.get_message(mid)
    assert gmail.calls() == {"gmail.users.messages.get": 2}
    chain, exc = [], err.value
    while exc is not None:  # neither our error nor the library's it was raised from holds the token
        chain.append(exc)
        exc = exc.__cause__
    assert len(chain) == 2 and not any("not-a-token" in f"{e} {e!r}" for e in chain)


def test_gmail_refusing_a_scope_is_forbidden(gmail):
    mid, _, _ = gmail.deliver("scoped")
    tokens = EmulatorTokens(gmail.base_url, (MODIFY_SCOPE,))  # the grant lacks the full scope...
    provider = gmail.provider(scopes=(FULL_SCOPE,), tokens=tokens)  # ...whatever the connection claims
    with pytest.raises(ForbiddenError):
        provider.delete(mid)
    assert gmail.calls() == {"gmail.users.messages.delete": 1} and mid in gmail.state.mailbox(ACCOUNT).messages


def test_threads_share_the_service_safely(gmail):
    ids = [gmail.deliver(f"parallel {n}", minute=n)[0] for n in range(8)]
    provider = gmail.provider()
    results, errors = {}, []

    def read(mid: str) -> None:
        try:
            results[mid] = provider.get_message(mid)["subject"]
        except Exception as exc:  # collected, asserted below
            errors.append(exc)

    workers = [threading.Thread(target=read, args=(mid,)) for mid in ids]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == [] and results == {mid: f"parallel {n}" for n, mid in enumerate(ids)}
    assert provider.stats.by_method == {"gmail.users.messages.get": 8}


def test_revoked_grant_surfaces_the_token_callables_reauth_error(gmail):
    mid, _, _ = gmail.deliver("revoked")
    provider = gmail.provider()
    gmail.state.revoke_account(ACCOUNT)
    with pytest.raises(ReauthRequiredError, match="revoked"):
        provider.get_message(mid)
    assert gmail.calls() == {"gmail.users.messages.get": 1}


def test_unreachable_endpoint_is_retried_then_unavailable(gmail):
    with socket_closed_port() as port:
        provider = gmail.provider(endpoint=f"http://127.0.0.1:{port}")
        with pytest.raises(ProviderUnavailableError) as err:
            provider.profile()
    assert err.value.retry_after >= 1 and len(gmail.sleeps) == 3 and provider.stats.calls == 4


class socket_closed_port:
    """A port with nothing listening (bound, never listened to), for connection-refused tests."""

    def __enter__(self) -> int:
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


# ---- https with MAILBRIDGE_CA_BUNDLE -------------------------------------------------------------

def _tls_files(tmp_path) -> tuple[str, str, str]:
    """(ca.pem, server cert chain, server key) for 127.0.0.1, made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailbridge test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)


@pytest.fixture
def https_base(gmail, tmp_path):
    """The same emulator state served over https with a certificate of a private CA → (base, ca.pem)."""
    ca_pem, cert, key = _tls_files(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = make_server("127.0.0.1", 0, create_app(gmail.state), threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_port}", ca_pem
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_https_endpoint_is_trusted_through_the_ca_bundle(gmail, https_base):
    base, ca_pem = https_base
    ids = [gmail.deliver(f"tls {n}", minute=n)[0] for n in range(2)]
    provider = gmail.provider(endpoint=base, ca_bundle=ca_pem)
    assert provider.profile()["email"] == ACCOUNT
    page = provider.search(SearchQuery(subject="tls"), limit=10, page_token=None, include_body=False)
    assert len(page.items) == 2
    sent = provider.send(_big_message(3 * 1024 * 1024 + 10))  # the upload endpoint, over https too
    assert gmail.state.mailbox(ACCOUNT).messages[sent.id].thread_id == sent.thread_id
    assert gmail.calls() == {"gmail.users.getProfile": 1, "gmail.users.messages.list": 1, "batch": 1,
                             "gmail.users.messages.get": len(ids), "gmail.users.messages.send": 1}


def test_https_endpoint_without_the_ca_bundle_is_refused(gmail, https_base):
    base, _ = https_base
    provider = gmail.provider(endpoint=base)
    with pytest.raises(ProviderUnavailableError, match="TLS"):
        provider.profile()
    assert gmail.calls() == {}
