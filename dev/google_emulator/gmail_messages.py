"""Gmail users.messages.*: list, get, send (JSON), modify, trash, untrash, delete, attachments.get."""
from __future__ import annotations

from email import policy
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from flask import Blueprint, request

from . import mime, views
from .errors import bad_request, not_found, too_large
from .gmail_auth import DELETE, READ, SEND, WRITE, gmail_method, state
from .mailbox import Mailbox, ensure_message_id

bp = Blueprint("gmail_messages", __name__, url_prefix="/gmail/v1/users/<userId>/messages")


def json_body() -> dict:
    """The request's JSON object; a Gmail 400 when it is not one."""
    body = request.get_json(silent=True, force=True) if request.get_data() else {}
    if not isinstance(body, dict):
        raise bad_request("Invalid JSON payload received.")
    return body


def send_raw(box: Mailbox, raw: bytes, thread_id: str | None) -> dict:
    """Store a sent message in SENT (threaded like Gmail) → `{id, threadId, labelIds}`."""
    if not raw.strip():
        raise bad_request("'raw' RFC822 payload message string or uploading message via /upload/* URL required")
    raw = ensure_message_id(raw)
    head = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
    if not [a for _, a in getaddresses([str(head.get(n, "")) for n in ("To", "Cc", "Bcc")]) if "@" in a]:
        raise bad_request("Recipient address required")
    msg = box.add(raw, ["SENT"], thread_hint=thread_id)
    return {"id": msg.id, "threadId": msg.thread_id, "labelIds": list(msg.labels)}


@bp.get("")
@gmail_method("gmail.users.messages.list", READ)
def list_messages(box: Mailbox):
    return views.list_messages(box, request.args, state().clock)


@bp.get("/<id>")
@gmail_method("gmail.users.messages.get", READ)
def get_message(box: Mailbox, id: str):
    with box.lock:
        msg = box.get(id)
        return views.message(msg, request.args.get("format", "full"),
                             request.args.getlist("metadataHeaders"))


@bp.post("/send")
@gmail_method("gmail.users.messages.send", SEND)
def send(box: Mailbox):
    limit = state().max_json_body
    if (request.content_length or 0) > limit:
        raise too_large(limit)
    body = json_body()
    raw = body.get("raw")
    if not isinstance(raw, str) or not raw:
        raise bad_request("'raw' RFC822 payload message string or uploading message via /upload/* URL required")
    try:
        data = mime.b64url_decode(raw)
    except ValueError:
        raise bad_request("Invalid value for ByteString: raw") from None
    return send_raw(box, data, body.get("threadId"))


def _label_lists(body: dict) -> tuple[list[str], list[str]]:
    add, remove = body.get("addLabelIds") or [], body.get("removeLabelIds") or []
    if not all(isinstance(x, str) for x in [*add, *remove]):
        raise bad_request("Invalid label ids")
    return add, remove


@bp.post("/<id>/modify")
@gmail_method("gmail.users.messages.modify", WRITE)
def modify(box: Mailbox, id: str):
    add, remove = _label_lists(json_body())
    return views.message(box.modify(id, add, remove), "minimal")


@bp.post("/<id>/trash")
@gmail_method("gmail.users.messages.trash", WRITE)
def trash(box: Mailbox, id: str):
    return views.message(box.trash(id), "minimal")


@bp.post("/<id>/untrash")
@gmail_method("gmail.users.messages.untrash", WRITE)
def untrash(box: Mailbox, id: str):
    return views.message(box.untrash(id), "minimal")


@bp.delete("/<id>")
@gmail_method("gmail.users.messages.delete", DELETE)
def delete(box: Mailbox, id: str):
    box.delete(id)
    return None


@bp.get("/<messageId>/attachments/<id>")
@gmail_method("gmail.users.messages.attachments.get", READ)
def attachment(box: Mailbox, messageId: str, id: str):
    with box.lock:
        data = box.get(messageId).parsed.attachments.get(id)
    if data is None:
        raise not_found("Invalid attachment token")
    return {"attachmentId": id, "size": len(data), "data": mime.b64url(data)}
