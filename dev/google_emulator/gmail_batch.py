"""The batch endpoint: multipart/mixed of application/http parts, each run through the normal handlers."""
from __future__ import annotations

import re
import secrets
from email import message_from_bytes, policy

from flask import Blueprint, Response, current_app, request
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.test import EnvironBuilder, run_wsgi_app

from .errors import bad_request
from .gmail_auth import state

bp = Blueprint("gmail_batch", __name__)

MAX_CALLS = 100  # Gmail refuses larger batches


def _inner_requests(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(Content-ID, application/http bytes) for each part of the batch body."""
    outer = message_from_bytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body,
                               policy=policy.compat32)
    if not outer.is_multipart():
        raise bad_request("Batch body must be multipart/mixed")
    parts = []
    for part in outer.get_payload():
        payload = part.get_payload(decode=False)
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
        parts.append((part.get("Content-ID", ""), data))
    return parts


def _run_one(http_bytes: bytes) -> tuple[int, dict, bytes]:
    """Parse `METHOD /path HTTP/1.1` + headers + body and dispatch it through this very app."""
    request_line, _, rest = http_bytes.lstrip(b"\r\n").partition(b"\n")
    fields = request_line.decode("latin-1").strip().split(" ")
    if len(fields) < 2:
        return 400, {}, b""
    method, target = fields[0], fields[1]
    if rest.startswith((b"\r\n", b"\n")):  # no headers at all
        head, body = b"", rest.split(b"\n", 1)[1]
    else:
        m = re.search(rb"\r?\n\r?\n", rest)
        head, body = (rest[:m.start()], rest[m.end():]) if m else (rest, b"")
    headers = {}
    for line in re.split(rb"\r?\n", head):
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    length = headers.pop("content-length", None) or headers.pop("Content-Length", None)
    if length and length.isdigit():
        body = body[:int(length)]
    path, _, query = target.partition("?")
    env = EnvironBuilder(path=path, query_string=query, method=method, headers=headers,
                         data=body if body else None).get_environ()
    app_iter, status, resp_headers = run_wsgi_app(current_app.wsgi_app, env, buffered=True)
    content = b"".join(app_iter)
    return int(status.split(" ")[0]), dict(resp_headers), content


@bp.post("/batch/gmail/v1")
@bp.post("/batch")
def batch():
    """Answer each call in a part with Content-ID `response-<id>`; the batch is counted as "batch"."""
    st = state()
    st.count_call("batch")
    parts = _inner_requests(request.get_data(), request.headers.get("Content-Type", ""))
    if len(parts) > MAX_CALLS:
        raise bad_request(f"Too many requests in batch: {len(parts)} (at most {MAX_CALLS})")
    boundary = "batch_" + secrets.token_hex(12)
    out = []
    for content_id, http_bytes in parts:
        status, headers, content = _run_one(http_bytes)
        cid = content_id.strip()
        response_id = f"<response-{cid[1:-1]}>" if cid.startswith("<") and cid.endswith(">") else f"response-{cid}"
        lines = [f"HTTP/1.1 {status} {HTTP_STATUS_CODES.get(status, 'Unknown')}"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() in ("content-type", "retry-after",
                                                                            "www-authenticate")]
        lines.append(f"Content-Length: {len(content)}")
        head = "\r\n".join(lines).encode("latin-1")
        out.append(b"--" + boundary.encode() + b"\r\nContent-Type: application/http\r\nContent-ID: "
                   + response_id.encode("latin-1") + b"\r\n\r\n" + head + b"\r\n\r\n" + content + b"\r\n")
    body = b"".join(out) + b"--" + boundary.encode() + b"--\r\n"
    return Response(body, status=200, content_type=f"multipart/mixed; boundary={boundary}")
