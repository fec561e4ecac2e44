"""Blueprint of the `deliver` Cloud Function: `POST /internal/deliver`, the delivery topic's push subscription.

Answers: 204 when the delivery is done or settled (succeeded, failed, dead, webhook gone); 503 when
the attempt failed and should be retried (Pub/Sub redelivers with the subscription's backoff); 500
on an unexpected error (also redelivered: a bug must not lose a delivery). A malformed envelope is
acknowledged with 204 and logged rather than answered 400: Pub/Sub treats every non-2xx as a nack and
would redeliver a message that can never succeed until its dead-letter limit, to no one's benefit.
"""
from __future__ import annotations

import logging

from flask import Blueprint, request

from mailbridge.api.context import runtime
from mailbridge.api.pubsub_push import decode_push, delivery_attempt
from mailbridge.api.push_auth import requires_push_auth
from mailbridge.core.delivery import handle_delivery
from mailbridge.errors import InvalidRequestError

log = logging.getLogger("mailbridge.api.deliver")

bp = Blueprint("deliver", __name__)


@bp.post("/internal/deliver")
@requires_push_auth
def deliver():
    try:
        message, _attributes, message_id = decode_push(request)
    except InvalidRequestError as exc:
        log.warning("malformed delivery push acknowledged without processing (%s)",
                    exc.details.get("field", "body"))
        return "", 204
    # TransientError propagates: the error handler answers 503 with Retry-After, Pub/Sub redelivers.
    handle_delivery(runtime(), message, bus_attempt=delivery_attempt(request))
    log.debug("delivery push %s handled", message_id)
    return "", 204
