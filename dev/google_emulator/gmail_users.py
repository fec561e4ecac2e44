"""Gmail users.getProfile, watch, stop, labels.*, history.list and threads.*."""
from __future__ import annotations

import re

from flask import Blueprint, request

from . import views
from .errors import bad_request
from .gmail_auth import LABELS, READ, gmail_method, state
from .gmail_messages import json_body
from .mailbox import Mailbox

bp = Blueprint("gmail_users", __name__, url_prefix="/gmail/v1/users/<userId>")

_TOPIC = re.compile(r"^projects/[^/]+/topics/[A-Za-z][\w.~+%-]{2,254}$")
_WATCH_DAYS_MS = 7 * 24 * 3600 * 1000


@bp.get("/profile")
@gmail_method("gmail.users.getProfile", READ)
def profile(box: Mailbox):
    with box.lock:
        visible = box.visible()
        return {"emailAddress": box.address, "messagesTotal": len(visible),
                "threadsTotal": len({m.thread_id for m in visible}), "historyId": str(box.history_id)}


@bp.post("/watch")
@gmail_method("gmail.users.watch", READ)
def watch(box: Mailbox):
    """Start (or replace) the watch; like Gmail, publishes one notification at once."""
    body = json_body()
    topic = body.get("topicName") or ""
    if not _TOPIC.match(topic):
        raise bad_request("Invalid topicName does not match projects/SOME-PROJECT/topics/SOME-TOPIC")
    st = state()
    behavior = body.get("labelFilterBehavior") or body.get("labelFilterAction") or "include"
    with box.lock:
        expiration = int(st.clock() * 1000) + _WATCH_DAYS_MS
        box.watch = {"topicName": topic, "labelIds": list(body.get("labelIds") or []),
                     "labelFilterBehavior": behavior.lower(), "expiration_ms": expiration}
        history_id = box.history_id
    st.notifier.notify(box.address, topic, history_id)
    return {"historyId": str(history_id), "expiration": str(expiration)}


@bp.post("/stop")
@gmail_method("gmail.users.stop", READ)
def stop(box: Mailbox):
    with box.lock:
        box.watch = None
    return None


@bp.get("/labels")
@gmail_method("gmail.users.labels.list", READ | LABELS)
def labels_list(box: Mailbox):
    with box.lock:
        return {"labels": box.label_list()}


@bp.get("/labels/<id>")
@gmail_method("gmail.users.labels.get", READ | LABELS)
def labels_get(box: Mailbox, id: str):
    return box.label_get(id)


@bp.post("/labels")
@gmail_method("gmail.users.labels.create", LABELS)
def labels_create(box: Mailbox):
    name = json_body().get("name")
    if not isinstance(name, str):
        raise bad_request("Invalid label name")
    return box.label_create(name)


@bp.get("/history")
@gmail_method("gmail.users.history.list", READ)
def history(box: Mailbox):
    """history.list; 404 (notFound) when startHistoryId is older than the kept history."""
    args = request.args
    start = args.get("startHistoryId", "")
    if not start.isdigit():
        raise bad_request("Missing or invalid startHistoryId")
    size = args.get("maxResults", 100, type=int)
    if not 1 <= size <= 500:
        raise bad_request("Invalid maxResults: must be between 1 and 500")
    token = args.get("pageToken")
    if token is not None and not token.isdigit():
        raise bad_request("Invalid pageToken")
    types = args.getlist("historyTypes")
    known = {"messageAdded", "messageDeleted", "labelAdded", "labelRemoved"}
    if set(types) - known:
        raise bad_request(f"Invalid historyTypes: {sorted(set(types) - known)[0]}")
    return box.list_history(int(start), types or None, args.get("labelId"), size, token)


@bp.get("/threads")
@gmail_method("gmail.users.threads.list", READ)
def threads_list(box: Mailbox):
    return views.list_threads(box, request.args, state().clock)


@bp.get("/threads/<id>")
@gmail_method("gmail.users.threads.get", READ)
def threads_get(box: Mailbox, id: str):
    return views.thread(box, id, request.args.get("format", "full"), request.args.getlist("metadataHeaders"))
