"""Authentication of Google's pushes (Pub/Sub push subscriptions, Cloud Scheduler): their OIDC token.

`@requires_push_auth` guards /push/gmail, /internal/deliver and /internal/renew (API.md section 8):
the `Authorization: Bearer <token>` must be a Google-signed ID token (checked against
GOOGLE_OIDC_CERTS_URL) issued by accounts.google.com, for the audience PUSH_AUDIENCE, of the account
PUSH_SERVICE_ACCOUNT with `email_verified` true. No token or one that does not verify → 401; a valid
token for another audience or account → 403; the view is not called. MAILBRIDGE_PUSH_AUTH=off (local
emulators only: the Pub/Sub emulator sends no token) skips the check; any other value checks.

Google's signing certificates are fetched once and kept for their Cache-Control max-age, so a push
costs no extra round trip (DESIGN.md's budget of 3 per push → webhook).
"""
from __future__ import annotations

import functools
import logging
import re
import threading
import time
from typing import Any, Callable

from flask import request

from mailbridge.api.context import runtime
from mailbridge.config import Settings
from mailbridge.errors import ForbiddenError, ProviderUnavailableError, UnauthenticatedError

log = logging.getLogger("mailbridge.push_auth")

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
CLOCK_SKEW_SECONDS = 10      # Google's clock and ours may differ by a little; tokens live an hour
CERTS_TIMEOUT_SECONDS = 10.0
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


def requires_push_auth(view: Callable) -> Callable:
    """Guard a push route: verify the caller's Google OIDC token first (see the module docstring)."""
    @functools.wraps(view)
    def guarded(*args, **kwargs):
        settings = runtime().settings
        if settings.push_auth != "off":
            verify_push_token(request.headers.get("Authorization"), settings)
        return view(*args, **kwargs)
    return guarded


def verify_push_token(authorization: str | None, settings: Settings) -> dict[str, Any]:
    """The claims of a valid push token in the `Authorization` header value.

    Raises UnauthenticatedError (401) for a missing, malformed, expired, badly signed or non-Google
    token; ForbiddenError (403) for a valid token of another audience or account (or an unverified
    email, or no PUSH_SERVICE_ACCOUNT configured: we fail closed); ProviderUnavailableError (503) when
    the certificates cannot be fetched. Texts never quote the token."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthenticatedError("missing bearer OIDC token")
    from google.auth import exceptions as gexc
    from google.oauth2 import id_token
    try:
        # audience=None: the signature and expiry are checked here, the claims below, so that a
        # valid token for someone else is told apart (403) from one that is not valid at all (401).
        claims = id_token.verify_token(token, _certs_request(settings), audience=None,
                                       certs_url=settings.google_oidc_certs_url,
                                       clock_skew_in_seconds=CLOCK_SKEW_SECONDS)
    except gexc.TransportError as exc:
        raise ProviderUnavailableError("Google's token signing certificates cannot be fetched") from exc
    except (ValueError, gexc.GoogleAuthError) as exc:
        # The library's messages may quote parts of the token: only the exception's class is logged.
        log.info("push token refused (%s)", type(exc).__name__)
        raise UnauthenticatedError("invalid or expired OIDC token") from None
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise UnauthenticatedError("the OIDC token was not issued by Google")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if settings.push_audience not in audiences:
        raise ForbiddenError("the OIDC token is for another audience (PUSH_AUDIENCE)")
    if not settings.push_service_account:
        log.error("PUSH_SERVICE_ACCOUNT is not set: every push is refused")
        raise ForbiddenError("no push account is configured (PUSH_SERVICE_ACCOUNT)")
    if claims.get("email") != settings.push_service_account:
        raise ForbiddenError("the OIDC token belongs to another account (PUSH_SERVICE_ACCOUNT)")
    if claims.get("email_verified") not in (True, "true"):
        raise ForbiddenError("the OIDC token's email is not verified")
    return claims


# ---- certificates, cached per their Cache-Control ----------------------------------------------

class CachingRequest:
    """A google-auth transport (`google.auth.transport.Request`) that keeps each 200 answer to a GET
    for the max-age its Cache-Control gives (minus any Age), and fetches again after that. `no-store`,
    `no-cache` or no max-age: not kept. `fetches` counts the requests actually sent."""

    def __init__(self, inner: Callable[..., Any], clock: Callable[[], float] = time.monotonic):
        self._inner = inner
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, Any]] = {}   # url → (expires at, response)
        self.fetches = 0

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        if method != "GET" or body is not None:
            return self._inner(url, method=method, body=body, headers=headers, timeout=timeout, **kwargs)
        # One fetch at a time: concurrent pushes on a cold instance wait for it instead of each fetching.
        with self._lock:
            kept = self._kept.get(url)
            if kept is not None and kept[0] > self._clock():
                return kept[1]
            self.fetches += 1
            response = self._inner(url, method="GET", headers=headers,
                                   timeout=timeout or CERTS_TIMEOUT_SECONDS, **kwargs)
            lifetime = _lifetime(response.headers) if response.status == 200 else 0
            if lifetime > 0:
                self._kept[url] = (self._clock() + lifetime, response)
            else:
                self._kept.pop(url, None)
            return response


def _lifetime(headers) -> int:
    control = headers.get("Cache-Control") or headers.get("cache-control") or ""
    if re.search(r"no-store|no-cache", control, re.IGNORECASE):
        return 0
    match = _MAX_AGE.search(control)
    if not match:
        return 0
    age = headers.get("Age") or headers.get("age") or "0"
    return int(match.group(1)) - (int(age) if age.strip().isdigit() else 0)


_lock = threading.Lock()
_requests: dict[str | None, CachingRequest] = {}   # MAILBRIDGE_CA_BUNDLE → transport, one per instance


def _certs_request(settings: Settings) -> CachingRequest:
    """The instance's caching transport (one pooled session; MAILBRIDGE_CA_BUNDLE trusted)."""
    key = settings.ca_bundle
    transport = _requests.get(key)
    if transport is None:
        from mailbridge import upstream
        with _lock:
            transport = _requests.get(key)
            if transport is None:
                transport = _requests[key] = CachingRequest(
                    upstream.TimedRequest(upstream.session(settings), upstream.verify(settings)))
    return transport
