"""Google's JSON error shape for the emulator, built from mailbridge's shared error tree in one place."""
from __future__ import annotations

import json

from flask import Response

from mailbridge.errors import (ForbiddenError, InvalidRequestError, MailbridgeError, NotFoundError,
                               PayloadTooLargeError, UnauthenticatedError)

# HTTP status → (google.rpc status, default reason), as the Google API front end answers them.
_STATUS = {
    400: ("INVALID_ARGUMENT", "badRequest"),
    401: ("UNAUTHENTICATED", "authError"),
    403: ("PERMISSION_DENIED", "forbidden"),
    404: ("NOT_FOUND", "notFound"),
    405: ("METHOD_NOT_ALLOWED", "badRequest"),
    409: ("ALREADY_EXISTS", "duplicate"),
    413: ("FAILED_PRECONDITION", "badRequest"),
    429: ("RESOURCE_EXHAUSTED", "rateLimitExceeded"),
    500: ("INTERNAL", "backendError"),
    502: ("UNAVAILABLE", "backendError"),
    503: ("UNAVAILABLE", "backendError"),
}

UNAUTH_MESSAGE = ("Request had invalid authentication credentials. Expected OAuth 2 access token, "
                  "login cookie or other valid authentication credential.")


def bad_request(message: str) -> InvalidRequestError:
    """A Gmail 400 (the shared tree's InvalidRequestError answers 422 by default)."""
    return InvalidRequestError(message, status=400)


def not_found(message: str = "Requested entity was not found.") -> NotFoundError:
    return NotFoundError(message)


def unauthenticated() -> UnauthenticatedError:
    return UnauthenticatedError(UNAUTH_MESSAGE, details={
        "reason": "authError", "location": "Authorization", "locationType": "header",
        "short": "Invalid Credentials"})


def insufficient_scope() -> ForbiddenError:
    return ForbiddenError("Request had insufficient authentication scopes.", details={
        "reason": "insufficientPermissions", "short": "Insufficient Permission"})


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"Request payload size exceeds the limit: {limit} bytes.")


def error_body(status: int, message: str, reason: str | None = None,
               extra: dict | None = None) -> dict:
    """`{"error": {code, message, errors: [{message, domain, reason}], status}}` like googleapis.com."""
    rpc_status, default_reason = _STATUS.get(status, ("UNKNOWN", "backendError"))
    item = {"message": message, "domain": "global", "reason": reason or default_reason}
    item.update(extra or {})
    return {"error": {"code": status, "message": message, "errors": [item], "status": rpc_status}}


def google_error_response(exc: MailbridgeError) -> Response:
    """Render any shared-tree error as Google's JSON error (with Retry-After when it carries one)."""
    details = dict(exc.details)
    reason = details.pop("reason", None)
    short = details.pop("short", None)
    body = error_body(exc.status, exc.message, reason, details)
    if short:
        body["error"]["errors"][0]["message"] = short
    resp = Response(json.dumps(body), status=exc.status, mimetype="application/json")
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
    if exc.retry_after is not None:
        resp.headers["Retry-After"] = str(exc.retry_after)
    return resp
