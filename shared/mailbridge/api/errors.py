"""The one place where exceptions become HTTP answers (API.md section 3, and Resend's shape on /resend)."""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from mailbridge.errors import InvalidRequestError, MailbridgeError

log = logging.getLogger("mailbridge.api")

_HTTP_CODES = {400: "invalid_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "invalid_request",
               422: "invalid_request", 429: "rate_limited", 502: "provider_error",
               503: "provider_unavailable"}

# Resend's error names, so its SDKs raise their usual exceptions.
_RESEND_NAMES = {400: "validation_error", 401: "missing_api_key", 403: "invalid_access", 404: "not_found",
                 405: "method_not_allowed", 409: "invalid_idempotent_request", 413: "validation_error",
                 422: "validation_error", 429: "rate_limit_exceeded", 500: "internal_server_error",
                 502: "application_error", 503: "application_error"}


def error_response(code: str, status: int, message: str, details: dict | None = None,
                   headers: dict | None = None) -> Response:
    """The envelope `{"error": {code, message, details}}`, or Resend's shape under /resend."""
    if request and request.path.startswith("/resend"):
        name = _RESEND_NAMES.get(status, "application_error")
        if code == "unauthenticated" and request.headers.get("Authorization"):
            name = "invalid_api_key"
        resp = jsonify({"statusCode": status, "name": name, "message": message})
    else:
        resp = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    resp.status_code = status
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def validation_field(exc: ValidationError) -> tuple[str, str]:
    """(dotted field, message) of the first pydantic error, e.g. ("to.0", "to.0: value is not …")."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "body"
    msg = first.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return field, f"{field}: {msg}"


def _mailbridge_error(exc: MailbridgeError) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(int(exc.retry_after))
    return error_response(exc.code, exc.status, exc.message, exc.details, headers)


def _validation_error(exc: ValidationError) -> Response:
    field, message = validation_field(exc)
    return _mailbridge_error(InvalidRequestError(message, field=field))


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "internal_error" if status >= 500 else "invalid_request")
    headers = {}
    if status == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)
    messages = {404: f"no route for {request.method} {request.path}",
                405: f"{request.method} is not allowed on {request.path}",
                413: "request body is too large"}
    message = messages.get(status) or (exc.description or exc.name)
    return error_response(code, status, message, {}, headers)


def _unexpected_error(exc: Exception) -> Response:
    # The traceback goes to the log (never to the caller); messages of our code never hold secrets.
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response("internal_error", 500, "internal error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(MailbridgeError, _mailbridge_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
