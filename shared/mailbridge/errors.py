"""The one exception tree of mailbridge; the HTTP layer maps it to API.md section 3 in one place.

    MailbridgeError                      code, status, message, details
    ├── PermanentError                   retrying the same call cannot help
    │   ├── InvalidRequestError          422 invalid_request (400 for unparsable bodies)
    │   ├── UnauthenticatedError         401 unauthenticated
    │   ├── ForbiddenError               403 forbidden
    │   ├── NotFoundError                404 not_found
    │   ├── ConflictError                409 conflict
    │   │   └── ReauthRequiredError      409 reauth_required
    │   ├── PayloadTooLargeError         413 payload_too_large
    │   ├── ProviderError                502 provider_error (details.provider_status)
    │   └── CursorExpiredError           404 not_found: a sync cursor older than the provider keeps
    │                                    (core/sync falls back to a bounded resync; not a NotFoundError)
    └── TransientError                   retrying later may help
        ├── RateLimitedError             429 rate_limited (retry_after)
        ├── ProviderUnavailableError     503 provider_unavailable (retry_after)
        └── StoreUnavailableError        503 internal store trouble, answered as provider_unavailable

Messages are written for the API's users: they never hold a token, key or secret.
"""
from __future__ import annotations

from typing import Any


class MailbridgeError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None,
                 status: int | None = None, retry_after: int | None = None):
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details or {}
        if status is not None:
            self.status = status
        self.retry_after = retry_after


class PermanentError(MailbridgeError):
    pass


class TransientError(MailbridgeError):
    code = "provider_unavailable"
    status = 503


class InvalidRequestError(PermanentError):
    code = "invalid_request"
    status = 422

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None,
                 details: dict[str, Any] | None = None):
        details = dict(details or {})
        if field is not None:
            details["field"] = field
        super().__init__(message, details=details, status=status)
        self.field = field


class UnauthenticatedError(PermanentError):
    code = "unauthenticated"
    status = 401


class ForbiddenError(PermanentError):
    code = "forbidden"
    status = 403


class NotFoundError(PermanentError):
    code = "not_found"
    status = 404


class ConflictError(PermanentError):
    code = "conflict"
    status = 409


class ReauthRequiredError(ConflictError):
    code = "reauth_required"
    status = 409


class PayloadTooLargeError(PermanentError):
    code = "payload_too_large"
    status = 413


class ProviderError(PermanentError):
    code = "provider_error"
    status = 502

    def __init__(self, message: str, *, provider_status: int | None = None,
                 details: dict[str, Any] | None = None):
        details = dict(details or {})
        if provider_status is not None:
            details["provider_status"] = provider_status
        super().__init__(message, details=details)


class CursorExpiredError(PermanentError):
    """The provider no longer keeps changes that old (Gmail: history.list 404 on startHistoryId).
    Deliberately not a NotFoundError: a missing message and an expired cursor are handled apart."""
    code = "not_found"
    status = 404


class RateLimitedError(TransientError):
    code = "rate_limited"
    status = 429


class ProviderUnavailableError(TransientError):
    code = "provider_unavailable"
    status = 503


class StoreUnavailableError(TransientError):
    code = "provider_unavailable"
    status = 503
