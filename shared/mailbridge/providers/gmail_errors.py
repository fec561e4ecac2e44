"""Gmail's errors → mailbridge's: the one error table of the Gmail adapter (HttpError status/reason)."""
from __future__ import annotations

import json
import math
import ssl
from email.utils import parsedate_to_datetime

from googleapiclient.errors import HttpError

from mailbridge import clock
from mailbridge.errors import (ForbiddenError, InvalidRequestError, MailbridgeError, NotFoundError,
                               PayloadTooLargeError, ProviderError, ProviderUnavailableError,
                               ReauthRequiredError)

_RETRYABLE = {429, 500, 502, 503, 504}
_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
# Gmail's refusals that retrying cannot fix → (error class, message); 400 carries Gmail's own text.
_ERRORS: dict[int, tuple[type[MailbridgeError], str]] = {
    400: (InvalidRequestError, "Gmail refused the request"),
    401: (ReauthRequiredError, "Gmail rejected the connection's credentials; reconnect the mailbox"),
    403: (ForbiddenError, "Gmail refused access to this mailbox or operation"),
    404: (NotFoundError, "not found in the mailbox"),
    413: (PayloadTooLargeError, "the message is too large for Gmail"),
}


class Transient(Exception):
    """One failed attempt that may succeed later (the transport retries it, then raises
    ProviderUnavailableError); `status` is Gmail's HTTP status, None for a transport failure."""

    def __init__(self, status: int | None, retry_after: float | None):
        super().__init__(f"transient Gmail failure ({status})")
        self.status, self.retry_after = status, retry_after


def retry_after_seconds(resp) -> float | None:
    """Retry-After in seconds (delta or HTTP date), None when absent or unreadable."""
    value = (resp.get("retry-after") or "").strip() if resp is not None else ""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - clock.now())
        except (TypeError, ValueError):
            return None


def _google_error(exc: HttpError) -> tuple[str | None, str | None]:
    """(reason, message) of Google's `{"error": {"message", "errors": [{"reason"}]}}` body."""
    try:
        error = json.loads(exc.content)["error"]
        return (error.get("errors") or [{}])[0].get("reason"), error.get("message")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None, None


def classify(exc: HttpError, *, what: str = "", idempotent: bool = True) -> Exception:
    """The one error table: a Gmail HttpError → Transient (retry it) or the mailbridge error to raise.

    429 and 403 rate-limit reasons are always retryable; 5xx only for `idempotent` calls (a send that
    got a 500 may have gone out, so it is not repeated blindly).
    """
    status, retry_after = exc.resp.status, retry_after_seconds(exc.resp)
    reason, message = _google_error(exc)
    if status == 429 or (status == 403 and reason in _RATE_REASONS) or (idempotent and status in _RETRYABLE):
        return Transient(status, retry_after)
    if status in _RETRYABLE or (status == 403 and reason in ("dailyLimitExceeded", "quotaExceeded")):
        return ProviderUnavailableError("Gmail is unavailable or over quota; try again later",
                                        retry_after=math.ceil(retry_after or 60),
                                        details={"provider_status": status})
    cls, text = _ERRORS.get(status, (None, None))
    if cls is InvalidRequestError:
        return InvalidRequestError(f"Gmail: {message or text}"[:500], details={"provider_status": status})
    if cls is not None:
        return cls(f"{what} {text}".strip() if cls is NotFoundError else text)
    return ProviderError(f"Gmail refused the request ({status})", provider_status=status)


def transport_error(exc: Exception, idempotent: bool) -> Exception:
    """A failure below HTTP (refused, reset, timeout, TLS) → Transient, or the error to raise: an
    untrusted certificate is not retried, nor is a send that may already have gone out."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ProviderUnavailableError(
            "TLS verification of GMAIL_API_ENDPOINT failed (see MAILBRIDGE_CA_BUNDLE)", retry_after=60)
    if idempotent or isinstance(exc, ConnectionRefusedError):  # refused: nothing was sent
        return Transient(None, None)
    return ProviderUnavailableError("Gmail did not answer; the message may or may not have been sent",
                                    retry_after=60)
