"""Authentication, permissions and rate limiting for every customer route, in one decorator.

`@requires("send_email")` on a view: the bearer key is looked up (revocation and expiry take effect on
the next request), counted against its rate limit, and checked against the operation. The admin key
passes only routes marked `admin=True` (key management). Views read the caller from `principal()`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from flask import g, request

from mailbridge.api.context import runtime
from mailbridge.core import keys, ratelimit
from mailbridge.core.permissions import Permissions
from mailbridge.errors import ForbiddenError, NotFoundError, RateLimitedError, UnauthenticatedError


ADMIN_COUNTER = "admin"  # the admin key's rate-limit counter (it has no key record)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant's key, or the admin key (tenant_id None)."""
    key_id: str | None
    tenant_id: str | None
    permissions: Permissions

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    def check_connection(self, connection: dict | None, connection_id: str) -> dict:
        """The connection if this key may see it; another tenant's or a hidden one is not found."""
        if (connection is None or connection.get("tenant_id") != self.tenant_id
                or not self.permissions.sees_connection(connection_id)):
            raise NotFoundError(f"connection {connection_id} not found")
        return connection


def bearer_key() -> str | None:
    """The presented key. Behind API Gateway the caller's header arrives as X-Forwarded-Authorization."""
    header = request.headers.get("X-Forwarded-Authorization") or request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate() -> Principal:
    key = bearer_key()
    if key is None:
        raise UnauthenticatedError("missing bearer API key (Authorization: Bearer mbk_…)")
    rt = runtime()
    if rt.is_admin_key(key):
        return Principal(key_id=None, tenant_id=None, permissions=Permissions())
    record = keys.find_live_key(rt.store, key)
    if record is None:
        raise UnauthenticatedError("invalid, expired or revoked API key")
    perms = Permissions.model_validate(record.get("permissions") or {})
    return Principal(key_id=record["id"], tenant_id=record["tenant_id"], permissions=perms)


def requires(operation: str | None, *, admin: bool = False) -> Callable:
    """Guard a view: authenticate, rate-limit, then check `operation` (None: any tenant key)."""
    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            who = authenticate()
            g.mailbridge_principal = who
            state = ratelimit.count_request(runtime().store, who.key_id or ADMIN_COUNTER,
                                            who.permissions.limits)
            g.mailbridge_rate_headers = state.headers()
            if state.exceeded:
                raise RateLimitedError("rate limit exceeded for this API key", retry_after=state.reset)
            if who.is_admin:
                if not admin:
                    raise ForbiddenError("the admin key manages tenants and keys only")
                return view(*args, **kwargs)
            if operation is not None and not who.permissions.allows(operation):
                raise ForbiddenError(f"this API key may not {operation}",
                                     details={"operation": operation})
            return view(*args, **kwargs)
        return guarded
    return decorate


def principal() -> Principal:
    return g.mailbridge_principal


def add_rate_headers(response):
    """after_request hook: RateLimit-* on every authenticated answer (errors included)."""
    for name, value in (g.get("mailbridge_rate_headers") or {}).items():
        response.headers[name] = value
    return response
