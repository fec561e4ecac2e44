"""GmailProvider: one Gmail mailbox behind MailProvider, via google-api-python-client, in the fewest round trips."""
from __future__ import annotations

import base64
from typing import Any, Sequence

from mailbridge import clock
from mailbridge.config import Settings
from mailbridge.core.parse import email_from_gmail, find_part
from mailbridge.errors import CursorExpiredError, ForbiddenError, MailbridgeError, NotFoundError
from mailbridge.providers.base import (AccessToken, AddedMessage, AttachmentContent, CallStats, Changes,
                                       LabelChange, MailProvider, Page, SearchQuery, SentMessage)
from mailbridge.providers.gmail_http import GmailTransport, RetryPolicy
from mailbridge.providers.gmail_query import to_gmail_query

FULL_SCOPE = "https://mail.google.com/"
UPLOAD_THRESHOLD = 3 * 1024 * 1024    # raw bytes; larger goes through the upload endpoint (Gmail: 413 on big JSON)
# Exactly the headers parse.email_from_gmail reads: a metadata get asks for these and nothing more.
MESSAGE_HEADERS = ["Subject", "From", "To", "Cc", "Bcc", "Reply-To", "Date", "Message-ID", "In-Reply-To",
                   "References", "Importance", "Priority", "X-Priority", "X-MSMail-Priority"]
THREAD_HEADERS = ["Subject", "From", "To", "Cc", "Date"]
HISTORY_PAGE_SIZE = 500               # Gmail's maximum: the fewest history.list calls per sync
HISTORY_TYPES = ["messageAdded", "messageDeleted", "labelAdded", "labelRemoved"]

__all__ = ["FULL_SCOPE", "GmailProvider", "RetryPolicy"]


def _b64url_decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class GmailProvider(MailProvider):
    """One connected Gmail mailbox (see base.py for the error contract).

    Upstream round trips per operation (asserted against the emulator's call counts): profile 1,
    send 1 (JSON `raw` up to UPLOAD_THRESHOLD, else the upload endpoint), search 2 (list + one
    batch of gets; 1 when the page is empty), get_message 1, get_messages 1 per 50 ids, get_raw 1,
    get_attachment 2 (1 when the part's data is inline), modify 2 (modify + a metadata get: Gmail's
    modify answers only ids and labels), trash 1, delete 1, list_threads 2, get_thread 1,
    changes 1 per HISTORY_PAGE_SIZE history records, recent_message_ids 1, watch 1, stop 1.
    Bodies: include_body=False reads `format=metadata` (headers only, so `attachments` and
    `has_attachments` are null); include_body=True reads `format=full`.
    `scopes` are the connection's granted scopes (permanent delete needs FULL_SCOPE).
    """

    provider = "google"

    def __init__(self, connection_id: str, access_token: AccessToken, settings: Settings, *,
                 scopes: Sequence[str], retry: RetryPolicy | None = None):
        self.connection_id = connection_id
        self.scopes = tuple(scopes)
        self._gmail = GmailTransport(access_token, settings, retry)

    @property
    def stats(self) -> CallStats:
        """Round trips, quota units and calls per method id spent by this instance."""
        return self._gmail.stats

    # ---- helpers ---------------------------------------------------------------------------
    def _public(self, gmail_id: str) -> str:
        return f"google:{self.connection_id}:{gmail_id}"

    def _get(self, message_id: str, fmt: str):
        headers = {"metadataHeaders": MESSAGE_HEADERS} if fmt == "metadata" else {}
        return lambda: self._gmail.api.messages.get(userId="me", id=message_id, format=fmt, **headers)

    def _email(self, message: dict, include_body: bool) -> dict:
        return email_from_gmail(message, connection_id=self.connection_id, include_body=include_body)

    def _present(self, results: dict[str, Any], keys: Sequence[str]) -> list[dict]:
        """Batch results in `keys` order; not-found ones (deleted meanwhile) left out, other errors raised."""
        found = []
        for key in keys:
            result = results.get(key)
            if isinstance(result, NotFoundError):
                continue
            if isinstance(result, MailbridgeError):
                raise result
            found.append(result)
        return found

    # ---- MailProvider ----------------------------------------------------------------------
    def profile(self) -> dict:
        body = self._gmail.call(lambda: self._gmail.api.users.getProfile(userId="me"))
        history = body.get("historyId")
        return {"email": body.get("emailAddress"), "history_id": str(history) if history else None}

    def send(self, raw: bytes, *, thread_id: str | None = None) -> SentMessage:
        """One messages.send. Not retried on 5xx/timeouts (it may have gone out): those raise
        ProviderUnavailableError at once; 429 and refused connections are retried."""
        metadata = {"threadId": thread_id} if thread_id else {}
        if len(raw) > UPLOAD_THRESHOLD:
            make = lambda: self._gmail.upload_request(raw, metadata)  # noqa: E731
        else:
            body = {**metadata, "raw": base64.urlsafe_b64encode(raw).decode("ascii")}
            make = lambda: self._gmail.api.messages.send(userId="me", body=body)  # noqa: E731
        sent = self._gmail.call(make, what="send", idempotent=False)
        return SentMessage(id=sent["id"], thread_id=sent["threadId"])

    def search(self, query: SearchQuery, *, limit: int, page_token: str | None,
               include_body: bool) -> Page:
        q = to_gmail_query(query) or None
        listing = self._gmail.call(lambda: self._gmail.api.messages.list(
            userId="me", q=q, maxResults=limit, pageToken=page_token))
        ids = [m["id"] for m in listing.get("messages") or []]
        return Page(self.get_messages(ids, include_body=include_body), listing.get("nextPageToken"))

    def get_message(self, message_id: str, *, include_body: bool = True) -> dict:
        message = self._gmail.call(self._get(message_id, "full" if include_body else "metadata"),
                                   what=f"message {message_id}")
        return self._email(message, include_body)

    def get_messages(self, message_ids: Sequence[str], *, include_body: bool) -> list[dict]:
        if not message_ids:
            return []
        ids = list(dict.fromkeys(message_ids))
        fmt = "full" if include_body else "metadata"
        results = self._gmail.batch({mid: self._get(mid, fmt) for mid in ids}, what="message")
        return [self._email(m, include_body) for m in self._present(results, ids)]

    def get_raw(self, message_id: str) -> bytes:
        message = self._gmail.call(self._get(message_id, "raw"), what=f"message {message_id}")
        return _b64url_decode(message.get("raw") or "")

    def get_attachment(self, message_id: str, attachment_id: str) -> AttachmentContent:
        """The part `attachment_id` (a Gmail partId) of the message; NotFoundError if it has none."""
        message = self._gmail.call(self._get(message_id, "full"), what=f"message {message_id}")
        part = find_part(message.get("payload") or {}, attachment_id)
        if part is None or part.get("parts"):
            raise NotFoundError(f"attachment {attachment_id} not found in message {message_id}")
        body = part.get("body") or {}
        if isinstance(body.get("data"), str):
            data = _b64url_decode(body["data"])
        elif body.get("attachmentId"):
            got = self._gmail.call(lambda: self._gmail.api.attachments.get(
                userId="me", messageId=message_id, id=body["attachmentId"]),
                what=f"attachment {attachment_id} of message {message_id}")
            data = _b64url_decode(got.get("data") or "")
        else:
            data = b""
        # The email object's own description of the part, so filename and type match what it listed.
        listed = next((a for a in self._email(message, False)["attachments"] or []
                       if a["id"] == attachment_id), {})
        return AttachmentContent(data=data,
                                 content_type=listed.get("content_type") or part.get("mimeType")
                                 or "application/octet-stream",
                                 filename=listed.get("filename") or part.get("filename") or None)

    def modify(self, message_id: str, *, add_labels: Sequence[str] = (),
               remove_labels: Sequence[str] = ()) -> dict:
        """messages.modify, then one metadata get for the email object (2 calls, 10 quota units)."""
        if add_labels or remove_labels:
            body = {"addLabelIds": list(add_labels), "removeLabelIds": list(remove_labels)}
            self._gmail.call(lambda: self._gmail.api.messages.modify(userId="me", id=message_id, body=body),
                             what=f"message {message_id}")
        return self.get_message(message_id, include_body=False)

    def trash(self, message_id: str) -> None:
        self._gmail.call(lambda: self._gmail.api.messages.trash(userId="me", id=message_id),
                         what=f"message {message_id}")

    def delete(self, message_id: str) -> None:
        """Permanent delete; ForbiddenError naming FULL_SCOPE, without calling Gmail, if not granted."""
        if FULL_SCOPE not in self.scopes:
            raise ForbiddenError(f"permanent delete needs the {FULL_SCOPE} scope (add it to GOOGLE_SCOPES "
                                 "and reconnect the mailbox)", details={"scope": FULL_SCOPE})
        self._gmail.call(lambda: self._gmail.api.messages.delete(userId="me", id=message_id),
                         what=f"message {message_id}")

    def list_threads(self, *, q: str | None, limit: int, page_token: str | None) -> Page:
        """`q` is user text, matched literally (quoted like SearchQuery.q), never as operators."""
        threads = self._gmail.api.threads
        gmail_q = to_gmail_query(SearchQuery(q=q)) or None
        listing = self._gmail.call(lambda: threads.list(userId="me", q=gmail_q, maxResults=limit,
                                                        pageToken=page_token))
        ids = [t["id"] for t in listing.get("threads") or []]
        if not ids:
            return Page([], listing.get("nextPageToken"))
        results = self._gmail.batch({tid: (lambda tid=tid: threads.get(
            userId="me", id=tid, format="metadata", metadataHeaders=THREAD_HEADERS)) for tid in ids},
            what="thread")
        return Page([self._summary(t) for t in self._present(results, ids)], listing.get("nextPageToken"))

    def get_thread(self, thread_id: str) -> dict:
        thread = self._gmail.call(lambda: self._gmail.api.threads.get(
            userId="me", id=thread_id, format="full"), what=f"thread {thread_id}")
        messages = _oldest_first(thread.get("messages") or [])
        emails = [self._email(m, True) for m in messages]
        return {"id": self._public(thread.get("id") or thread_id),
                "subject": emails[0]["subject"] if emails else None, "messages": emails,
                "message_count": len(emails), "participants": _participants(emails),
                "last_message_at": _last_at(messages), "provider": self.provider}

    # ---- real-time ---------------------------------------------------------------------------
    def changes(self, cursor: str) -> Changes:
        """history.list from `cursor` until no nextPageToken; 404 → CursorExpiredError."""
        pages, token = [], None
        while True:
            try:
                page = self._gmail.call(lambda: self._gmail.api.history.list(
                    userId="me", startHistoryId=cursor, historyTypes=HISTORY_TYPES,
                    maxResults=HISTORY_PAGE_SIZE, pageToken=token), what="history")
            except NotFoundError:
                raise CursorExpiredError("Gmail no longer keeps history that old; a resync is needed") from None
            pages.append(page)
            token = page.get("nextPageToken")
            if not token:
                return _changes(cursor, pages)

    def recent_message_ids(self, since_epoch: float, limit: int) -> list[str]:
        """messages.list `after:<epoch>` (spam and trash left out), newest first, one call (≤ 500)."""
        listing = self._gmail.call(lambda: self._gmail.api.messages.list(
            userId="me", q=f"after:{max(0, int(since_epoch))}", maxResults=max(1, min(limit, 500))))
        return [m["id"] for m in listing.get("messages") or []][:limit]

    def watch(self, topic: str) -> dict:
        """users.watch on every label (label changes notify too) → `{"history_id", "expires_at"}`
        (epoch seconds; Gmail answers `{"historyId": "1234", "expiration": "<epoch ms>"}`)."""
        body = self._gmail.call(lambda: self._gmail.api.users.watch(userId="me", body={"topicName": topic}),
                                what="watch")
        return {"history_id": str(body["historyId"]), "expires_at": int(body["expiration"]) / 1000}

    def stop(self) -> None:
        self._gmail.call(lambda: self._gmail.api.users.stop(userId="me"), what="watch")

    def _summary(self, thread: dict) -> dict:
        """A threads.get (format metadata) → API.md's thread summary."""
        messages = _oldest_first(thread.get("messages") or [])
        emails = [self._email(m, False) for m in messages]
        labels = list(dict.fromkeys(label for m in messages for label in m.get("labelIds") or []))
        return {"id": self._public(thread["id"]),
                "subject": emails[0]["subject"] if emails else None,
                "snippet": emails[-1]["snippet"] if emails else None,
                "participants": _participants(emails), "message_count": len(emails),
                "last_message_at": _last_at(messages), "is_unread": "UNREAD" in labels, "labels": labels}


def _changes(start: str, pages: list[dict]) -> Changes:
    """history.list pages → Changes. A page (ids shortened)::

        {"history": [{"id": "1201", "messages": [{"id": "18c1", "threadId": "18c1"}],
                      "messagesAdded": [{"message": {"id": "18c1", "threadId": "18c1", "labelIds": ["INBOX"]}}],
                      "labelsRemoved": [{"message": {"id": "18b0", ...}, "labelIds": ["UNREAD"]}]}],
         "nextPageToken": "…", "historyId": "1207"}

    The new cursor is the larger of the first page's historyId and the last record's id: every
    record up to it was on one of the pages (they list records in order)."""
    added: dict[str, AddedMessage] = {}
    labels: dict[str, tuple[set, set]] = {}
    deleted: set[str] = set()
    previous, last = str(start), 0
    for page in pages:
        for record in page.get("history") or []:
            for item in record.get("messagesAdded") or []:
                message = item.get("message") or {}
                if message.get("id") and message["id"] not in added:
                    added[message["id"]] = AddedMessage(message["id"], tuple(message.get("labelIds") or ()),
                                                        previous)
            for kind, adding in (("labelsAdded", True), ("labelsRemoved", False)):
                for item in record.get(kind) or []:
                    plus, minus = labels.setdefault((item.get("message") or {}).get("id"), (set(), set()))
                    for label in item.get("labelIds") or []:
                        (plus if adding else minus).add(label)
                        (minus if adding else plus).discard(label)
            deleted.update(m["message"]["id"] for m in record.get("messagesDeleted") or [] if m.get("message"))
            previous, last = str(record.get("id") or previous), max(last, _int(record.get("id")))
    cursor = max(_int(pages[0].get("historyId")), last, _int(start)) if pages else _int(start)
    return Changes(cursor=str(cursor), added=tuple(added.values()),
                   labels={k: LabelChange(frozenset(a), frozenset(r)) for k, (a, r) in labels.items() if k},
                   deleted=frozenset(deleted))


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _internal_ms(message: dict) -> int:
    try:
        return int(message.get("internalDate") or 0)
    except (TypeError, ValueError):
        return 0


def _oldest_first(messages: list[dict]) -> list[dict]:
    return sorted(messages, key=_internal_ms)  # stable: Gmail's own order breaks ties


def _last_at(messages: list[dict]) -> str | None:
    newest = max((_internal_ms(m) for m in messages), default=0)
    return clock.rfc3339(newest / 1000) if newest else None


def _participants(emails: list[dict]) -> list[dict]:
    """Senders and recipients (from, to, cc) in order of appearance, once per address (case-blind);
    the first non-null display name seen for an address wins."""
    seen: dict[str, dict] = {}
    for email in emails:
        for person in [email.get("from"), *(email.get("to") or []), *(email.get("cc") or [])]:
            if not person or not person.get("email"):
                continue
            key = person["email"].lower()
            if key not in seen:
                seen[key] = {"email": person["email"], "name": person.get("name")}
            elif seen[key]["name"] is None and person.get("name"):
                seen[key]["name"] = person["name"]
    return list(seen.values())
