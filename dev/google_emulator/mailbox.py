"""One account's mailbox: messages, threads, labels and the history log, with Gmail's threading rules."""
from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Callable

from . import mime
from .errors import bad_request, not_found
from .labels import NOT_MODIFIABLE, SYSTEM_IDS, SYSTEM_LABELS, user_label
from .query import Doc

_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|sv|tr)\s*(\[\d+\])?\s*:\s*)+", re.I)
_MSGID = re.compile(r"<[^<>\s]+>")
# history.list's historyTypes values → the History fields they select.
_TYPE_FIELDS = {"messageAdded": "messagesAdded", "messageDeleted": "messagesDeleted",
                "labelAdded": "labelsAdded", "labelRemoved": "labelsRemoved"}


def normalize_subject(subject: str | None) -> str:
    """Subject without Re:/Fwd: prefixes, lower-case, spaces collapsed: what threading compares."""
    text = mime.decode_words(subject or "")
    return " ".join(_PREFIX.sub("", text).split()).lower()


@dataclass
class StoredMessage:
    id: str
    thread_id: str
    raw: bytes
    parsed: mime.ParsedMessage
    labels: list[str]
    internal_ms: int
    history_id: int
    visible_at: float = 0.0
    trash_removed: list[str] = field(default_factory=list)

    def ref(self) -> dict:
        return {"id": self.id, "threadId": self.thread_id}

    def ref_labels(self) -> dict:
        return {"id": self.id, "threadId": self.thread_id, "labelIds": list(self.labels)}


class Mailbox:
    """In-memory mailbox; every public method is atomic (own lock) and records history like Gmail.

    `on_change(mailbox, history_id, label_ids)` is called after each history record (the notifier).
    """

    def __init__(self, address: str, *, new_id: Callable[[], str], retention: int = 1000,
                 now: Callable[[], float] = time.time, start_history_id: int = 1000):
        self.address = address
        self.lock = threading.RLock()
        self._new_id = new_id
        self._now = now
        self.retention = retention
        self.messages: dict[str, StoredMessage] = {}
        self.threads: dict[str, list[str]] = {}
        self.user_labels: dict[str, str] = {}
        self.history: list[dict] = []
        self.history_id = start_history_id
        self.pruned_through = start_history_id  # start ids below this are answered 404
        self.by_message_id: dict[str, str] = {}
        self.watch: dict | None = None
        self.on_change: Callable[["Mailbox", int, set[str]], None] | None = None

    # ---- history -------------------------------------------------------------------------
    def _record(self, kind: str, msg: StoredMessage, entry: dict) -> None:
        self.history_id += 1
        msg.history_id = self.history_id
        self.history.append({"id": self.history_id, "messages": [msg.ref()], kind: [entry],
                             "_labels": set(msg.labels)})
        while len(self.history) > self.retention:
            self.pruned_through = self.history.pop(0)["id"]
        if self.on_change:
            self.on_change(self, self.history_id, set(msg.labels) | set(entry.get("labelIds", [])))

    def list_history(self, start: int, types: list[str] | None, label_id: str | None,
                     max_results: int, page_token: str | None) -> dict:
        """Records after `start`, oldest first, paged; NotFoundError if `start` predates what is kept."""
        with self.lock:
            if start < self.pruned_through:
                raise not_found()
            after = max(start, int(page_token)) if page_token else start
            wanted = {_TYPE_FIELDS[t] for t in types} if types else None
            out: list[dict] = []
            more = False
            for rec in self.history:
                if rec["id"] <= after:
                    continue
                if label_id and label_id not in rec["_labels"]:
                    continue
                kinds = {k for k in rec if k not in ("id", "messages", "_labels")}
                if wanted is not None and not kinds & wanted:
                    continue
                if len(out) == max_results:
                    more = True
                    break
                item = {"id": str(rec["id"]), "messages": rec["messages"]}
                item.update({k: rec[k] for k in kinds if wanted is None or k in wanted})
                out.append(item)
            body: dict = {"historyId": str(self.history_id)}
            if out:
                body["history"] = out
            if more:
                body["nextPageToken"] = out[-1]["id"]
            return body

    # ---- adding --------------------------------------------------------------------------
    def _thread_for(self, parsed: mime.ParsedMessage, thread_hint: str | None) -> str | None:
        if thread_hint and thread_hint in self.threads:
            return thread_hint
        refs = _MSGID.findall(f"{parsed.header('References') or ''} {parsed.header('In-Reply-To') or ''}")
        subject = normalize_subject(parsed.header("Subject"))
        for ref in reversed(refs):
            known = self.messages.get(self.by_message_id.get(ref.lower(), ""))
            if known and normalize_subject(known.parsed.header("Subject")) == subject:
                return known.thread_id
        return None

    def add(self, raw: bytes, labels: list[str], *, thread_hint: str | None = None,
            visible_after_ms: int = 0, internal_ms: int | None = None) -> StoredMessage:
        """Store a message (parsed for real), thread it as Gmail does, record `messagesAdded`."""
        with self.lock:
            message_id = self._new_id()
            parsed = mime.parse(raw, message_id)
            if internal_ms is None:
                internal_ms = _date_ms(parsed.header("Date")) or int(self._now() * 1000)
            thread_id = self._thread_for(parsed, thread_hint) or message_id
            msg = StoredMessage(message_id, thread_id, raw, parsed, list(labels), internal_ms,
                                self.history_id, self._now() + visible_after_ms / 1000)
            self.messages[message_id] = msg
            self.threads.setdefault(thread_id, []).append(message_id)
            header_id = (parsed.header("Message-ID") or "").strip().lower()
            if header_id:
                self.by_message_id.setdefault(header_id, message_id)
            self._record("messagesAdded", msg, {"message": msg.ref_labels()})
            return msg

    # ---- reading -------------------------------------------------------------------------
    def get(self, message_id: str) -> StoredMessage:
        """A visible message, or NotFoundError (also while its delivery delay runs)."""
        msg = self.messages.get(message_id)
        if msg is None or msg.visible_at > self._now():
            raise not_found()
        return msg

    def visible(self) -> list[StoredMessage]:
        now = self._now()
        return sorted((m for m in self.messages.values() if m.visible_at <= now),
                      key=lambda m: (m.internal_ms, m.id), reverse=True)

    def doc(self, msg: StoredMessage) -> Doc:
        p = msg.parsed
        low = lambda name: mime.decode_words(p.header(name) or "").lower()  # noqa: E731
        return Doc(subject=low("Subject"), from_=low("From"), to=low("To"), cc=low("Cc"),
                   bcc=low("Bcc"), text=p.text.lower(), filenames=" ".join(p.filenames).lower(),
                   message_id=(p.header("Message-ID") or "").strip().lower(), labels=set(msg.labels),
                   label_names={self.user_labels[x].lower() for x in msg.labels if x in self.user_labels},
                   internal_ms=msg.internal_ms, has_attachment=bool(p.attachments))

    # ---- labels --------------------------------------------------------------------------
    def label_list(self) -> list[dict]:
        return [dict(x) for x in SYSTEM_LABELS] + \
            [user_label(i, n) for i, n in self.user_labels.items()]

    def label_get(self, label_id: str) -> dict:
        with self.lock:
            label = next((x for x in self.label_list() if x["id"] == label_id), None)
            if label is None:
                raise not_found()
            msgs = [m for m in self.messages.values() if label_id in m.labels]
            threads = {m.thread_id for m in msgs}
            unread = [m for m in msgs if "UNREAD" in m.labels]
            label.update(messagesTotal=len(msgs), messagesUnread=len(unread),
                         threadsTotal=len(threads), threadsUnread=len({m.thread_id for m in unread}))
            return label

    def label_create(self, name: str) -> dict:
        """A user label `Label_N`; ConflictError-like 409 if the name exists (case-insensitive)."""
        from mailbridge.errors import ConflictError
        with self.lock:
            taken = {n.lower() for n in self.user_labels.values()} | {i.lower() for i in SYSTEM_IDS}
            if not name or not name.strip():
                raise bad_request("Invalid label name")
            if name.lower() in taken:
                raise ConflictError("Label name exists or conflicts")
            label_id = f"Label_{len(self.user_labels) + 1}"
            while label_id in self.user_labels:
                label_id += "0"
            self.user_labels[label_id] = name
            return user_label(label_id, name)

    # ---- changing ------------------------------------------------------------------------
    def _check_labels(self, ids: list[str]) -> None:
        for label_id in ids:
            if label_id in NOT_MODIFIABLE or (label_id not in SYSTEM_IDS and label_id not in self.user_labels):
                raise bad_request(f"Invalid label: {label_id}")

    def _change(self, msg: StoredMessage, add: list[str], remove: list[str]) -> None:
        added = [x for x in dict.fromkeys(add) if x not in msg.labels]
        removed = [x for x in dict.fromkeys(remove) if x in msg.labels and x not in added]
        msg.labels = [x for x in msg.labels if x not in removed] + added
        if added:
            self._record("labelsAdded", msg, {"message": msg.ref_labels(), "labelIds": added})
        if removed:
            self._record("labelsRemoved", msg, {"message": msg.ref_labels(), "labelIds": removed})

    def modify(self, message_id: str, add: list[str], remove: list[str]) -> StoredMessage:
        with self.lock:
            msg = self.get(message_id)
            self._check_labels(add + remove)
            self._change(msg, add, remove)
            return msg

    def trash(self, message_id: str) -> StoredMessage:
        with self.lock:
            msg = self.get(message_id)
            if "TRASH" not in msg.labels:
                msg.trash_removed = [x for x in ("INBOX", "SPAM") if x in msg.labels]
                self._change(msg, ["TRASH"], msg.trash_removed)
            return msg

    def untrash(self, message_id: str) -> StoredMessage:
        with self.lock:
            msg = self.get(message_id)
            if "TRASH" in msg.labels:
                self._change(msg, msg.trash_removed, ["TRASH"])
            return msg

    def delete(self, message_id: str) -> None:
        """Permanent delete; records `messagesDeleted`; NotFoundError if unknown."""
        with self.lock:
            msg = self.get(message_id)
            del self.messages[message_id]
            thread = self.threads.get(msg.thread_id, [])
            if message_id in thread:
                thread.remove(message_id)
            if not thread:
                self.threads.pop(msg.thread_id, None)
            self.by_message_id = {k: v for k, v in self.by_message_id.items() if v != message_id}
            self._record("messagesDeleted", msg, {"message": msg.ref_labels()})


def _date_ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp() * 1000)
    except (TypeError, ValueError, IndexError):
        return None


def ensure_message_id(raw: bytes, domain: str = "mail.gmail.com") -> bytes:
    """Prepend a Message-ID header when the message has none (Gmail adds one on send)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    if re.search(rb"(?im)^message-id\s*:", head):
        return raw
    eol = b"\r\n" if b"\r\n" in head or not head else b"\n"
    return b"Message-ID: <CA" + secrets.token_hex(12).encode() + b"@" + domain.encode() + b">" + eol + raw

