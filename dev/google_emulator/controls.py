"""Test controls under /emulator/…: accounts, clients, delivery, sign-in decisions, grants, faults, counts."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from mailbridge.errors import InvalidRequestError

from . import mime
from .gmail_auth import state

bp = Blueprint("emulator_controls", __name__, url_prefix="/emulator")


def _json() -> dict:
    body = request.get_json(silent=True, force=True) if request.get_data() else {}
    if not isinstance(body, dict):
        raise InvalidRequestError("expected a JSON object", status=400)
    return body


@bp.post("/accounts")
def add_account():
    address = _json().get("email")
    if not isinstance(address, str) or "@" not in address:
        raise InvalidRequestError("email required", field="email", status=400)
    box = state().add_account(address)
    return jsonify({"email": box.address, "historyId": str(box.history_id)}), 201


@bp.post("/clients")
def add_client():
    body = _json()
    if not body.get("client_id") or not body.get("client_secret"):
        raise InvalidRequestError("client_id and client_secret required", status=400)
    state().add_client(body["client_id"], body["client_secret"], body.get("redirect_uris"))
    return jsonify({"client_id": body["client_id"]}), 201


@bp.post("/accounts/<address>/deliver")
def deliver(address: str):
    """Body: `{"raw": base64url, "delay_visible_ms"?, "labelIds"?}` or raw message/rfc822 bytes."""
    if request.mimetype == "message/rfc822":
        raw, opts = request.get_data(), request.args
        delay, labels = int(opts.get("delay_visible_ms", 0)), opts.getlist("labelIds") or None
    else:
        body = _json()
        try:
            raw = mime.b64url_decode(body.get("raw") or "")
        except ValueError:
            raise InvalidRequestError("raw must be base64url", field="raw", status=400) from None
        delay, labels = int(body.get("delay_visible_ms", 0)), body.get("labelIds")
    if not raw.strip():
        raise InvalidRequestError("empty message", field="raw", status=400)
    msg = state().deliver(address, raw, labels=labels, delay_visible_ms=delay)
    return jsonify({"id": msg.id, "threadId": msg.thread_id, "historyId": str(msg.history_id)}), 201


@bp.post("/accounts/<address>/revoke")
def revoke_account(address: str):
    return jsonify({"revoked": state().revoke_account(address)})


@bp.post("/tokens/expire")
def expire_tokens():
    return jsonify({"expired": state().expire_access_tokens(_json().get("account"))})


@bp.post("/oauth")
def oauth_settings():
    """`{"decision": "approve"|"deny"|"ask", "account": "..."}` for the next sign-ins."""
    body, st = _json(), state()
    decision = body.get("decision")
    if decision is not None and decision not in ("approve", "deny", "ask"):
        raise InvalidRequestError("decision must be approve, deny or ask", field="decision", status=400)
    account = body.get("account")
    if account is not None and account.lower() not in st.accounts:
        raise InvalidRequestError("unknown account", field="account", status=400)
    with st.lock:
        st.oauth_decision = decision or st.oauth_decision
        st.oauth_account = account.lower() if account else st.oauth_account
    return jsonify({"decision": st.oauth_decision, "account": st.oauth_account})


@bp.post("/settings")
def settings():
    """Numbers and switches: access_token_lifetime, rotate_refresh_tokens, max_json_body,
    max_upload_body, history_retention (applies to mailboxes created after)."""
    st, body = state(), _json()
    allowed = {"access_token_lifetime": int, "rotate_refresh_tokens": bool, "max_json_body": int,
               "max_upload_body": int, "history_retention": int, "latency_ms": int}
    with st.lock:
        for key, value in body.items():
            if key not in allowed:
                raise InvalidRequestError(f"unknown setting {key}", field=key, status=400)
            setattr(st, key, allowed[key](value))
        if "history_retention" in body:
            for box in st.accounts.values():
                box.retention = st.history_retention
    return jsonify({k: getattr(st, k) for k in allowed})


@bp.post("/faults")
def faults():
    """`{"method", "status", "count", "retry_after"?}` and/or `{"latency_ms"}`."""
    st, body = state(), _json()
    if "latency_ms" in body:
        st.latency_ms = int(body["latency_ms"])
    if "status" in body:
        st.add_fault(body.get("method", "*"), int(body["status"]), int(body.get("count", 1)),
                     body.get("retry_after"))
    return jsonify({"faults": [vars(f) for f in st.faults], "latency_ms": st.latency_ms})


@bp.get("/calls")
def calls():
    return jsonify(state().snapshot())


@bp.get("/notifications")
def notifications():
    return jsonify({"sent": [{"topic": t, "payload": p} for t, p in state().notifier.sent]})


@bp.post("/reset")
def reset():
    state().reset()
    return jsonify({"ok": True})
