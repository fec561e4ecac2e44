"""Sending (API.md section 6): pick the connection, build the MIME, one provider call, audit, `email.sent`.

Every use case is `prepare_*` (validation, connection, reads of the original: nothing sent) then
`deliver` (exactly one provider send). The `email.sent` event is built from the MIME we sent plus the
provider's ids, never read back. Every attempt, success or failure, is appended to AUDIT_LOG with
counts and lengths only (never bodies, subjects or tokens).
"""
from __future__ import annotations

import email
import hashlib
import html as pyhtml
import logging
import secrets as pysecrets
from dataclasses import dataclass, field
from email import policy as email_policy
from typing import Any, Callable, Protocol
from urllib.parse import unquote

from mailbridge import clock
from mailbridge.core.events import emit
from mailbridge.core.ids import build_id, parse_id
from mailbridge.core.mime import (MAX_RECIPIENTS, Address, Attachment, OutgoingMessage, build_mime,
                                  forward_subject, parse_address, parse_address_list, reply_all_recipients,
                                  normalize_message_id, reply_references, reply_subject)
from mailbridge.core.parse import email_from_mime
from mailbridge.errors import InvalidRequestError, MailbridgeError, NotFoundError
from mailbridge.runtime import Runtime
from mailbridge.store.base import AUDIT_LOG, CONNECTIONS

log = logging.getLogger("mailbridge.send")

Recipients = str | list[str] | None


class Caller(Protocol):
    """Who sends (mailbridge.api.auth.Principal): a tenant's key and its permissions."""
    tenant_id: str | None
    key_id: str | None
    permissions: Any


@dataclass
class Draft:
    """A new message (POST /v1/send, /resend/emails); addresses as the caller wrote them."""
    from_: str | None = None
    to: Recipients = None
    cc: Recipients = None
    bcc: Recipients = None
    reply_to: Recipients = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    connection_id: str | None = None
    thread_id: str | None = None          # public ids
    in_reply_to: str | None = None


@dataclass
class ReplyDraft:
    text: str | None = None
    html: str | None = None
    reply_all: bool = False
    cc: Recipients = None
    bcc: Recipients = None
    attachments: list[Attachment] = field(default_factory=list)


@dataclass
class ForwardDraft:
    to: Recipients = None
    cc: Recipients = None
    bcc: Recipients = None
    text: str | None = None
    html: str | None = None


@dataclass
class Prepared:
    """A message ready to go: its bytes, where, and what the audit log may know about it."""
    operation: str
    connection: dict
    raw: bytes
    thread_id: str | None                 # the provider's own id
    recipients: int
    subject_length: int


def public_id(connection: dict, provider_id: str) -> str:
    return build_id(connection["provider"], connection["id"], provider_id)


def parse_public_id(value: str, field_: str | None, what: str = "message") -> tuple[str, str]:
    """(connection id, provider id) of `google:<conn>:<id>`, URL-encoded or not. Malformed: 422 naming
    `field_` (a body field), or 404 when `field_` is None (the id came in the path)."""
    text = unquote(value) if isinstance(value, str) and "%" in value else value
    parsed = parse_id(text, what=what, field=field_)
    return parsed.connection_id, parsed.provider_id


def visible_connection(runtime: Runtime, caller: Caller, connection_id: str) -> dict:
    """The stored connection if the caller's key sees it; NotFoundError otherwise (never 403)."""
    record = runtime.store.get(CONNECTIONS, connection_id) if connection_id.startswith("conn_") else None
    if (record is None or record.get("tenant_id") != caller.tenant_id
            or not caller.permissions.sees_connection(connection_id)):
        raise NotFoundError(f"connection {connection_id} not found")
    return record


def choose_connection(runtime: Runtime, caller: Caller, connection_id: str | None,
                      sender: Address | None) -> dict:
    """`connection_id`'s connection, else the one the key sees whose address is exactly `sender`'s.
    None or several → 422 naming `from` / `connection_id` (a disconnected one counts only alone)."""
    if connection_id:
        return visible_connection(runtime, caller, connection_id)
    if sender is None:
        raise InvalidRequestError("from: required when connection_id is not given", field="from")
    found = [r for r in runtime.store.query(CONNECTIONS, [("tenant_id", "==", caller.tenant_id),
                                                          ("email_key", "==", sender.email.lower())])
             if caller.permissions.sees_connection(r["id"])]
    live = [r for r in found if not r.get("disconnected_ts")] or found
    if not live:
        raise InvalidRequestError(f"from: no connected mailbox of this API key has the address {sender.email}",
                                  field="from")
    if len(live) > 1:
        raise InvalidRequestError(f"connection_id: {len(live)} connections have the address {sender.email}; "
                                  "say which one with connection_id", field="connection_id")
    return live[0]


def _provider(runtime: Runtime, connection: dict):
    from mailbridge.core.mailbox import provider_for   # loads the provider's client library lazily
    return provider_for(runtime, connection)


def _own_id(connection: dict, value: str, field_: str, what: str = "message") -> str:
    conn_id, provider_id = parse_public_id(value, field_, what)
    if conn_id != connection["id"]:
        raise InvalidRequestError(f"{field_}: belongs to another connection than the one sending",
                                  field=field_)
    return provider_id


def _finish(operation: str, connection: dict, message: OutgoingMessage, thread_id: str | None) -> Prepared:
    total = len(message.to) + len(message.cc) + len(message.bcc)
    if total == 0:
        raise InvalidRequestError("to: at least one recipient is required", field="to")
    if total > MAX_RECIPIENTS:
        raise InvalidRequestError(f"to: at most {MAX_RECIPIENTS} recipients per message (to, cc and bcc "
                                  f"together), got {total}", field="to")
    raw = build_mime(message)
    return Prepared(operation, connection, raw, thread_id, total, len(message.subject or ""))


def prepare_send(runtime: Runtime, caller: Caller, draft: Draft, operation: str = "send") -> Prepared:
    """Validate a new message and build it. With `in_reply_to`, one read of the original makes it a
    proper reply (headers, its thread, `Re:`). Raises InvalidRequestError, PayloadTooLargeError,
    NotFoundError (connection or original), and the provider's errors for that read."""
    sender = parse_address(draft.from_, "from") if draft.from_ is not None else None
    conn_id = draft.connection_id
    if not conn_id and sender is None and (draft.in_reply_to or draft.thread_id):
        conn_id = (parse_public_id(draft.in_reply_to, "in_reply_to")[0] if draft.in_reply_to
                   else parse_public_id(draft.thread_id, "thread_id", "thread")[0])
    connection = choose_connection(runtime, caller, conn_id, sender)
    message = OutgoingMessage(
        from_=sender or Address(connection["email"]), to=parse_address_list(draft.to, "to"),
        cc=parse_address_list(draft.cc, "cc"), bcc=parse_address_list(draft.bcc, "bcc"),
        reply_to=parse_address_list(draft.reply_to, "reply_to"), subject=draft.subject or "",
        text=draft.text, html=draft.html, headers=dict(draft.headers), attachments=list(draft.attachments))
    thread_id = _own_id(connection, draft.thread_id, "thread_id", "thread") if draft.thread_id else None
    if draft.in_reply_to:
        original_id = _own_id(connection, draft.in_reply_to, "in_reply_to")
        original = _provider(runtime, connection).get_message(original_id, include_body=False)
        original_thread = parse_public_id(original["thread_id"], "in_reply_to", "thread")[1]
        if thread_id and thread_id != original_thread:
            raise InvalidRequestError("thread_id: the message in in_reply_to is in another thread",
                                      field="thread_id")
        _as_reply(message, original, draft.subject)
        thread_id = original_thread
    return _finish(operation, connection, message, thread_id)


def _as_reply(message: OutgoingMessage, original: dict, subject: str | None) -> None:
    message.subject = reply_subject(subject if subject else original.get("subject"))
    message.references = reply_references(original.get("references") or [], original.get("message_id"))
    try:  # junk in the original's Message-ID is not the caller's fault: reply without In-Reply-To
        message.in_reply_to = normalize_message_id(original.get("message_id") or "", "in_reply_to")
    except InvalidRequestError:
        message.in_reply_to = None


def prepare_reply(runtime: Runtime, caller: Caller, message_id: str, draft: ReplyDraft) -> Prepared:
    """A reply to a stored message: one read of the original; to its Reply-To/From (reply_all: the
    recipients Gmail's reply-all picks), `In-Reply-To`, the whole `References` chain, its thread."""
    conn_id, original_id = parse_public_id(message_id, None)
    connection = visible_connection(runtime, caller, conn_id)
    original = _provider(runtime, connection).get_message(original_id, include_body=False)
    to, cc = reply_all_recipients(original, connection["email"])
    if not draft.reply_all:
        cc = []
    message = OutgoingMessage(from_=Address(connection["email"]), to=to,
                              cc=_merge(cc, parse_address_list(draft.cc, "cc")),
                              bcc=parse_address_list(draft.bcc, "bcc"), text=draft.text, html=draft.html,
                              attachments=list(draft.attachments))
    _as_reply(message, original, None)
    return _finish("reply", connection, message, parse_public_id(original["thread_id"], None, "thread")[1])


def _merge(first: list[Address], second: list[Address]) -> list[Address]:
    seen, out = set(), []
    for address in [*first, *second]:
        if address.email.lower() not in seen:
            seen.add(address.email.lower())
            out.append(address)
    return out


def prepare_forward(runtime: Runtime, caller: Caller, message_id: str, draft: ForwardDraft) -> Prepared:
    """A forward: one read of the original's raw bytes gives its headers, bodies and attachments (all
    included, inline ones with their Content-ID); `Fwd:` subject and the original quoted below."""
    conn_id, original_id = parse_public_id(message_id, None)
    connection = visible_connection(runtime, caller, conn_id)
    raw = _provider(runtime, connection).get_raw(original_id)
    original = email_from_mime(raw, id=message_id, thread_id=None, connection_id=conn_id,
                               provider=connection["provider"])
    text, html = _forward_bodies(original, draft.text, draft.html)
    message = OutgoingMessage(from_=Address(connection["email"]), to=parse_address_list(draft.to, "to"),
                              cc=parse_address_list(draft.cc, "cc"), bcc=parse_address_list(draft.bcc, "bcc"),
                              subject=forward_subject(original.get("subject")), text=text, html=html,
                              attachments=_original_attachments(raw, original))
    return _finish("forward", connection, message, None)


def _forward_bodies(original: dict, text: str | None, html: str | None) -> tuple[str, str | None]:
    """The caller's note above the original, quoted like Gmail's "Forwarded message" block; an HTML
    part only when the note or the original has one."""
    sender = original.get("from") or {}
    fields = [("From", _show(sender) if sender else ""), ("Date", original.get("sent_at") or ""),
              ("Subject", original.get("subject") or ""),
              ("To", ", ".join(_show(a) for a in original.get("to") or []))]
    if original.get("cc"):
        fields.append(("Cc", ", ".join(_show(a) for a in original["cc"])))
    head = "---------- Forwarded message ---------"
    quoted_text = "\n".join([head, *(f"{k}: {v}" for k, v in fields), "",
                             original.get("text") or original.get("snippet") or ""])
    out_text = f"{text}\n\n{quoted_text}" if text else quoted_text
    if html is None and original.get("html") is None:
        return out_text, None
    note = html if html is not None else pyhtml.escape(text or "").replace("\n", "<br>")
    block = "<br>".join([pyhtml.escape(head), *(f"{k}: {pyhtml.escape(v)}" for k, v in fields)])
    body = original.get("html") or pyhtml.escape(original.get("text") or "").replace("\n", "<br>")
    return out_text, f'{note}<br><br><div class="gmail_quote">{block}<br><br>{body}</div>'


def _show(address: dict) -> str:
    return f"{address['name']} <{address['email']}>" if address.get("name") else address.get("email", "")


def _original_attachments(raw: bytes, original: dict) -> list[Attachment]:
    """The original's files (inline ones keep their Content-ID), cut out of its raw MIME by part id."""
    message = email.message_from_bytes(raw, policy=email_policy.default)
    files = []
    for item in original.get("attachments") or []:
        part = message
        for index in filter(None, str(item["id"]).split(".")):
            part = part.get_payload()[int(index)]
        if part.get_content_type().startswith("message/"):
            data = part.get_payload(0).as_bytes(policy=email_policy.compat32)
        else:
            data = part.get_payload(decode=True) or b""
        files.append(Attachment(filename=item.get("filename") or "", content=data,
                                content_type=item.get("content_type"),
                                content_id=item.get("content_id") if item.get("is_inline") else None))
    return files


def deliver(runtime: Runtime, caller: Caller, prepared: Prepared) -> dict:
    """Send (one provider call), then the audit entry and the `email.sent` event. Once the provider
    accepted the message the answer is success: a failing audit or event write is logged, not raised
    (raising would make the caller retry and send the mail twice)."""
    connection = prepared.connection
    sent = _provider(runtime, connection).send(prepared.raw, thread_id=prepared.thread_id)
    result = {"id": public_id(connection, sent.id), "thread_id": public_id(connection, sent.thread_id),
              "connection_id": connection["id"], "provider": connection["provider"]}
    try:
        audit(runtime, caller, prepared.operation, connection_id=connection["id"], outcome="sent",
              message_id=result["id"], thread_id=result["thread_id"], recipients=prepared.recipients,
              subject_length=prepared.subject_length)
        email = email_from_mime(prepared.raw, id=result["id"], thread_id=result["thread_id"],
                                connection_id=connection["id"], provider=connection["provider"],
                                labels=["SENT"], is_read=True, received_at=clock.now())
        emit(runtime.store, runtime.bus, tenant_id=connection["tenant_id"], event_type="email.sent", data=email,
             connection_id=connection["id"],
             event_id="evt_" + hashlib.sha256(f"email.sent:{result['id']}".encode()).hexdigest()[:24])
    except Exception:
        log.exception("message %s was sent, but its audit entry or email.sent event failed", result["id"])
    return result


def audit(runtime: Runtime, caller: Caller, operation: str, *, connection_id: str | None, outcome: str,
          message_id: str | None = None, thread_id: str | None = None, recipients: int | None = None,
          subject_length: int | None = None, error: MailbridgeError | None = None) -> None:
    """Append one AUDIT_LOG entry: who, which connection, ids, counts; never content or secrets."""
    runtime.store.put(AUDIT_LOG, "aud_" + pysecrets.token_hex(12), {
        "tenant_id": caller.tenant_id, "key_id": caller.key_id, "connection_id": connection_id,
        "direction": "sent", "operation": operation, "message_id": message_id, "thread_id": thread_id,
        "recipients": recipients, "subject_length": subject_length, "outcome": outcome,
        "error_code": error.code if error else None, "error_status": error.status if error else None,
        "created_ts": clock.now()})


def audited(runtime: Runtime, caller: Caller, operation: str, connection_id: str | None,
            run: Callable[[], Prepared]) -> dict:
    """prepare + deliver, with a `failed` audit entry (error code only) for anything refused."""
    prepared: Prepared | None = None
    try:
        prepared = run()
        return deliver(runtime, caller, prepared)
    except MailbridgeError as exc:
        try:
            audit(runtime, caller, operation, outcome="failed", error=exc,
                  connection_id=prepared.connection["id"] if prepared else connection_id,
                  recipients=prepared.recipients if prepared else None,
                  subject_length=prepared.subject_length if prepared else None)
        except Exception:
            log.exception("audit entry of a failed %s could not be written", operation)
        raise


def send_email(runtime: Runtime, caller: Caller, draft: Draft, operation: str = "send") -> dict:
    """POST /v1/send (and /resend/emails): `{id, thread_id, connection_id, provider}` in public ids."""
    return audited(runtime, caller, operation, draft.connection_id,
                   lambda: prepare_send(runtime, caller, draft, operation))


def reply(runtime: Runtime, caller: Caller, message_id: str, draft: ReplyDraft) -> dict:
    """POST /v1/messages/{id}/reply."""
    conn = _connection_of(message_id)
    return audited(runtime, caller, "reply", conn, lambda: prepare_reply(runtime, caller, message_id, draft))


def forward(runtime: Runtime, caller: Caller, message_id: str, draft: ForwardDraft) -> dict:
    """POST /v1/messages/{id}/forward."""
    conn = _connection_of(message_id)
    return audited(runtime, caller, "forward", conn,
                   lambda: prepare_forward(runtime, caller, message_id, draft))


def _connection_of(message_id: str) -> str | None:
    try:
        return parse_public_id(message_id, None)[0]
    except NotFoundError:
        return None


def send_batch(runtime: Runtime, caller: Caller, drafts: list[Draft], *,
               permissive: bool = False) -> tuple[list[dict], list[dict]]:
    """Resend's batch: every message validated and built before any is sent. Strict: the first invalid
    one refuses the batch (its error names `[index]`); permissive: invalid ones are skipped and listed
    as `{index, message}`. Returns (results of the sent, errors)."""
    ready: list[Prepared] = []
    errors: list[dict] = []
    for index, draft in enumerate(drafts):
        try:
            ready.append(prepare_send(runtime, caller, draft, "resend_batch"))
        except InvalidRequestError as exc:
            if not permissive:
                audit(runtime, caller, "resend_batch", connection_id=draft.connection_id, outcome="failed",
                      error=exc)
                raise InvalidRequestError(f"[{index}].{exc.message}", field=f"[{index}].{exc.field or ''}",
                                          status=exc.status) from None
            errors.append({"index": index, "message": exc.message})
    results = [audited(runtime, caller, "resend_batch", p.connection["id"], lambda p=p: p) for p in ready]
    return results, errors


def find_sent(runtime: Runtime, caller: Caller, message_id: str) -> tuple[dict, dict]:
    """(the email as the mailbox has it now, its `sent` audit entry) of a message sent through
    mailbridge by the caller's tenant; NotFoundError for anything else. One provider read."""
    conn_id, provider_id = parse_public_id(message_id, None)
    connection = visible_connection(runtime, caller, conn_id)
    entries = [e for e in runtime.store.query(AUDIT_LOG, [("message_id", "==", message_id)])
               if e.get("tenant_id") == caller.tenant_id and e.get("outcome") == "sent"]
    if not entries:
        raise NotFoundError(f"email {message_id} not found")
    return _provider(runtime, connection).get_message(provider_id, include_body=True), entries[0]
