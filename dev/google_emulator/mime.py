"""RFC 5322 bytes → Gmail's MessagePart tree, snippet and search text, with the stdlib email package."""
from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import html
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.S | re.I)
_SPACE = re.compile(r"\s+")


def b64url(data: bytes) -> str:
    """Base64url with padding, as Gmail writes `raw` and `body.data`."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Accept base64url (or standard base64) with or without padding; ValueError if it is not base64."""
    cleaned = text.strip().replace("+", "-").replace("/", "_")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.urlsafe_b64decode(cleaned.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("not base64") from exc


def decode_words(value: str) -> str:
    """RFC 2047 encoded-words → text (for search and filenames only; headers stay raw)."""
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # a malformed encoded-word: search the raw text instead
        return value


@dataclass
class ParsedMessage:
    """What the mailbox keeps of one message besides its raw bytes."""
    headers: list[dict]                       # [{name, value}] raw values, unfolded
    payload: dict                             # MessagePart tree, attachments as attachmentId
    attachments: dict[str, bytes] = field(default_factory=dict)
    snippet: str = ""
    text: str = ""                            # decoded body text, for search
    filenames: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """First raw value of a header (case-insensitive), or None."""
        lname = name.lower()
        return next((h["value"] for h in self.headers if h["name"].lower() == lname), None)


def _headers(part: Message) -> list[dict]:
    # compat32 keeps header values as written (encoded-words and all); Gmail unfolds them.
    return [{"name": k, "value": _FOLD.sub("", str(v))} for k, v in part.items()]


def _is_attachment(part: Message) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return bool(part.get_filename()) or disposition == "attachment" or \
        part.get_content_type() == "message/rfc822"


def _leaf_bytes(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822" and part.is_multipart():
        inner = part.get_payload(0)
        return inner.as_bytes() if isinstance(inner, Message) else b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _text_of(part: Message, data: bytes) -> str:
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return data.decode("utf-8", errors="replace")


def html_to_text(markup: str) -> str:
    return html.unescape(_TAGS.sub(" ", markup))


def parse(raw: bytes, message_id: str) -> ParsedMessage:
    """Parse raw RFC 5322 bytes; attachment ids are stable per (message id, part id)."""
    root = email.message_from_bytes(raw, policy=email.policy.compat32)
    attachments: dict[str, bytes] = {}
    texts: dict[str, list[str]] = {"text/plain": [], "text/html": []}
    filenames: list[str] = []

    def walk(part: Message, part_id: str) -> dict:
        filename = part.get_filename() or ""
        node = {"partId": part_id, "mimeType": part.get_content_type(),
                "filename": decode_words(filename) if filename else "", "headers": _headers(part)}
        if part.is_multipart() and part.get_content_type() != "message/rfc822":
            node["body"] = {"size": 0}
            children = part.get_payload()
            prefix = f"{part_id}." if part_id else ""
            node["parts"] = [walk(child, f"{prefix}{i}") for i, child in enumerate(children)]
            return node
        data = _leaf_bytes(part)
        if _is_attachment(part):
            digest = hashlib.sha256(f"{message_id}/{part_id}".encode()).digest()
            attachment_id = "ANGjdJ" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
            attachments[attachment_id] = data
            node["body"] = {"attachmentId": attachment_id, "size": len(data)}
            if node["filename"]:
                filenames.append(node["filename"])
            return node
        node["body"] = {"size": len(data)}
        if data:
            node["body"]["data"] = b64url(data)
        if node["mimeType"] in texts:
            texts[node["mimeType"]].append(_text_of(part, data))
        return node

    payload = walk(root, "")
    plain = "\n".join(texts["text/plain"])
    rich = html_to_text("\n".join(texts["text/html"]))
    body_text = plain if plain.strip() else rich
    snippet = _SPACE.sub(" ", html.unescape(body_text)).strip()[:200]
    return ParsedMessage(headers=payload["headers"], payload=payload, attachments=attachments,
                         snippet=snippet, text=f"{plain}\n{rich}", filenames=filenames)
