"""/v1/api-keys routes of the `manage` function (API.md section 2)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from mailbridge.api.auth import principal, requires
from mailbridge.api.body import parse_body
from mailbridge.api.context import runtime
from mailbridge.core import keys
from mailbridge.core.permissions import Permissions

bp = Blueprint("api_keys", __name__)


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
