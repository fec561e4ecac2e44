"""Blueprint of the `gmail_push` Cloud Function: `POST /push/gmail`, Gmail's notifications through Pub/Sub (API.md section 8)."""
from __future__ import annotations

import logging

from flask import Blueprint, request

from mailbridge.api.context import runtime
from mailbridge.api.pubsub_push import decode_push
from mailbridge.api.push_auth import requires_push_auth
from mailbridge.core.sync import sync_address
from mailbridge.errors import InvalidRequestError

log = logging.getLogger("mailbridge.gmail_push")

bp = Blueprint("gmail_push", __name__)


@bp.post("/push/gmail")
@requires_push_auth
def push_gmail():
    """Sync every connection of the notified mailbox, then acknowledge (204).

    The stored cursor, not the notified historyId, drives the sync: a duplicate or older notification
    costs no upstream call. Answers: 204 when done, for an unknown mailbox, for a revoked or
    disconnected one (only reconnecting helps; the cursor catches up then), and for a push that can
    never succeed (malformed: logged, acknowledged so Pub/Sub stops redelivering it); 503 on a
    transient failure or a message not readable yet, so that Pub/Sub redelivers with backoff."""
    try:
        data, _, message_id = decode_push(request)
        address, history_id = _notification(data)
    except InvalidRequestError as exc:
        log.warning("malformed Gmail push acknowledged: %s", exc.message)
        return "", 204
    asked = sync_address(runtime(), address, history_id)
    if not asked:
        log.info("Gmail push %s for a mailbox with no connection: ignored", message_id)
    return "", 204


def _notification(data: dict) -> tuple[str, str]:
    """(emailAddress, historyId as text) of Gmail's `{"emailAddress": "me@x.com", "historyId": 9876}`;
    historyId may come as a number or a string of digits."""
    address, history = data.get("emailAddress"), data.get("historyId")
    if not isinstance(address, str) or "@" not in address:
        raise InvalidRequestError("emailAddress must be an email address", field="emailAddress")
    if isinstance(history, bool) or not isinstance(history, (int, str)) or not str(history).isdigit():
        raise InvalidRequestError("historyId must be a non-negative integer", field="historyId")
    return address, str(int(history))
