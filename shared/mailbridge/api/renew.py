"""Blueprint of the `renew` Cloud Function: POST /internal/renew (API.md section 8)."""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request

from mailbridge.api.context import runtime
from mailbridge.api.pubsub_push import decode_push
from mailbridge.api.push_auth import requires_push_auth
from mailbridge.core import renewal
from mailbridge.errors import InvalidRequestError

log = logging.getLogger("mailbridge.api.renew")

bp = Blueprint("renew", __name__)


@bp.post("/internal/renew")
@requires_push_auth
def renew():
    """Two callers, told apart by the body. Cloud Scheduler (an empty body or `{}`): one tick,
    `renewal.renew_due` → `{renewed, failed, resynced, queued}`. The renewals push subscription (a
    Pub/Sub envelope with `message`): one page, `renewal.renew_message` → `{renewed, failed, resynced}`.
    200 when done; TransientError → 503 (the error handler), so Pub/Sub or Scheduler retries. A
    malformed envelope can never succeed: logged and acknowledged (200, zeros) instead of looping."""
    body = request.get_json(force=True, silent=True)
    if isinstance(body, dict) and "message" in body:
        try:
            message, _attributes, message_id = decode_push(request)
        except InvalidRequestError as exc:
            log.error("malformed renewal push acknowledged and dropped (%s)", exc.details.get("field"))
            return jsonify({"renewed": 0, "failed": 0, "resynced": 0})
        log.info("renewal page %s", message_id)
        return jsonify(renewal.renew_message(runtime(), message))
    return jsonify(renewal.renew_due(runtime()))
