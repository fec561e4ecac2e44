"""Blueprint of the `send` Cloud Function: /v1/send, reply, forward, and the Resend-compatible routes."""
from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Callable

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from mailbridge import clock
from mailbridge.api.auth import principal, requires
from mailbridge.api.body import parse_body
from mailbridge.api.context import runtime
from mailbridge.api.errors import validation_field
from mailbridge.core import idempotency
from mailbridge.core import send as core
from mailbridge.core.mime import Attachment
from mailbridge.errors import InvalidRequestError

bp = Blueprint("send", __name__)

Recipients = StrictStr | list[StrictStr] | None
MAX_BATCH = 100


class _Native(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttachmentIn(_Native):
    filename: StrictStr = Field(max_length=255)
    content: StrictStr                       # standard (or URL-safe) base64
    content_type: StrictStr | None = None
    content_id: StrictStr | None = None


class SendBody(_Native):
    connection_id: StrictStr | None = None
    from_: StrictStr | None = Field(None, alias="from")
    to: Recipients = None
    cc: Recipients = None
    bcc: Recipients = None
    reply_to: Recipients = None
    subject: StrictStr | None = Field(None, max_length=998)
    html: StrictStr | None = None
    text: StrictStr | None = None
    headers: dict[StrictStr, StrictStr] = Field(default_factory=dict, max_length=100)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=100)
    thread_id: StrictStr | None = None
    in_reply_to: StrictStr | None = None


class ReplyBody(_Native):
    text: StrictStr | None = None
    html: StrictStr | None = None
    reply_all: StrictBool = False
    cc: Recipients = None
    bcc: Recipients = None
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=100)


class ForwardBody(_Native):
    to: StrictStr | list[StrictStr]
    cc: Recipients = None
    bcc: Recipients = None
    text: StrictStr | None = None
    html: StrictStr | None = None


class ResendAttachment(BaseModel):
    """Resend's attachment: `content` is base64 text or a list of byte values (the Python SDK's
    `list(open(f, "rb").read())`); `inline_content_id` is Resend's other name for `content_id`."""
    model_config = ConfigDict(extra="ignore")
    content: StrictStr | list[Annotated[int, Field(ge=0, le=255)]] | None = None
    filename: StrictStr | None = None
    path: StrictStr | None = None
    content_type: StrictStr | None = None
    content_id: StrictStr | None = None
    inline_content_id: StrictStr | None = None


class ResendEmail(BaseModel):
    """Resend's POST /emails body; `tags` and `topic_id` are accepted and ignored."""
    model_config = ConfigDict(extra="ignore")
    from_: StrictStr = Field(alias="from")
    to: StrictStr | list[StrictStr]
    subject: StrictStr = Field("", max_length=998)
    bcc: Recipients = None
    cc: Recipients = None
    reply_to: Recipients = None
    html: StrictStr | None = None
    text: StrictStr | None = None
    headers: dict[StrictStr, StrictStr] | None = None
    attachments: list[ResendAttachment] | None = Field(None, max_length=100)
    scheduled_at: StrictStr | None = None
    template: dict | None = None


def _decode(content: str | list[int], field: str) -> bytes:
    if isinstance(content, list):
        return bytes(content)
    text = "".join(content.split())
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text.encode("ascii"))
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidRequestError(f"{field}: not valid base64", field=field) from None


def _attachments(items: list[AttachmentIn]) -> list[Attachment]:
    return [Attachment(a.filename, _decode(a.content, f"attachments[{i}].content"), a.content_type, a.content_id)
            for i, a in enumerate(items)]


def _idempotent(run: Callable[[], dict]) -> Response:
    """Run `run` once per Idempotency-Key (per tenant, 24 h): the same request again gets the stored
    answer, another request with the key 409. Without the header, just run it."""
    key = idempotency.check_key(request.headers.get(idempotency.HEADER))
    if key is None:
        return jsonify(run())
    store = runtime().store
    fingerprint = idempotency.request_hash(request.method, request.path, request.get_data(cache=True))
    outcome = idempotency.begin(store, principal().tenant_id, key, fingerprint)
    if isinstance(outcome, idempotency.Replay):
        resp = jsonify(outcome.body)
        resp.status_code = outcome.status
        resp.headers["Idempotent-Replayed"] = "true"
        return resp
    try:
        body = run()
    except BaseException:
        idempotency.release(store, outcome)
        raise
    idempotency.complete(store, outcome, 200, body)
    return jsonify(body)


# ---- native routes ----------------------------------------------------------------------------

@bp.post("/v1/send")
@requires("send_email")
def send_email():
    def run() -> dict:
        body = parse_body(SendBody)
        draft = core.Draft(**body.model_dump(exclude={"attachments"}), attachments=_attachments(body.attachments))
        return core.send_email(runtime(), principal(), draft)
    return _idempotent(run)


@bp.post("/v1/messages/<path:id>/reply")
@requires("reply_to_email")
def reply_to_email(id: str):
    def run() -> dict:
        body = parse_body(ReplyBody)
        draft = core.ReplyDraft(**body.model_dump(exclude={"attachments"}),
                                attachments=_attachments(body.attachments))
        return core.reply(runtime(), principal(), id, draft)
    return _idempotent(run)


@bp.post("/v1/messages/<path:id>/forward")
@requires("forward_email")
def forward_email(id: str):
    def run() -> dict:
        body = parse_body(ForwardBody)
        return core.forward(runtime(), principal(), id, core.ForwardDraft(**body.model_dump()))
    return _idempotent(run)


# ---- Resend compatibility -------------------------------------------------------------------------

def _resend_draft(email: ResendEmail, where: str = "") -> core.Draft:
    if email.scheduled_at is not None:
        raise InvalidRequestError(f"{where}scheduled_at: scheduled sending is not supported", field="scheduled_at")
    if email.template is not None:
        raise InvalidRequestError(f"{where}template: Resend templates are not supported", field="template")
    files = []
    for i, att in enumerate(email.attachments or []):
        name = f"{where}attachments[{i}]"
        if att.path is not None:
            raise InvalidRequestError(f"{name}.path: remote attachments are not fetched; send the bytes "
                                      "in content", field=f"{name}.path")
        if att.content is None:
            raise InvalidRequestError(f"{name}.content: required", field=f"{name}.content")
        files.append(Attachment(att.filename or "", _decode(att.content, f"{name}.content"), att.content_type,
                                att.content_id or att.inline_content_id))
    return core.Draft(from_=email.from_, to=email.to, cc=email.cc, bcc=email.bcc, reply_to=email.reply_to,
                      subject=email.subject, text=email.text, html=email.html, headers=dict(email.headers or {}),
                      attachments=files)


@bp.post("/resend/emails")
@requires("send_email")
def resend_send():
    def run() -> dict:
        draft = _resend_draft(parse_body(ResendEmail))
        return {"id": core.send_email(runtime(), principal(), draft, operation="resend")["id"]}
    return _idempotent(run)


@bp.post("/resend/emails/batch")
@requires("send_email")
def resend_batch():
    permissive = request.headers.get("x-batch-validation", "strict").strip().lower() == "permissive"

    def run() -> dict:
        try:
            items = json.loads(request.get_data(cache=True) or b"null")
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequestError("body: not valid JSON", field="body", status=400) from None
        if not isinstance(items, list) or not items:
            raise InvalidRequestError("body: a JSON array of 1 to 100 emails is required", field="body")
        if len(items) > MAX_BATCH:
            raise InvalidRequestError(f"body: at most {MAX_BATCH} emails per batch, got {len(items)}", field="body")
        drafts = [_batch_item(i, item) for i, item in enumerate(items)]
        sent, errors = core.send_batch(runtime(), principal(), drafts, permissive=permissive)
        body: dict = {"data": [{"id": r["id"]} for r in sent]}
        if permissive:
            body["errors"] = errors
        return body
    return _idempotent(run)


def _batch_item(index: int, item) -> core.Draft:
    if not isinstance(item, dict):
        raise InvalidRequestError(f"[{index}]: each email must be a JSON object", field=f"[{index}]")
    try:
        email = ResendEmail.model_validate(item)
    except ValidationError as exc:
        field, message = validation_field(exc)
        raise InvalidRequestError(f"[{index}].{message}", field=f"[{index}].{field}") from None
    return _resend_draft(email, f"[{index}].")


@bp.get("/resend/emails/<path:id>")
@requires("view_email")
def resend_get(id: str):
    email, entry = core.find_sent(runtime(), principal(), id)

    def emails(items) -> list[str]:
        return [_addr(a) for a in items or []]

    return jsonify({
        "object": "email", "id": id, "message_id": email.get("message_id"),
        "from": _addr(email.get("from")) if email.get("from") else None, "to": emails(email.get("to")),
        "cc": emails(email.get("cc")) or None, "bcc": emails(email.get("bcc")) or None,
        "reply_to": emails(email.get("reply_to")) or None, "subject": email.get("subject"),
        "html": email.get("html"), "text": email.get("text"),
        "created_at": clock.rfc3339(entry.get("created_ts")), "last_event": "sent", "scheduled_at": None,
        "tags": [],
    })


def _addr(address: dict) -> str:
    return f"{address['name']} <{address['email']}>" if address.get("name") else address["email"]
