"""Blueprint of the `read` Cloud Function (API.md section 1, routes of section 5): parse, call core.read, answer.

Ids arrive URL-decoded in a `<path:id>` segment (Graph ids may hold "/"); the more specific routes
(`…/raw`, `…/attachments/<attachment_id>`, `…/context`) win over the bare `<path:id>` ones, so those
suffixes are never swallowed into an id.
"""
from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from mailbridge import clock
from mailbridge.api.auth import principal, requires
from mailbridge.api.body import json_object, parse_body
from mailbridge.api.context import runtime
from mailbridge.core import read
from mailbridge.errors import InvalidRequestError
from mailbridge.providers.base import SearchQuery

bp = Blueprint("read", __name__)

_ADDRESS = re.compile(r"[^\s@<>\",;]+@[^\s@<>\",;]+")
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")


def _flag(value):
    """Query booleans are exactly `true` or `false` (not 1, yes, True)."""
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("must be true or false")


def _timestamp(value):
    try:
        return clock.parse_rfc3339(value)
    except (TypeError, ValueError):
        raise ValueError("must be an RFC 3339 timestamp, e.g. 2026-02-07T14:30:00Z") from None


def _address(value: str) -> str:
    if not _ADDRESS.fullmatch(value):
        raise ValueError("must be an email address")
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]
Timestamp = Annotated[float, BeforeValidator(_timestamp)]
Text = Annotated[str, StringConstraints(max_length=1000)]
Address = Annotated[str, StringConstraints(max_length=320), AfterValidator(_address)]
Limit = Annotated[int, Field(ge=1, le=50)]


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SearchParams(_Query):
    connection_id: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] | None = None
    user_id: Text | None = None
    q: Text | None = None
    from_: Address | None = Field(None, alias="from")
    to: Address | None = None
    subject: Text | None = None
    label: Annotated[str, StringConstraints(max_length=256)] | None = None
    unread: Flag | None = None
    after: Timestamp | None = None
    before: Timestamp | None = None
    has_attachment: Flag | None = None
    limit: Limit = 20
    include_body: Flag = False
    page_token: str | None = None


class ThreadListParams(_Query):
    connection_id: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] | None = None
    q: Text | None = None
    limit: Limit = 20
    page_token: str | None = None


class MessageParams(_Query):
    include_body: Flag = False


class DeleteParams(_Query):
    permanent: Flag = False


class ThreadParams(_Query):
    source: Annotated[str, StringConstraints(pattern=r"^(provider|store)$")] = "provider"


Label = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


class UpdateEmail(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    is_read: bool | None = None
    add_labels: list[Label] = Field(default_factory=list, max_length=100)
    remove_labels: list[Label] = Field(default_factory=list, max_length=100)


def _params(model: type[_Query]) -> _Query:
    """Query string → model. Empty values count as absent; only `connection_id` repeats (a known
    single-valued parameter given twice is 422); unknown parameters are ignored."""
    known = {f.alias or name for name, f in model.model_fields.items()}
    data: dict = {}
    for name in request.args:
        values = [v for v in request.args.getlist(name) if v != ""]
        if not values or name not in known:
            continue
        if name == "connection_id":
            data[name] = values
        elif len(values) > 1:
            raise InvalidRequestError(f"{name}: given more than once", field=name)
        else:
            data[name] = values[0]
    return model.model_validate(data)


def _json(body: dict, status: int = 200) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    return resp


@bp.get("/v1/messages")
@requires("search_emails")
def search_emails():
    p = _params(SearchParams)
    if p.after is not None and p.before is not None and p.after >= p.before:
        raise InvalidRequestError("after: must be earlier than before", field="after")
    query = SearchQuery(q=p.q, from_=p.from_, to=p.to, subject=p.subject, label=p.label, unread=p.unread,
                        after=p.after, before=p.before, has_attachment=p.has_attachment)
    return _json(read.search_emails(runtime(), principal(), query, connection_ids=p.connection_id,
                                    user_id=p.user_id, limit=p.limit, include_body=p.include_body,
                                    page_token=p.page_token))


@bp.get("/v1/messages/<path:message_id>")
@requires("view_email")
def view_email(message_id: str):
    p = _params(MessageParams)
    return _json(read.get_email(runtime(), principal(), message_id, include_body=p.include_body))


@bp.get("/v1/messages/<path:message_id>/raw")
@requires("view_email")
def raw_email(message_id: str):
    data = read.get_raw(runtime(), principal(), message_id)
    return Response(data, status=200, mimetype="message/rfc822")


@bp.get("/v1/messages/<path:message_id>/attachments/<attachment_id>")
@requires("view_email")
def attachment(message_id: str, attachment_id: str):
    found = read.get_attachment(runtime(), principal(), message_id, attachment_id)
    ctype = found.content_type if _CONTENT_TYPE.fullmatch(found.content_type or "") else "application/octet-stream"
    resp = Response(found.data, status=200, content_type=ctype)
    resp.headers["Content-Disposition"] = content_disposition(found.filename or f"attachment-{attachment_id}")
    resp.headers["X-Content-Type-Options"] = "nosniff"   # never let a browser run an HTML attachment as a page
    return resp


def content_disposition(filename: str) -> str:
    """`attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>` (RFC 6266 / 5987)."""
    cleaned = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in filename).strip() or "attachment"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in cleaned)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(cleaned, safe='')}"


@bp.patch("/v1/messages/<path:message_id>")
@requires(None)   # mark_as_read and/or apply_labels, depending on the body (checked in core.read)
def update_email(message_id: str):
    body = parse_body(UpdateEmail)
    return _json(read.update_email(runtime(), principal(), message_id, is_read=body.is_read,
                                   add_labels=body.add_labels, remove_labels=body.remove_labels))


@bp.delete("/v1/messages/<path:message_id>")
@requires("delete_email")
def delete_email(message_id: str):
    p = _params(DeleteParams)
    read.delete_email(runtime(), principal(), message_id, permanent=p.permanent)
    return Response(status=204)


@bp.get("/v1/threads")
@requires("view_thread")
def view_threads():
    p = _params(ThreadListParams)
    return _json(read.list_threads(runtime(), principal(), connection_ids=p.connection_id, q=p.q,
                                   limit=p.limit, page_token=p.page_token))


@bp.get("/v1/threads/<path:thread_id>")
@requires("view_thread")
def view_thread(thread_id: str):
    p = _params(ThreadParams)
    return _json(read.get_thread(runtime(), principal(), thread_id, source=p.source))


@bp.get("/v1/threads/<path:thread_id>/context")
@requires("view_thread")
def get_thread_context(thread_id: str):
    return _json(read.get_thread_context(runtime(), principal(), thread_id))


@bp.put("/v1/threads/<path:thread_id>/context")
@requires("view_thread")
def put_thread_context(thread_id: str):
    return _json(read.put_thread_context(runtime(), principal(), thread_id, json_object()))
