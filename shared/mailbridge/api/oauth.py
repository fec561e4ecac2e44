"""Blueprint of the `oauth` Cloud Function: POST /v1/connect and the sign-in callbacks (API.md section 4)."""
from __future__ import annotations

import ipaddress
import logging
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailbridge.api.auth import principal, requires
from mailbridge.api.body import parse_body
from mailbridge.api.context import runtime
from mailbridge.core import connections, oauth_state
from mailbridge.errors import ForbiddenError, InvalidRequestError, MailbridgeError

log = logging.getLogger("mailbridge.oauth")

bp = Blueprint("oauth", __name__)

_LOOPBACK_NAMES = {"localhost", "localhost."}


def check_redirect_url(value: str) -> str:
    """An absolute https URL (http only for loopback hosts), without credentials or fragment, since
    the callback appends its own query to it."""
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(value)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("must be an absolute https URL")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError("must use https (http only for localhost/loopback addresses)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials")
    if parts.fragment or value.endswith("#"):
        raise ValueError("must not have a fragment")
    return value


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ConnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: Literal["google", "microsoft"]
    user_id: str = Field(min_length=1, max_length=256)
    redirect_url: str = Field(min_length=1, max_length=2000)
    login_hint: str | None = Field(None, min_length=1, max_length=320)
    backfill: Literal["none", "30d", "90d", "365d", "all"] = "30d"
    shared_mailbox: str | None = Field(None, min_length=3, max_length=320)

    @field_validator("redirect_url")
    @classmethod
    def _redirect_url(cls, value: str) -> str:
        return check_redirect_url(value)

    @field_validator("user_id", "login_hint", "shared_mailbox")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must not contain control characters")
        return value

    @model_validator(mode="after")
    def _shared_mailbox_is_microsoft_only(self) -> "ConnectRequest":
        if self.shared_mailbox is not None and self.provider != "microsoft":
            raise InvalidRequestError("shared_mailbox: only for provider microsoft", field="shared_mailbox")
        return self


@bp.post("/v1/connect")
@requires("manage_connections")
def connect():
    body = parse_body(ConnectRequest)
    if body.provider == "microsoft":
        raise InvalidRequestError("provider: microsoft is not available yet", field="provider")
    started = connections.start_connect(runtime(), tenant_id=principal().tenant_id, provider=body.provider,
                                        user_id=body.user_id, redirect_url=body.redirect_url,
                                        login_hint=body.login_hint, backfill=body.backfill)
    return jsonify(started), 201


@bp.get("/oauth/callback/google")
def google_callback():
    return _callback("google")


@bp.get("/oauth/callback/microsoft")
def microsoft_callback():
    return _callback("microsoft")


def _callback(provider: str) -> Response:
    """No API key here: the state authenticates. Untrusted state → 400 envelope; everything after a
    trusted state → 302 to the customer's redirect_url with status=success|error."""
    rt = runtime()
    try:
        state = oauth_state.redeem(rt, request.args.get("state"), provider)
    except oauth_state.StateRejectedError as exc:
        return _back(exc.redirect_url, status="error", error=exc.error)
    target = state["redirect_url"]
    if request.args.get("error"):
        # The user refused (access_denied), or the provider refused the request itself.
        denied = request.args.get("error") == "access_denied"
        return _back(target, status="error", error="access_denied" if denied else "exchange_failed")
    code = request.args.get("code")
    if not code:
        return _back(target, status="error", error="exchange_failed")
    try:
        record = connections.finish_connect(rt, state, code)
    except ForbiddenError:
        return _back(target, status="error", error="access_denied")
    except MailbridgeError as exc:
        log.warning("connect for tenant %s failed after the consent: %s (%s)", state.get("tenant_id"),
                    exc.code, exc.message)
        return _back(target, status="error", error="exchange_failed")
    return _back(target, status="success", connection_id=record["id"])


def _back(redirect_url: str, **params: str) -> Response:
    parts = urlsplit(redirect_url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    location = urlunsplit(parts._replace(query=urlencode(query)))
    # The callback URL held an authorization code: keep it out of caches and of the Referer header.
    return Response(status=302, headers={"Location": location, "Cache-Control": "no-store",
                                         "Referrer-Policy": "no-referrer"})
