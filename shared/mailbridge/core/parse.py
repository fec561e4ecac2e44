"""Incoming mail (raw MIME or a Gmail API Message) into API.md's email object; never raises on bad mail.

Both sources are reduced to the same two things — a list of raw (name, value) headers and a list of
leaf parts numbered the way Gmail numbers them (root "", children "0", "1", nested "0.1") — and one
piece of code turns those into the email object, so the two providers cannot drift apart. Header
values are decoded by the stdlib's default policy (RFC 2047, RFC 2231), exactly as
`email.message_from_bytes(raw, policy=email.policy.default)` would (core/headers.py computes plain
ASCII values directly and leaves the rest to the stdlib); every field is computed on its own and a
broken header only empties that field.
"""
from __future__ import annotations

import base64
import codecs
import email
import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy as email_policy
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any, Callable, Iterable

from mailbridge import clock
from mailbridge.core.headers import Index as _Index, addresses as _parse_addresses, clean as _clean, \
    first_occurrences as _first, mime as _mime, raw as _raw, unstructured as _unstructured

EMAIL_FIELDS = ("id", "thread_id", "connection_id", "provider", "message_id", "subject", "from", "to", "cc",
                "bcc", "reply_to", "snippet", "text", "html", "sent_at", "received_at", "is_read", "labels",
                "importance", "has_attachments", "attachments", "in_reply_to", "references")
SNIPPET_LENGTH = 200

_MSG_ID = re.compile(r"<[^<>\s]+>")
_PRIORITY_DIGIT = re.compile(r"\s*(\d)")
# Labels whose real-world use is a superset encoding: decoding with the superset loses nothing.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "iso-8859-1": "cp1252",
              "latin1": "cp1252", "latin-1": "cp1252", "ks_c_5601-1987": "cp949", "euc-kr": "cp949",
              "shift_jis": "cp932", "x-sjis": "cp932", "iso-2022-jp": "iso2022_jp_ext", "big5": "big5hkscs",
              "tis-620": "cp874", "iso-8859-11": "cp874", "iso-8859-9": "cp1254"}
_X_PRIORITY = {"1": "high", "2": "high", "3": "normal", "4": "low", "5": "low"}
_IMPORTANCE = {"high": "high", "urgent": "high", "normal": "normal", "low": "low", "non-urgent": "low"}


@dataclass
class _Leaf:
    """One non-multipart part, from either source. `data` is transfer-decoded bytes (None if absent)."""
    part_id: str
    headers: list[tuple[str, str]]
    content_type: str
    in_alternative: bool
    size: int | None
    data: Callable[[], bytes | None]
    filename: str | None = None  # what the provider already decoded (Gmail's `filename`)


def _mime_header(index: _Index, name: str) -> tuple[str | None, dict[str, str]] | None:
    """The first Content-Type/-Disposition as (type or disposition, params), or None: absent or unparsable."""
    return _guarded(None, lambda: _mime(*index[name])) if name in index else None


def _addresses(index: _Index, name: str) -> list[dict]:
    """Mailboxes with a domain; groups flattened; a header the parser cannot read yields []."""
    try:
        return _parse_addresses(index[name][1]) if name in index else []
    except Exception:  # the stdlib parser raises IndexError and friends on some garbage
        return []


def _message_ids(value: str | None) -> list[str]:
    if not value:
        return []
    found = _MSG_ID.findall(value)
    if not found and "@" in value and len(value.split()) == 1 and "<" not in value and ">" not in value:
        found = [f"<{value}>"]  # a bare id: some mailers forget the brackets
    return list(dict.fromkeys(found))


def _importance(index: _Index) -> str:
    for name in ("importance", "priority", "x-msmail-priority"):
        value = (_raw(index, name) or "").lower()
        if value in _IMPORTANCE:
            return _IMPORTANCE[value]
    match = _PRIORITY_DIGIT.match(_raw(index, "x-priority") or "")
    return _X_PRIORITY.get(match.group(1), "normal") if match else "normal"


def _sent_at(date: str | None) -> str | None:
    try:
        value = parsedate_to_datetime(date or "")
        if value.tzinfo is None:  # "-0000": no zone information; the time is UTC
            value = value.replace(tzinfo=timezone.utc)
        return clock.rfc3339(value.timestamp())
    except Exception:
        return None


def _guarded(default: Any, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # one broken field must not cost the whole message
        return default


def _header_fields(raw_headers: list[tuple[str, str]]) -> dict:
    index = _first(raw_headers)
    senders = _addresses(index, "from")
    return {
        "message_id": _guarded(None, lambda: (_message_ids(_raw(index, "message-id")) or [None])[0]),
        "subject": _guarded(None, lambda: _unstructured(index["subject"][1])) if "subject" in index else None,
        "from": senders[0] if senders else None,
        "to": _addresses(index, "to"), "cc": _addresses(index, "cc"), "bcc": _addresses(index, "bcc"),
        "reply_to": _addresses(index, "reply-to"),
        "sent_at": _sent_at(_raw(index, "date")),
        "importance": _guarded("normal", lambda: _importance(index)),
        "in_reply_to": _guarded(None, lambda: (_message_ids(_raw(index, "in-reply-to")) or [None])[0]),
        "references": _guarded([], lambda: _message_ids(_raw(index, "references"))),
    }


def decode_text(data: bytes, charset: str | None) -> str:
    """Bytes of a text part as str: the declared charset (or its superset), else UTF-8, else Windows-1252."""
    label = (charset or "").strip().strip("\"'").lower()
    try:
        name = codecs.lookup(_SUPERSETS.get(label, label)).name if label else None
    except LookupError:
        name = None
    if name in (None, "ascii"):  # unlabelled or mislabelled 8-bit text is nearly always UTF-8 or Windows-1252
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", "replace")
    try:
        return data.decode(name, "replace")
    except Exception:  # a codec that cannot even replace (some stateful CJK ones on bad input)
        return data.decode("cp1252", "replace")


class _TextOfHtml(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style", "head", "title")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style", "head", "title") and self._skip > 0

    def handle_data(self, data):
        if not self._skip:
            self.chunks.append(data)


def make_snippet(text: str | None, html_body: str | None) -> str | None:
    """About 200 characters of the body as one line, from the text part or else the HTML's text."""
    source = text
    if source is None and html_body is not None:
        parser = _TextOfHtml()
        _guarded(None, lambda: (parser.feed(html_body), parser.close()))
        source = " ".join(parser.chunks)
    if source is None:
        return None
    return " ".join(source.split())[:SNIPPET_LENGTH]


def _classify(leaves: Iterable[_Leaf], want_body: bool) -> tuple[str | None, str | None, list[dict]]:
    """(text, html, attachments): bodies are the first plain/html parts that are not attachments."""
    bodies: dict[str, str] = {}
    attachments = []
    for leaf in leaves:
        index = _first(leaf.headers)
        disp = _mime_header(index, "content-disposition")
        ctype = None if leaf.filename else _mime_header(index, "content-type")  # only its name and charset
        disposition = disp[0] if disp is not None else None
        filename = leaf.filename or _guarded(None, lambda: _filename(ctype, disp))
        content_id = (_raw(index, "content-id") or "").strip("<> \t") or None
        maintype = leaf.content_type.split("/")[0]
        if leaf.content_type in ("text/plain", "text/html") and disposition != "attachment" and not filename:
            kind = leaf.content_type[5:]
            if want_body and kind not in bodies and (data := leaf.data()) is not None:
                charset = ctype[1].get("charset") if ctype is not None else None
                bodies[kind] = decode_text(data, charset).replace("\r\n", "\n")
            continue
        if not (disposition == "attachment" or filename or content_id
                or (maintype not in ("text", "multipart") and not leaf.in_alternative)):
            continue  # another text alternative (text/calendar, a second text/plain…): not a file
        attachments.append({
            "id": leaf.part_id, "filename": filename, "content_type": leaf.content_type, "size": leaf.size,
            "is_inline": disposition == "inline" or (content_id is not None and disposition != "attachment"),
            "content_id": content_id,
        })
    return bodies.get("plain"), bodies.get("html"), attachments


def _filename(ctype: tuple | None, disp: tuple | None) -> str | None:
    for header, param in ((disp, "filename"), (ctype, "name")):
        value = header[1].get(param) if header is not None else None
        if value and value.strip():
            return _clean(value.strip())
    return None


def _email(fields: dict, leaves: list[_Leaf] | None, include_body: bool, snippet: str | None) -> dict:
    want_body = include_body or snippet is None
    text, html_body, attachments = _classify(leaves, want_body) if leaves is not None else (None, None, None)
    result = dict.fromkeys(EMAIL_FIELDS)
    result.update(fields)
    result["snippet"] = snippet if snippet is not None else make_snippet(text, html_body)
    result["text"], result["html"] = (text, html_body) if include_body else (None, None)
    result["attachments"] = attachments
    result["has_attachments"] = (any(not a["is_inline"] for a in attachments)
                                 if attachments is not None else None)
    return result


# --- raw MIME -----------------------------------------------------------------------------------------

def _mime_leaves(part, part_id: str = "", in_alternative: bool = False) -> Iterable[_Leaf]:
    ctype = _guarded("application/octet-stream", part.get_content_type)
    if ctype.startswith("multipart/") and isinstance(part.get_payload(), list):
        for index, child in enumerate(part.get_payload()):
            yield from _mime_leaves(child, f"{part_id}.{index}" if part_id else str(index),
                                    ctype == "multipart/alternative")
        return
    if ctype.startswith("multipart/"):  # no usable boundary: the stdlib kept the body as one text blob
        ctype = "text/plain"
    if ctype.startswith("message/"):  # an attached message is one file; never look inside it
        data = _guarded(None, lambda: part.get_payload(0).as_bytes(policy=email_policy.compat32))
    else:
        data = _guarded(None, lambda: part.get_payload(decode=True))
    yield _Leaf(part_id, list(part.raw_items()), ctype, in_alternative, len(data) if data is not None else None,
                lambda: data)


def email_from_mime(raw: bytes, *, id: str, thread_id: str | None, connection_id: str, provider: str,
                    labels: Iterable[str] = (), is_read: bool | None = None, received_at: Any = None,
                    include_body: bool = True) -> dict:
    """The API email object for RFC 5322 bytes (raw Graph MIME, stored copies, tests).

    `received_at`: epoch seconds, a datetime or RFC 3339 text; when None, the date of the newest
    Received header. Never raises on malformed mail: broken fields become null / [].
    """
    try:
        msg = email.message_from_bytes(raw, policy=email_policy.default)
    except Exception:  # e.g. IndexError on "Content-Type: text/plain; name*": compat32 keeps headers as text
        msg = email.message_from_bytes(raw, policy=email_policy.compat32)
    headers = list(msg.raw_items())
    leaves = _guarded([], lambda: list(_mime_leaves(msg)))
    result = _email(_header_fields(headers), leaves, include_body, None)
    if isinstance(received_at, datetime):
        received_at = received_at.timestamp()
    if isinstance(received_at, (int, float)):
        received_at = clock.rfc3339(received_at)
    elif received_at is None:
        received_at = _sent_at((_raw(_first(headers), "received") or "").rpartition(";")[2])
    result.update(id=id, thread_id=thread_id, connection_id=connection_id, provider=provider,
                  labels=list(labels), is_read=is_read, received_at=received_at)
    return result


# --- Gmail API Message resource -----------------------------------------------------------------------
# {"id": "19485a3b2c1d", "threadId": "19485a3b2c1d", "labelIds": ["INBOX", "UNREAD"], "snippet": "Hi team&#39;s…",
#  "internalDate": "1770112498000", "payload": {"partId": "", "mimeType": "multipart/mixed", "filename": "",
#  "headers": [{"name": "Subject", "value": "=?UTF-8?Q?Caf=C3=A9?="}], "body": {"size": 0}, "parts": [
#   {"partId": "0", "mimeType": "text/plain", "filename": "", "headers": […], "body": {"size": 5, "data": "aGVsbG8"}},
#   {"partId": "1", "mimeType": "application/pdf", "filename": "a.pdf", "headers": […],
#    "body": {"attachmentId": "ANGjdJ8…", "size": 245760}}]}}
# format=metadata has payload.headers only: then text, html and attachments are unknown (null).

def _b64url(data: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except Exception:
        return None


def _gmail_leaves(part: dict, in_alternative: bool = False) -> Iterable[_Leaf]:
    mime_type = str(part.get("mimeType") or "application/octet-stream").lower()
    children = part.get("parts")
    if mime_type.startswith("multipart/") and isinstance(children, list):
        for child in children:
            if isinstance(child, dict):
                yield from _gmail_leaves(child, mime_type == "multipart/alternative")
        return
    headers = [(str(h.get("name", "")), str(h.get("value", ""))) for h in part.get("headers") or []
               if isinstance(h, dict)]
    body = part.get("body") if isinstance(part.get("body"), dict) else {}
    data = body.get("data")
    size = body.get("size")
    yield _Leaf(str(part.get("partId", "")), headers, mime_type, in_alternative,
                int(size) if isinstance(size, (int, str)) and str(size).isdigit() else None,
                lambda: _b64url(data) if isinstance(data, str) else None,
                filename=_guarded(None, lambda: _gmail_filename(part.get("filename"))))


def _gmail_filename(value: Any) -> str | None:
    """Gmail's own decoding of the name; encoded-words it left alone are decoded like a Subject."""
    if not isinstance(value, str) or not value.strip():
        return None
    if "=?" in value:
        value = _unstructured(value)
    return _clean(value.strip())


def email_from_gmail(message: dict, *, connection_id: str, include_body: bool) -> dict:
    """The API email object for a Gmail `users.messages.get` resource (format full or metadata).

    Ids are `google:<connection_id>:<gmail id>`; attachment ids are Gmail partIds (its attachmentId
    changes between fetches). Never raises on a malformed resource: broken fields become null / [].
    """
    payload = message.get("payload") if isinstance(message.get("payload"), dict) else {}
    headers = [(str(h.get("name", "")), str(h.get("value", ""))) for h in payload.get("headers") or []
               if isinstance(h, dict)]
    has_structure = "parts" in payload or "body" in payload
    leaves = _guarded([], lambda: list(_gmail_leaves(payload))) if has_structure else None
    snippet = message.get("snippet")
    result = _email(_header_fields(headers), leaves, include_body,
                    html.unescape(snippet) if isinstance(snippet, str) else None)
    labels = [str(label) for label in message.get("labelIds") or []]
    thread = message.get("threadId")
    result.update(
        id=f"google:{connection_id}:{message.get('id')}", connection_id=connection_id, provider="google",
        thread_id=f"google:{connection_id}:{thread}" if thread else None,
        labels=labels, is_read="UNREAD" not in labels if "labelIds" in message else None,
        received_at=_guarded(None, lambda: clock.rfc3339(int(message["internalDate"]) / 1000)),
    )
    return result


def find_part(payload: dict, part_id: str) -> dict | None:
    """The part of a Gmail payload with this partId (attachment download), or None."""
    if not isinstance(payload, dict):
        return None
    if str(payload.get("partId", "")) == part_id:
        return payload
    for child in payload.get("parts") or []:
        found = find_part(child, part_id)
        if found is not None:
            return found
    return None
