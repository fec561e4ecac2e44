"""Blueprint of the `manage` Cloud Function: /v1/api-keys, /v1/connections (and later /v1/webhooks)."""
from __future__ import annotations

from typing import Literal

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from mailbridge import clock
from mailbridge.api.auth import principal, requires
from mailbridge.api.body import parse_body
from mailbridge.api.context import runtime
from mailbridge.core import connections, keys
from mailbridge.core.permissions import Permissions
from mailbridge.errors import NotFoundError

bp = Blueprint("manage", __name__)


class CreateApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    tenant_id: str | None = Field(None, min_length=1, max_length=128)
    expires_in: int | None = Field(None, ge=1, le=10 * 365 * 86400)
    permissions: Permissions | None = None


@bp.post("/v1/api-keys")
@requires("manage_api_keys", admin=True)
def create_api_key():
    body = parse_body(CreateApiKey)
    tenant = keys.check_tenant_access(principal().tenant_id, body.tenant_id)
    created = keys.create_api_key(runtime().store, tenant_id=tenant, name=body.name,
                                  permissions=body.permissions, expires_in=body.expires_in)
    return jsonify(created), 201


@bp.get("/v1/api-keys")
@requires("manage_api_keys", admin=True)
def list_api_keys():
    tenant = keys.check_tenant_access(principal().tenant_id, request.args.get("tenant_id"))
    return jsonify({"api_keys": keys.list_api_keys(runtime().store, tenant)})


@bp.delete("/v1/api-keys/<key_id>")
@requires("manage_api_keys", admin=True)
def revoke_api_key(key_id: str):
    keys.revoke_api_key(runtime().store, key_id=key_id, tenant_id=principal().tenant_id)
    return "", 204


# ---- connections (API.md section 4) -----------------------------------------------------------

class ImportConnection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: Literal["google", "microsoft"]
    user_id: str = Field(min_length=1, max_length=256)
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    refresh_token: str = Field(min_length=1, max_length=4096)
    start_watching: bool = True


def _visible_connection(connection_id: str) -> dict:
    """The caller's connection record; another tenant's, or one its key may not see, is 404."""
    try:
        record = connections.get_connection(runtime(), connection_id)
    except NotFoundError:
        record = None
    return principal().check_connection(record, connection_id)


@bp.get("/v1/connections")
@requires("manage_connections")
def list_connections():
    who, args = principal(), request.args
    found = connections.list_connections(runtime(), who.tenant_id, user_id=args.get("user_id"),
                                         provider=args.get("provider"), status=args.get("status"),
                                         visible=who.permissions.connection_ids)
    return jsonify({"connections": found})


@bp.get("/v1/connections/<connection_id>")
@requires("manage_connections")
def get_connection(connection_id: str):
    return jsonify(connections.public_view(_visible_connection(connection_id)))


@bp.post("/v1/connections")
@requires("manage_connections")
def import_connection():
    body = parse_body(ImportConnection)
    record = connections.import_connection(runtime(), tenant_id=principal().tenant_id, provider=body.provider,
                                           user_id=body.user_id, email=body.email,
                                           refresh_token=body.refresh_token, start_watching=body.start_watching)
    return jsonify(connections.public_view(record)), 201


@bp.post("/v1/connections/<connection_id>/refresh")
@requires("manage_connections")
def refresh_connection(connection_id: str):
    from mailbridge.core import tokens

    _visible_connection(connection_id)
    expires = tokens.refresh_now(runtime(), connection_id)
    return jsonify({"expires_at": clock.rfc3339(expires)})
