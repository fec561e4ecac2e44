"""Decoding of Pub/Sub push requests: the envelope around one message whose data is JSON.

Pub/Sub POSTs (sample, data shortened):

    {"message": {"data": "eyJlbWFpbEFkZHJlc3MiOiAi...", "attributes": {}, "messageId": "2070443601311540",
                 "publishTime": "2026-11-21T11:30:00.123Z"},
     "subscription": "projects/p/subscriptions/gmail-notifications-push", "deliveryAttempt": 3}

`deliveryAttempt` is present only when the subscription has a dead-letter policy.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flask import Request

from mailbridge.errors import InvalidRequestError


def decode_push(request: Request) -> tuple[dict[str, Any], dict[str, str], str]:
    """(the message's data decoded as a JSON object, its attributes, its message id).

    Raises InvalidRequestError (400, `details.field` naming the bad field) for a malformed push.
    Such a push can never succeed, and Pub/Sub redelivers every non-2xx answer until the
    subscription's dead-letter limit: a route may catch the error, log it and acknowledge (204)
    instead, to stop the loop. Nothing here logs the data (it may hold addresses)."""
    envelope = request.get_json(force=True, silent=True)
    if not isinstance(envelope, dict):
        raise _bad("body", "the body must be a JSON object (a Pub/Sub push envelope)")
    message = envelope.get("message")
    if not isinstance(message, dict):
        raise _bad("message", "message must be an object")
    message_id = message.get("messageId", message.get("message_id"))
    if not isinstance(message_id, str) or not message_id:
        raise _bad("message.messageId", "message.messageId must be a non-empty string")
    attributes = message.get("attributes")
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise _bad("message.attributes", "message.attributes must be an object of strings")
    data = message.get("data")
    if not isinstance(data, str) or not data:
        raise _bad("message.data", "message.data must be a non-empty base64 string")
    try:
        decoded = json.loads(base64.b64decode(data, validate=True).decode("utf-8"))
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _bad("message.data", "message.data must be base64 of a UTF-8 JSON object") from None
    if not isinstance(decoded, dict):
        raise _bad("message.data", "message.data must be base64 of a UTF-8 JSON object")
    return decoded, dict(attributes), message_id


def delivery_attempt(request: Request) -> int | None:
    """Pub/Sub's count of deliveries of this message (1 on the first), or None when the subscription
    has no dead-letter policy (Pub/Sub then sends no count) or the field is not a positive integer."""
    envelope = request.get_json(force=True, silent=True)
    value = envelope.get("deliveryAttempt") if isinstance(envelope, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _bad(field: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"malformed Pub/Sub push: {message}", field=field, status=400)
