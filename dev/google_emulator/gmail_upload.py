"""messages.send through the upload endpoint: uploadType=media, multipart (related) and resumable."""
from __future__ import annotations

import json
import re
import secrets

from flask import Blueprint, Response, jsonify, request
from werkzeug.http import parse_options_header

from .errors import bad_request, not_found, too_large
from .gmail_auth import SEND, authenticate, gmail_method, resolve_user, state
from .gmail_messages import send_raw
from .mailbox import Mailbox

bp = Blueprint("gmail_upload", __name__)

_SEND = "/gmail/v1/users/<userId>/messages/send"
_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)")


def split_related(body: bytes, boundary: str) -> list[tuple[dict, bytes]]:
    """Parts of a multipart/related body as (headers, exact bytes): the message part is kept
    byte for byte (the email package would re-wrap it), and either CRLF or LF line ends work."""
    delimiter = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk[1:] if chunk.startswith(b"\n") else chunk
        ends = [i for i in (chunk.find(b"\r\n\r\n"), chunk.find(b"\n\n")) if i >= 0]
        if not ends:
            continue
        cut = min(ends)
        head, content = chunk[:cut], chunk[cut + (4 if chunk[cut:cut + 4] == b"\r\n\r\n" else 2):]
        # The line break before the next delimiter belongs to the delimiter, not to the content.
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        headers = {}
        for line in re.split(rb"\r?\n", head):
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


def _metadata(data: bytes) -> dict:
    if not data.strip():
        return {}
    try:
        meta = json.loads(data)
    except ValueError:
        raise bad_request("Invalid JSON payload received.") from None
    if not isinstance(meta, dict):
        raise bad_request("Invalid JSON payload received.")
    return meta


@bp.post("/upload" + _SEND)
@bp.post("/resumable/upload" + _SEND)
@gmail_method("gmail.users.messages.send", SEND)
def upload_send(box: Mailbox):
    """Start a resumable session, or send a media / multipart upload at once."""
    st = state()
    kind = request.args.get("uploadType", "media")
    if (request.content_length or 0) > st.max_upload_body:
        raise too_large(st.max_upload_body)
    if kind == "media":
        return send_raw(box, request.get_data(), None)
    if kind == "multipart":
        ctype, options = parse_options_header(request.headers.get("Content-Type", ""))
        if ctype != "multipart/related" or "boundary" not in options:
            raise bad_request("Multipart upload needs a multipart/related body with a boundary")
        parts = split_related(request.get_data(), options["boundary"])
        if len(parts) != 2:
            raise bad_request("Multipart upload must have exactly two parts: metadata and media")
        meta = _metadata(parts[0][1])
        return send_raw(box, parts[1][1], meta.get("threadId"))
    if kind == "resumable":
        total = request.headers.get("X-Upload-Content-Length")
        if total and total.isdigit() and int(total) > st.max_upload_body:
            raise too_large(st.max_upload_body)
        upload_id = secrets.token_urlsafe(24)
        with st.lock:
            st.uploads[upload_id] = {"account": box.address.lower(), "data": bytearray(),
                                     "meta": _metadata(request.get_data())}
        location = f"{request.host_url.rstrip('/')}/upload/gmail/v1/users/{box.address}/messages/send" \
                   f"?uploadType=resumable&upload_id={upload_id}"
        return Response(status=200, headers={"Location": location, "X-GUploader-UploadID": upload_id})
    raise bad_request(f"Invalid uploadType: {kind}")


@bp.put("/upload" + _SEND)
@bp.put("/resumable/upload" + _SEND)
def upload_chunk(userId: str):
    """A resumable chunk (`Content-Range: bytes a-b/total`, or `bytes */total` to ask progress):
    308 with `Range` until complete, then the sent message's JSON."""
    st = state()
    grant = authenticate(st)
    box = resolve_user(st, grant, userId)
    upload_id = request.args.get("upload_id", "")
    with st.lock:
        session = st.uploads.get(upload_id)
    if session is None or session["account"] != grant.account:
        raise not_found("Upload session not found")
    data = request.get_data()
    content_range = request.headers.get("Content-Range", "").strip()
    m = _RANGE.fullmatch(content_range or f"bytes 0-{len(data) - 1}/{len(data)}")
    if m is None:
        raise bad_request("Invalid Content-Range")
    buf: bytearray = session["data"]
    if m.group(1) is not None:
        if int(m.group(1)) != len(buf):
            raise bad_request("Content-Range does not continue the upload")
        buf.extend(data)
    if len(buf) > st.max_upload_body:
        raise too_large(st.max_upload_body)
    total = m.group(3)
    if total != "*" and len(buf) >= int(total):
        with st.lock:
            st.uploads.pop(upload_id, None)
        return jsonify(send_raw(box, bytes(buf), session["meta"].get("threadId")))
    headers = {"Range": f"bytes=0-{len(buf) - 1}"} if buf else {}
    return Response(status=308, headers=headers)
