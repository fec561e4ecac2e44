"""/v1/connections routes of the `manage` function (API.md section 4)."""
from __future__ import annotations

from typing import Literal

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from mailbridge import clock
from mailbridge.api.auth import principal, requires
from mailbridge.api.body import parse_body
from mailbridge.api.context import runtime
from mailbridge.core import connections
from mailbridge.errors import NotFoundError

bp = Blueprint("connections", __name__)

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


@bp.delete("/v1/connections/<connection_id>")
@requires("manage_connections")
def delete_connection(connection_id: str):
    connections.disconnect(runtime(), _visible_connection(connection_id))
    return "", 204


@bp.post("/v1/connections/<connection_id>/sync")
@requires("manage_connections")
def sync_connection(connection_id: str):
    """Sync now: a delta sync inline (409 conflict when disconnected, reauth_required when revoked)."""
    from mailbridge.core.mailbox import provider_for
    from mailbridge.core.sync import sync_connection as sync

    record = _visible_connection(connection_id)
    provider_for(runtime(), record)   # 409 for a disconnected mailbox before any sync work
    result = sync(runtime(), record)
    finished = result.finished_at
    return jsonify({"new_messages": result.new_messages,
                    "finished_at": clock.rfc3339(finished) if isinstance(finished, (int, float)) else finished})
