"""The one interface every mailbox provider implements, and the values it speaks in.

An adapter is built per connection (`GmailProvider(connection_id, tokens, settings)`), speaks the
provider's wire format through its official client library, and answers in API.md's shapes: email
objects are dicts with exactly the fields of API.md section 5, ids already in the public
`<provider>:<connection_id>:<provider id>` form. Methods take and return the provider's OWN ids
(`message_id`, `thread_id` without the prefix).

Errors (mailbridge.errors): ReauthRequiredError when the grant is revoked or expired (invalid_grant);
ProviderUnavailableError (retry_after set) after retries of 429/5xx/timeouts are exhausted;
ProviderError (details.provider_status) when the provider refuses the call for good; NotFoundError
for a message/thread/attachment the mailbox does not have; ForbiddenError for a missing scope.
Reads are idempotent; `send` is not (the caller guards it with an idempotency key).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Sequence

# A callable that returns a valid access token; `force=True` refreshes even if not expired.
AccessToken = Callable[..., str]


@dataclass(frozen=True)
class SearchQuery:
    """API.md section 5 search filters; user text is matched literally, never as operators."""
    q: str | None = None
    from_: str | None = None
    to: str | None = None
    subject: str | None = None
    label: str | None = None
    unread: bool | None = None
    after: float | None = None          # epoch seconds
    before: float | None = None
    has_attachment: bool | None = None


@dataclass(frozen=True)
class Page:
    items: list[dict]
    next_page_token: str | None       # the provider's own token; the core makes it opaque


@dataclass(frozen=True)
class SentMessage:
    id: str                            # provider ids, unprefixed
    thread_id: str


@dataclass(frozen=True)
class AttachmentContent:
    data: bytes
    content_type: str
    filename: str | None


@dataclass(frozen=True)
class AddedMessage:
    """A message the mailbox gained after a cursor."""
    id: str                            # the provider's own message id
    labels: tuple[str, ...]            # its labels when it was added (Gmail's messagesAdded carries them)
    resume_from: str                   # a cursor from which `changes` lists this addition again


@dataclass(frozen=True)
class LabelChange:
    """The net label change of one message over a `changes` window (in order: an add then a remove
    of the same label nets to a remove)."""
    added: frozenset[str]
    removed: frozenset[str]


@dataclass(frozen=True)
class Changes:
    """What changed in a mailbox after a cursor, oldest first.

    `cursor` is where the next `changes` starts: every change up to it is listed here (later ones
    may be listed too and come again next time — callers are idempotent)."""
    cursor: str
    added: tuple[AddedMessage, ...]
    labels: dict[str, LabelChange]     # message id → net label change
    deleted: frozenset[str]            # message ids deleted for good


@dataclass
class CallStats:
    """Upstream calls and quota units spent by one adapter instance (for bench/ and logs)."""
    calls: int = 0
    quota_units: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


class MailProvider(ABC):
    """One connected mailbox. See the module docstring for the error contract."""

    provider: str  # "google" | "microsoft"

    @abstractmethod
    def profile(self) -> dict:
        """`{"email": address, "history_id": cursor or None}` of the mailbox."""

    @abstractmethod
    def send(self, raw: bytes, *, thread_id: str | None = None) -> SentMessage:
        """Send RFC 5322 bytes (any size up to 25 MiB), in `thread_id` when given. One upstream call."""

    @abstractmethod
    def search(self, query: SearchQuery, *, limit: int, page_token: str | None,
               include_body: bool) -> Page:
        """Emails matching `query`, newest first: one list call plus one batch for the page."""

    @abstractmethod
    def get_message(self, message_id: str, *, include_body: bool = True) -> dict:
        """One email object."""

    @abstractmethod
    def get_messages(self, message_ids: Sequence[str], *, include_body: bool) -> list[dict]:
        """Email objects in the given order, fetched in one batch request; missing ones left out."""

    @abstractmethod
    def get_raw(self, message_id: str) -> bytes:
        """The message's RFC 5322 bytes."""

    @abstractmethod
    def get_attachment(self, message_id: str, attachment_id: str) -> AttachmentContent:
        """An attachment's bytes; `attachment_id` is the id of the email object's attachment."""

    @abstractmethod
    def modify(self, message_id: str, *, add_labels: Sequence[str] = (),
               remove_labels: Sequence[str] = ()) -> dict:
        """Add/remove labels (read state is the UNREAD label on Gmail); the updated email object."""

    @abstractmethod
    def trash(self, message_id: str) -> None:
        """Move to trash."""

    @abstractmethod
    def delete(self, message_id: str) -> None:
        """Delete permanently (Gmail: ForbiddenError naming the scope if the grant lacks it)."""

    @abstractmethod
    def list_threads(self, *, q: str | None, limit: int, page_token: str | None) -> Page:
        """Thread summaries `{id, subject, snippet, participants, message_count, last_message_at,
        is_unread, labels}` newest first: one list call plus one batch for the page."""

    @abstractmethod
    def get_thread(self, thread_id: str) -> dict:
        """`{id, subject, messages (oldest first, bodies included), message_count, participants,
        last_message_at, provider}` in one upstream call."""

    # ---- real-time: change feed and watch ------------------------------------------------------
    @abstractmethod
    def changes(self, cursor: str) -> Changes:
        """Every change after `cursor` (all pages). CursorExpiredError when the provider no longer
        keeps changes that old (the caller resyncs). Read-only, idempotent."""

    @abstractmethod
    def recent_message_ids(self, since_epoch: float, limit: int) -> list[str]:
        """Ids of at most `limit` messages received at or after `since_epoch`, newest first (the
        bounded resync after an expired cursor). One list call."""

    @abstractmethod
    def watch(self, topic: str) -> dict:
        """Start (or renew) push notifications to `topic` → `{"history_id": cursor at that moment,
        "expires_at": epoch seconds}`. Idempotent: a repeated call replaces the watch."""

    @abstractmethod
    def stop(self) -> None:
        """Stop push notifications of this mailbox. Idempotent."""
