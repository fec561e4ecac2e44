"""Outgoing mail: validated addresses and headers, MIME built with the stdlib `email` package, reply helpers."""
from __future__ import annotations

import functools
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy as email_policy
from email.headerregistry import Address as _HeaderAddress
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from mailbridge import clock
from mailbridge.errors import InvalidRequestError, PayloadTooLargeError

MAX_MESSAGE_BYTES = 25 * 1024 * 1024
MAX_RECIPIENTS = 100

# Every character str.splitlines() breaks on, plus NUL: the email package folds on some of these, and
# this Python predates the CVE-2024-6923 fix, so any of them in a header value could inject a header.
_LINE_BREAKS = re.compile("[\x00\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_FIELD_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")  # RFC 5322 ftext: printable ASCII except ':'
_STRUCTURAL = {"from", "to", "cc", "bcc", "reply-to", "sender", "subject", "date", "message-id",
               "mime-version", "in-reply-to", "references"}
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_MSG_ID = re.compile(r"^<?([\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+)>?$")  # no < > or spaces
_CONTENT_ID = re.compile(r"^<?([\x21-\x3b\x3d\x3f-\x7e]+)>?$")  # "logo" is common and accepted everywhere
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 2045 token, for content types
_REPLY_PREFIX = re.compile(r"^\s*re\s*(?:\[\d+\]|\(\d+\))?\s*:\s*", re.IGNORECASE)
_FORWARD_PREFIX = re.compile(r"^\s*(?:fwd?|fw)\s*(?:\[\d+\])?\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Address:
    email: str
    name: str | None = None


@dataclass
class Attachment:
    """A file to send; `content_id` set means inline, referenced as `cid:<content_id>` from the HTML."""
    filename: str
    content: bytes
    content_type: str | None = None
    content_id: str | None = None


@dataclass
class OutgoingMessage:
    from_: Address
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    message_id: str | None = None


class _IdListHeader(UnstructuredHeader):
    """Message-ID, In-Reply-To, References, Content-ID: folded only between ids.

    The default policy folds any header over 78 columns into RFC 2047 encoded-words, which turns a
    long id (Gmail's are ~70 characters) into garbage no threading code will match. Our values are
    validated printable ASCII, so folding at the spaces between ids is always correct.
    """

    def fold(self, *, policy):
        return f"{self.name}: " + (policy.linesep + " ").join(str(self).split()) + policy.linesep


@functools.lru_cache(maxsize=1)
def _policy():
    """SMTP policy (CRLF) whose id headers fold safely; built on first use, not at import."""
    registry = HeaderRegistry()
    for name in ("message-id", "in-reply-to", "references", "content-id"):
        registry.map_to_type(name, _IdListHeader)
    return email_policy.SMTP.clone(header_factory=registry)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_header_value(name: str, value: str, field: str) -> None:
    """Reject a header value with a line break (header injection); InvalidRequestError naming `field`."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{field}: must be a string", field=field)
    if _LINE_BREAKS.search(value):
        raise InvalidRequestError(f"{field}: line breaks are not allowed in the {name} header", field=field)


def check_custom_header(name: str, value: str) -> None:
    """A user header: an RFC 5322 field name that does not override one we build; errors name `headers.<Name>`."""
    field_ = f"headers.{name}"
    if not isinstance(name, str) or not _FIELD_NAME.match(name):
        raise InvalidRequestError(f"headers: {_short(name)} is not a valid header name", field=field_)
    lowered = name.lower()
    if lowered in _STRUCTURAL or lowered.startswith("content-"):
        raise InvalidRequestError(f"{field_}: {name} is set by mailbridge and cannot be overridden",
                                  field=field_)
    check_header_value(name, value, field_)


def _check_address(email: str, field: str) -> str:
    """The address in sendable form (IDNA domain), or InvalidRequestError naming `field`."""
    bad = InvalidRequestError(f"{field}: {_short(email)} is not a valid email address", field=field)
    if not isinstance(email, str) or _LINE_BREAKS.search(email) or email.count("@") != 1:
        raise bad
    local, domain = email.split("@")
    try:
        domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise bad from None
    labels = domain.split(".")
    if (not _LOCAL_PART.match(local) or len(local) > 64 or len(labels) < 2
            or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit()):
        raise bad
    if len(local) + 1 + len(domain) > 254:
        raise bad
    return f"{local}@{domain}"


def _checked(address: Address, field: str) -> Address:
    if not isinstance(address, Address):
        raise InvalidRequestError(f"{field}: expected an address", field=field)
    if address.name is not None:
        check_header_value("address", address.name, field)
    return Address(_check_address(address.email, field), address.name or None)


def _parse(value: str, field: str) -> list[Address]:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{field}: must be a string or a list of strings", field=field)
    if not value.strip():
        raise InvalidRequestError(f"{field}: an empty address is not allowed", field=field)
    check_header_value("address", value, field)
    bad = InvalidRequestError(f"{field}: {_short(value)} is not a valid email address", field=field)
    try:
        header = email_policy.default.header_factory("to", value)
        groups = header.groups
    except Exception:  # the stdlib parser raises IndexError and friends on some garbage
        raise bad from None
    if header.defects or not groups or any(group.display_name is not None for group in groups):
        raise bad
    return [_checked(Address(a.addr_spec, a.display_name or None), field) for a in header.addresses]


def parse_address(value: str, field: str) -> Address:
    """One address ("a@x.com", "Name <a@x.com>", '"Last, First" <a@x.com>'); InvalidRequestError naming `field`."""
    addresses = _parse(value, field)
    if len(addresses) != 1:
        raise InvalidRequestError(f"{field}: expected exactly one email address", field=field)
    return addresses[0]


def parse_address_list(value: str | list[str] | None, field: str) -> list[Address]:
    """A string (comma-separated) or a list of single addresses; at most 100; errors name `field`."""
    if value is None:
        return []
    if isinstance(value, str):
        addresses = _parse(value, field)
    elif isinstance(value, (list, tuple)):
        addresses = [parse_address(item, field) for item in value]
    else:
        raise InvalidRequestError(f"{field}: must be a string or a list of strings", field=field)
    _check_count(addresses, field)
    return addresses


def _check_count(addresses: list, field: str) -> None:
    if len(addresses) > MAX_RECIPIENTS:
        raise InvalidRequestError(
            f"{field}: at most {MAX_RECIPIENTS} recipients are allowed, got {len(addresses)}", field=field)


def normalize_message_id(value: str, field: str) -> str:
    """`<id@host>` from "<id@host>" or "id@host"; InvalidRequestError naming `field` for anything else."""
    match = _MSG_ID.match(value.strip()) if isinstance(value, str) else None
    if not match or "=?" in value or value.strip().startswith("<") != value.strip().endswith(">"):
        raise InvalidRequestError(f"{field}: {_short(value)} is not a valid Message-ID", field=field)
    return f"<{match.group(1)}>"


def _content_type(attachment: Attachment, field: str) -> tuple[str, str]:
    ctype = attachment.content_type or mimetypes.guess_type(attachment.filename or "")[0]
    ctype = (ctype or "application/octet-stream").strip().lower()
    maintype, _, subtype = ctype.partition("/")
    if not (_TOKEN.match(maintype) and _TOKEN.match(subtype or "")) or maintype == "multipart":
        raise InvalidRequestError(f"{field}.content_type: {_short(ctype)} is not a valid content type",
                                  field=f"{field}.content_type")
    return maintype, subtype


def _add_file(container: EmailMessage, att: Attachment, index: int, inline: bool) -> None:
    field_ = f"attachments[{index}]"
    if not isinstance(att.content, (bytes, bytearray)):
        raise InvalidRequestError(f"{field_}.content: must be bytes", field=f"{field_}.content")
    check_header_value("Content-Disposition", att.filename or "", f"{field_}.filename")
    maintype, subtype = _content_type(att, field_)
    if maintype == "message":  # RFC 2046: message/* may not be base64; send it as an opaque file instead
        maintype, subtype = "application", "octet-stream"
    kwargs = {"filename": att.filename or None, "disposition": "inline" if inline else "attachment"}
    if att.content_id:
        match = _CONTENT_ID.match(att.content_id) if isinstance(att.content_id, str) else None
        if not match or "=?" in att.content_id:
            raise InvalidRequestError(f"{field_}.content_id: {_short(att.content_id)} is not a valid Content-ID",
                                      field=f"{field_}.content_id")
        kwargs["cid"] = f"<{match.group(1)}>"
    adder = container.add_related if inline else container.add_attachment
    adder(bytes(att.content), maintype, subtype, **kwargs)
    if att.filename:  # older Outlook reads the name from Content-Type, not Content-Disposition
        container.get_payload()[-1].set_param("name", att.filename)


def _validate(msg: OutgoingMessage) -> None:
    check_header_value("Subject", msg.subject or "", "subject")
    for name, value in msg.headers.items():
        check_custom_header(name, value)
    for kind in ("to", "cc", "bcc", "reply_to"):
        _check_count(getattr(msg, kind), kind)
    size = sum(len(a.content) for a in msg.attachments if isinstance(a.content, (bytes, bytearray)))
    if size > MAX_MESSAGE_BYTES:  # encoding only grows it: refuse before spending time on base64
        raise PayloadTooLargeError(f"attachments total {size} bytes; a message may be at most 25 MiB")


def build_mime(msg: OutgoingMessage) -> bytes:
    """RFC 5322 bytes with CRLF line endings, ready for Gmail's `raw` or Graph's MIME send.

    Raises InvalidRequestError (naming the field) for a bad address, header, Message-ID or content
    type, PayloadTooLargeError when the encoded message exceeds MAX_MESSAGE_BYTES. Each call makes a
    new Message-ID and Date unless `message_id` is given.
    """
    _validate(msg)
    sender = _checked(msg.from_, "from")
    out = EmailMessage(policy=_policy())
    out["From"] = _HeaderAddress(display_name=sender.name or "", addr_spec=sender.email)
    for header, kind in (("To", "to"), ("Cc", "cc"), ("Bcc", "bcc"), ("Reply-To", "reply_to")):
        addresses = [_checked(a, kind) for a in getattr(msg, kind)]
        if addresses:  # Bcc too: Gmail delivers to it and strips it from what recipients see
            out[header] = [_HeaderAddress(display_name=a.name or "", addr_spec=a.email) for a in addresses]
    out["Subject"] = msg.subject or ""
    out["Date"] = format_datetime(datetime.fromtimestamp(int(clock.now()), tz=timezone.utc))
    out["Message-ID"] = (normalize_message_id(msg.message_id, "message_id") if msg.message_id
                         else make_msgid(domain=sender.email.split("@")[1]))
    if msg.in_reply_to:
        out["In-Reply-To"] = normalize_message_id(msg.in_reply_to, "in_reply_to")
    if msg.references:
        out["References"] = " ".join(normalize_message_id(r, "references") for r in msg.references)
    for name, value in msg.headers.items():
        out[name] = value
    _build_body(out, msg)
    for part in out.walk():  # the stdlib stamps MIME-Version on every part it creates; only the root needs it
        if part is not out:
            del part["MIME-Version"]
    data = out.as_bytes(policy=out.policy)
    if len(data) > MAX_MESSAGE_BYTES:
        raise PayloadTooLargeError(f"the encoded message is {len(data)} bytes; the limit is 25 MiB")
    return data


def _build_body(out: EmailMessage, msg: OutgoingMessage) -> None:
    """text → text/plain; + html → alternative; inline parts → related around the html; files → mixed."""
    inline = [(i, a) for i, a in enumerate(msg.attachments) if a.content_id and msg.html is not None]
    files = [(i, a) for i, a in enumerate(msg.attachments) if not (a.content_id and msg.html is not None)]
    html_part = out
    if msg.text is not None or msg.html is None:
        out.set_content(msg.text or "", subtype="plain", charset="utf-8")
        if msg.html is not None:
            out.add_alternative(msg.html, subtype="html", charset="utf-8")
            html_part = out.get_payload()[1]
    else:
        out.set_content(msg.html, subtype="html", charset="utf-8")
    for index, att in inline:
        _add_file(html_part, att, index, inline=True)
    for index, att in files:
        _add_file(out, att, index, inline=bool(att.content_id))


def reply_subject(subject: str | None) -> str:
    """"Re: " exactly once: "RE: Re[2]: x" → "Re: x"."""
    rest = subject or ""
    while (match := _REPLY_PREFIX.match(rest)) is not None:
        rest = rest[match.end():]
    return f"Re: {rest}".rstrip()


def forward_subject(subject: str | None) -> str:
    """"Fwd: " exactly once: "FW: x" → "Fwd: x"; "Re: x" → "Fwd: Re: x"."""
    rest = subject or ""
    while (match := _FORWARD_PREFIX.match(rest)) is not None:
        rest = rest[match.end():]
    return f"Fwd: {rest}".rstrip()


def reply_references(original_references: list[str], original_message_id: str | None) -> list[str]:
    """The reply's References: the original's chain then its own id, each `<…>`, no duplicates.

    Ids that are not valid Message-IDs (junk from incoming mail) are dropped rather than refused:
    the user did not write them, and a reply must still be sendable.
    """
    result: list[str] = []
    for value in [*(original_references or []), original_message_id]:
        try:
            msg_id = normalize_message_id(value, "references") if value else None
        except InvalidRequestError:
            continue
        if msg_id and msg_id not in result:
            result.append(msg_id)
    return result


def reply_all_recipients(original: dict, me: str) -> tuple[list[Address], list[Address]]:
    """(to, cc) the way Gmail's reply-all picks them from an API email object (API.md section 5).

    To: the original Reply-To, else its From; when I sent the original, its To again. Cc: the other
    To and Cc recipients. My own address is removed and duplicates dropped, case-insensitively.
    """
    mine = (me or "").strip().lower()

    def addresses(value) -> list[Address]:
        items = value if isinstance(value, list) else [value] if value else []
        return [Address(i["email"], i.get("name")) for i in items if isinstance(i, dict) and i.get("email")]

    sender = addresses(original.get("from"))
    if sender and sender[0].email.lower() == mine and not original.get("reply_to"):
        to, cc = addresses(original.get("to")), addresses(original.get("cc"))
    else:
        to = addresses(original.get("reply_to")) or sender
        cc = addresses(original.get("to")) + addresses(original.get("cc"))
    seen = {mine}
    result: tuple[list[Address], list[Address]] = ([], [])
    for target, source in zip(result, (to, cc)):
        for address in source:
            if address.email.lower() not in seen:
                seen.add(address.email.lower())
                target.append(address)
    if not result[0] and sender:  # a note to myself: reply to myself rather than to nobody
        result[0].append(sender[0])
    return result
