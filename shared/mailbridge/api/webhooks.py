"""/v1/webhooks routes of the `manage` function (API.md section 7).

A key restricted to some connections (`permissions.connection_ids`) sees only webhooks bound to one of
them, and must bind the webhooks it creates to one: a webhook for every connection would carry mail of
connections the key cannot see. Its `visible_fields` travel with the webhook (core/delivery.py).
"""
from __future__ import annotations

from typing import Literal

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailbridge.api.auth import principal, requires
from mailbridge.api.body import parse_body
from mailbridge.api.context import runtime
from mailbridge.core import connections, delivery, webhooks
from mailbridge.errors import InvalidRequestError, NotFoundError

bp = Blueprint("webhooks", __name__)

EventType = Literal[webhooks.EVENT_TYPES]  # type: ignore[valid-type]  (a tuple subscript: each type)
MAX_DELIVERIES_PAGE = 100


class _WebhookFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = Field(None, min_length=1, max_length=webhooks.MAX_URL_LENGTH)
    events: list[EventType] = Field(None, min_length=1, max_length=len(webhooks.EVENT_TYPES))
    connection_id: str | None = Field(None, min_length=1, max_length=128)
    description: str | None = Field(None, max_length=1024)

    @field_validator("events")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("each event type at most once")
        return value


class CreateWebhook(_WebhookFields):
    url: str = Field(min_length=1, max_length=webhooks.MAX_URL_LENGTH)


class UpdateWebhook(_WebhookFields):
    enabled: bool = None


def _own_webhook(webhook_id: str) -> dict:
    """The caller's webhook; another tenant's, or one bound to a connection the key cannot see, is 404."""
    who = principal()
    record = webhooks.get_webhook(runtime(), who.tenant_id, webhook_id)
    restricted = who.permissions.connection_ids is not None
    if restricted and not (record.get("connection_id") and who.permissions.sees_connection(record["connection_id"])):
        raise NotFoundError(f"webhook {webhook_id} not found")
    return record


def _check_connection(connection_id: str | None) -> None:
    """A bound connection must be the tenant's and visible to the key (404 otherwise, as on /v1/send)."""
    who = principal()
    if connection_id is None:
        if who.permissions.connection_ids is not None:
            raise InvalidRequestError("connection_id: required for a key restricted to some connections",
                                      field="connection_id")
        return
    try:
        record = connections.get_connection(runtime(), connection_id)
    except NotFoundError:
        record = None
    who.check_connection(record, connection_id)


@bp.post("/v1/webhooks")
@requires("manage_webhooks")
def create_webhook():
    body = parse_body(CreateWebhook)
    _check_connection(body.connection_id)
    who = principal()
    created = webhooks.create_webhook(runtime(), tenant_id=who.tenant_id, url=body.url, events=body.events,
                                      connection_id=body.connection_id, description=body.description,
                                      visible_fields=who.permissions.visible_fields)
    return jsonify(created), 201


@bp.get("/v1/webhooks")
@requires("manage_webhooks")
def list_webhooks():
    who = principal()
    found = webhooks.list_webhooks(runtime(), who.tenant_id)
    if who.permissions.connection_ids is not None:
        found = [w for w in found if w.get("connection_id") and who.permissions.sees_connection(w["connection_id"])]
    return jsonify({"webhooks": [webhooks.public_view(w) for w in found]})


@bp.get("/v1/webhooks/<webhook_id>")
@requires("manage_webhooks")
def get_webhook(webhook_id: str):
    return jsonify(webhooks.public_view(_own_webhook(webhook_id)))


@bp.patch("/v1/webhooks/<webhook_id>")
@requires("manage_webhooks")
def update_webhook(webhook_id: str):
    record = _own_webhook(webhook_id)
    body = parse_body(UpdateWebhook)
    # Only the fields sent; url, events and enabled refuse null (their types), the others accept it.
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    if "connection_id" in changes:
        _check_connection(changes["connection_id"])
    return jsonify(webhooks.public_view(webhooks.update_webhook(runtime(), record, changes)))


@bp.delete("/v1/webhooks/<webhook_id>")
@requires("manage_webhooks")
def delete_webhook(webhook_id: str):
    webhooks.delete_webhook(runtime(), _own_webhook(webhook_id))
    return "", 204


@bp.post("/v1/webhooks/<webhook_id>/rotate-secret")
@requires("manage_webhooks")
def rotate_secret(webhook_id: str):
    return jsonify({"secret": webhooks.rotate_secret(runtime(), _own_webhook(webhook_id))})


@bp.get("/v1/webhooks/<webhook_id>/deliveries")
@requires("manage_webhooks")
def list_deliveries(webhook_id: str):
    record = _own_webhook(webhook_id)
    raw = request.args.get("limit", "20")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= MAX_DELIVERIES_PAGE:
        raise InvalidRequestError(f"limit: an integer from 1 to {MAX_DELIVERIES_PAGE}", field="limit")
    found = delivery.list_deliveries(runtime(), record, limit=int(raw))
    return jsonify({"deliveries": [delivery.public_view(d) for d in found]})


@bp.post("/v1/webhooks/<webhook_id>/deliveries/<delivery_id>/retry")
@requires("manage_webhooks")
def retry_delivery(webhook_id: str, delivery_id: str):
    record = _own_webhook(webhook_id)
    return jsonify({"delivery": delivery.public_view(delivery.retry_delivery(runtime(), record, delivery_id))}), 202
