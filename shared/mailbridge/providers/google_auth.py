"""Google sign-in: the consent URL, the code exchange (PKCE), token refresh through google-auth, revocation.

Errors (mailbridge.errors), the same for every call here:
- ReauthRequiredError   the refresh token is revoked or expired (`invalid_grant` on refresh);
- ProviderUnavailableError  5xx, 429 or no answer in time (retry_after set when Google gave one);
- ProviderError         anything else Google refuses for good: a bad client id/secret, a refused
                        code (`invalid_grant` on exchange), a redirect URI mismatch.
Messages name Google's error code only; never a token, a code or the client secret.

Every HTTP call has a timeout and trusts MAILBRIDGE_CA_BUNDLE (settings.ca_bundle) beside the
system's roots. One requests.Session per instance and CA bundle, built on first use.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timezone
from urllib.parse import urlencode

import requests
from google.auth import exceptions as gexc
from google.oauth2.credentials import Credentials

from mailbridge import clock, upstream
from mailbridge.config import Settings
from mailbridge.errors import ProviderError, ProviderUnavailableError, ReauthRequiredError

log = logging.getLogger("mailbridge.google_auth")

CALLBACK_PATH = "/oauth/callback/google"
DEFAULT_LIFETIME = 3600               # when Google leaves out expires_in (it never does in practice)


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint answered. `refresh_token` None: Google kept the old one (no rotation);
    `scopes` None: not reported (a refresh), keep the granted scopes already known."""
    access_token: str
    expires_at: float
    refresh_token: str | None
    scopes: tuple[str, ...] | None

    def __repr__(self) -> str:          # tokens never reach a log line through a repr
        return f"TokenSet(expires_at={self.expires_at!r}, scopes={self.scopes!r}, tokens=<hidden>)"


def redirect_uri(settings: Settings) -> str:
    """The one redirect URI registered with Google: PUBLIC_BASE_URL + /oauth/callback/google."""
    return settings.public_base_url.rstrip("/") + CALLBACK_PATH


def authorization_url(settings: Settings, state: str, code_challenge: str, login_hint: str | None = None) -> str:
    """The consent page URL: GOOGLE_SCOPES, offline access (a refresh token), consent forced so that a
    reconnect gets a new refresh token too, incremental scopes, PKCE S256."""
    params = {
        "client_id": settings.google_client_id,
        "redirect_uri": redirect_uri(settings),
        "response_type": "code",
        "scope": " ".join(settings.google_scopes),
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if login_hint:
        params["login_hint"] = login_hint
    sep = "&" if "?" in settings.google_auth_url else "?"
    return settings.google_auth_url + sep + urlencode(params)


def exchange_code(settings: Settings, client_secret: str, code: str, code_verifier: str,
                  redirect_uri: str) -> TokenSet:
    """Trade an authorization code (and its PKCE verifier) for tokens. Not idempotent: a code works once."""
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": code_verifier,
            "redirect_uri": redirect_uri, "client_id": settings.google_client_id,
            "client_secret": client_secret}
    try:
        resp = upstream.session(settings).post(settings.google_token_url, data=form, timeout=upstream.TIMEOUT,
                                       verify=upstream.verify(settings))
    except requests.RequestException as exc:
        raise ProviderUnavailableError("Google sign-in did not answer in time", retry_after=5) from exc
    data = _json(resp)
    if resp.status_code != 200:
        raise _token_error(resp.status_code, data, refreshing=False, retry_after=_retry_after(resp))
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProviderError("Google's token answer carried no access token", provider_status=resp.status_code)
    scope = data.get("scope")
    return TokenSet(access_token=access, expires_at=_expires_at(data.get("expires_in")),
                    refresh_token=data.get("refresh_token") or None,
                    scopes=tuple(scope.split()) if isinstance(scope, str) else None)


def refresh(settings: Settings, client_secret: str, refresh_token: str) -> TokenSet:
    """A new access token for a refresh token, through google-auth's Credentials.refresh.

    `refresh_token` of the answer is set only when Google rotated it (persist it). google-auth itself
    retries 429/5xx twice with a short backoff before giving up (then ProviderUnavailableError)."""
    creds = Credentials(token=None, refresh_token=refresh_token, token_uri=settings.google_token_url,
                        client_id=settings.google_client_id, client_secret=client_secret)
    try:
        creds.refresh(upstream.TimedRequest(upstream.session(settings), upstream.verify(settings)))
    except gexc.RefreshError as exc:
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        if getattr(exc, "retryable", False):
            raise ProviderUnavailableError("Google sign-in is unavailable; retry later", retry_after=5) from None
        raise _token_error(400, data, refreshing=True) from None
    except gexc.TransportError as exc:
        raise ProviderUnavailableError("Google sign-in did not answer in time", retry_after=5) from exc
    expires_at = (creds.expiry.replace(tzinfo=timezone.utc).timestamp() if creds.expiry
                  else clock.now() + DEFAULT_LIFETIME)
    rotated = creds.refresh_token if creds.refresh_token and creds.refresh_token != refresh_token else None
    return TokenSet(access_token=creds.token, expires_at=expires_at, refresh_token=rotated, scopes=None)


def revoke(settings: Settings, token: str) -> None:
    """Revoke a grant (a refresh or access token revokes the whole grant). Idempotent: a token Google
    no longer knows (already revoked, expired) counts as revoked."""
    try:
        resp = upstream.session(settings).post(settings.google_revoke_url, data={"token": token}, timeout=upstream.TIMEOUT,
                                       verify=upstream.verify(settings))
    except requests.RequestException as exc:
        raise ProviderUnavailableError("Google sign-in did not answer in time", retry_after=5) from exc
    if resp.status_code == 200:
        return
    data = _json(resp)
    if resp.status_code == 400 and data.get("error") in ("invalid_token", "invalid_grant"):
        return
    raise _token_error(resp.status_code, data, refreshing=False, retry_after=_retry_after(resp))


# ---- errors -------------------------------------------------------------------------------

def _token_error(status: int, data: dict, *, refreshing: bool, retry_after: int | None = None):
    """The one table: Google's token-endpoint answer → our error (only Google's error code is quoted)."""
    error = data.get("error") if isinstance(data.get("error"), str) else ""
    if status == 429 or status >= 500 or error in ("internal_failure", "server_error", "temporarily_unavailable"):
        return ProviderUnavailableError("Google sign-in is unavailable; retry later", retry_after=retry_after or 5)
    if error == "invalid_grant" and refreshing:
        return ReauthRequiredError("the Google grant was revoked or has expired; reconnect the mailbox",
                                   details={"provider": "google"})
    if error in ("invalid_client", "unauthorized_client"):
        return ProviderError(f"Google refused the OAuth client ({error}): check GOOGLE_CLIENT_ID and the "
                             "google-client-secret secret", provider_status=status,
                             details={"oauth_error": error})
    code = "".join(c for c in error[:60] if c.isalnum() or c == "_")
    return ProviderError(f"Google refused the token request ({code or 'no error code'})",
                         provider_status=status, details={"oauth_error": code or None})


def _json(resp: requests.Response) -> dict:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _retry_after(resp: requests.Response) -> int | None:
    value = resp.headers.get("Retry-After", "")
    return int(value) if value.isdigit() else None


def _expires_at(expires_in) -> float:
    try:
        seconds = int(expires_in)
    except (TypeError, ValueError):
        seconds = DEFAULT_LIFETIME
    return clock.now() + seconds
