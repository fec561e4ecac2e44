"""The gate every Gmail call passes: call counting, latency, bearer auth, userId, quota, faults, scopes."""
from __future__ import annotations

import time
from functools import wraps
from typing import Callable

from flask import Response, current_app, jsonify, request

from mailbridge.errors import ForbiddenError

from .errors import insufficient_scope, unauthenticated
from .mailbox import Mailbox
from .state import FULL_SCOPE, EmulatorState, Grant, fault_error

_G = "https://www.googleapis.com/auth/gmail."
READ = {FULL_SCOPE, _G + "modify", _G + "readonly"}
WRITE = {FULL_SCOPE, _G + "modify"}
LABELS = WRITE | {_G + "labels"}
SEND = WRITE | {_G + "send", _G + "compose"}
DELETE = {FULL_SCOPE}


def state() -> EmulatorState:
    return current_app.config["EMULATOR_STATE"]


def authenticate(st: EmulatorState) -> Grant:
    """The grant behind `Authorization: Bearer …`; UnauthenticatedError (401) when absent/expired/revoked."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    grant = st.grant_for(token.strip()) if scheme.lower() == "bearer" else None
    if grant is None:
        raise unauthenticated()
    return grant


def resolve_user(st: EmulatorState, grant: Grant, user_id: str) -> Mailbox:
    """`me` or the grant's own address; any other user is Gmail's 403 "Delegation denied"."""
    if user_id != "me" and user_id.lower() != grant.account:
        raise ForbiddenError(f"Delegation denied for {grant.account}")
    return st.mailbox(grant.account)


def gmail_method(method_id: str, scopes: set[str]) -> Callable:
    """Wrap a handler `fn(box, **path_params)`; it returns a dict (200 JSON) or None (204)."""
    def decorate(fn: Callable) -> Callable:
        @wraps(fn)
        def wrapper(userId: str, **params):
            st = state()
            st.count_call(method_id)
            if st.latency_ms:
                time.sleep(st.latency_ms / 1000)
            grant = authenticate(st)
            box = resolve_user(st, grant, userId)
            st.charge(grant.account, method_id)
            fault = st.take_fault(method_id)
            if fault is not None:
                raise fault_error(fault)
            if not scopes & set(grant.scopes):
                raise insufficient_scope()
            result = fn(box, **params)
            if isinstance(result, Response):
                return result
            return jsonify(result) if result is not None else Response(status=204)
        wrapper.method_id = method_id
        return wrapper
    return decorate
