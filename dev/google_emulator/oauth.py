"""Google sign-in: the consent page, the token endpoint (code + PKCE, refresh) and revocation."""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, Response, current_app, jsonify, request

from .state import AuthCode, EmulatorState, Grant

bp = Blueprint("google_oauth", __name__)


def _state() -> EmulatorState:
    return current_app.config["EMULATOR_STATE"]


def _page(title: str, text: str, status: int = 200, form: str = "") -> Response:
    body = (f"<!doctype html><html><head><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{form}</body></html>")
    return Response(body, status=status, mimetype="text/html")


def _with_query(uri: str, params: dict) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _redirect(uri: str, params: dict) -> Response:
    return Response(status=302, headers={"Location": _with_query(uri, params)})


def _validate(args) -> tuple[dict | None, str]:
    """The authorize request's parameters, or (None, why) — never redirect before this passes."""
    state = _state()
    client = state.clients.get(args.get("client_id", ""))
    if client is None:
        return None, "Error 401: invalid_client. The OAuth client was not found."
    redirect_uri = args.get("redirect_uri", "")
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        return None, "Error 400: invalid_request. Invalid parameter value for redirect_uri."
    if client["redirect_uris"] and redirect_uri not in client["redirect_uris"]:
        return None, "Error 400: redirect_uri_mismatch."
    if args.get("response_type") != "code":
        return None, "Error 400: invalid_request. Only response_type=code is supported."
    if not args.get("scope", "").split():
        return None, "Error 400: invalid_request. Missing required parameter: scope."
    challenge, method = args.get("code_challenge"), args.get("code_challenge_method", "plain")
    if challenge and method not in ("S256", "plain"):
        return None, "Error 400: invalid_request. Invalid code_challenge_method."
    if method == "S256" and challenge is not None and len(challenge) != 43:
        return None, "Error 400: invalid_request. Invalid code_challenge."
    params = {k: args.get(k) for k in ("client_id", "redirect_uri", "scope", "state", "code_challenge",
                                        "code_challenge_method", "access_type", "login_hint", "prompt")}
    params["code_challenge_method"] = method if challenge else None
    return params, ""


def _account_for(params: dict) -> str | None:
    state = _state()
    hint = (params.get("login_hint") or "").lower()
    for choice in (state.oauth_account, hint, state.default_account):
        if choice and choice.lower() in state.accounts:
            return choice.lower()
    return None


def _decide(params: dict, approve: bool, account: str | None) -> Response:
    if not approve or account is None:
        return _redirect(params["redirect_uri"], {"error": "access_denied", "state": params.get("state")})
    code = "4/" + secrets.token_urlsafe(40)
    state = _state()
    with state.lock:
        state.codes[code] = AuthCode({**params, "account": account}, state.clock())
    return _redirect(params["redirect_uri"], {"code": code, "scope": params["scope"],
                                              "state": params.get("state"), "authuser": "0"})


@bp.get("/o/oauth2/v2/auth")
@bp.get("/o/oauth2/auth")
def authorize():
    """Validate, then redirect at once ("approve"/"deny") or show Approve / Deny ("ask")."""
    params, why = _validate(request.args)
    if params is None:
        return _page("Access blocked: Authorization Error", why, 400)
    state = _state()
    account = _account_for(params)
    if state.oauth_decision in ("approve", "deny"):
        return _decide(params, state.oauth_decision == "approve", account)
    consent = secrets.token_urlsafe(16)
    with state.lock:
        state.pending_consents[consent] = params
    form = ('<form method="post" action="/o/oauth2/v2/auth/decide">'
            f'<input type="hidden" name="consent" value="{consent}">'
            '<button name="decision" value="approve">Approve</button> '
            '<button name="decision" value="deny">Deny</button></form>')
    who = account or "(no account)"
    return _page("Sign in - Google Accounts (emulator)",
                 f"{who} is asked to grant {params['scope']} to client {params['client_id']}.", 200, form)


@bp.post("/o/oauth2/v2/auth/decide")
def decide():
    """The consent form's answer; the redirect URI comes from the validated request kept server-side."""
    state = _state()
    with state.lock:
        params = state.pending_consents.pop(request.form.get("consent", ""), None)
    if params is None:
        return _page("Error", "This consent request is unknown or was already answered.", 400)
    return _decide(params, request.form.get("decision") == "approve", _account_for(params))


def _token_error(error: str, description: str, status: int = 400) -> Response:
    resp = jsonify({"error": error, "error_description": description})
    resp.status_code = status
    return resp


def _client_auth() -> tuple[str | None, str | None]:
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        return auth.username, auth.password
    return request.form.get("client_id"), request.form.get("client_secret")


def _pkce_ok(params: dict, verifier: str | None) -> bool:
    challenge = params.get("code_challenge")
    if not challenge:
        return True
    if not verifier:
        return False
    if params.get("code_challenge_method") == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    else:
        computed = verifier
    return hmac.compare_digest(computed, challenge)


@bp.post("/token")
def token():
    """Exchange a code or a refresh token; errors in Google's `{error, error_description}` form."""
    state = _state()
    state.count_call("oauth2.token")
    fault = state.take_fault("oauth2.token")
    if fault is not None:
        resp = _token_error("internal_failure" if fault.status >= 500 else "rate_limit_exceeded",
                            "Injected fault", fault.status)
        if fault.retry_after is not None:
            resp.headers["Retry-After"] = str(fault.retry_after)
        return resp
    client_id, secret = _client_auth()
    client = state.clients.get(client_id or "")
    if client is None:
        return _token_error("invalid_client", "The OAuth client was not found.", 401)
    if not hmac.compare_digest(client["secret"], secret or ""):
        return _token_error("invalid_client", "Unauthorized", 401)
    grant_type = request.form.get("grant_type")
    if grant_type == "authorization_code":
        return _exchange_code(state, client_id)
    if grant_type == "refresh_token":
        return _refresh(state, client_id)
    return _token_error("unsupported_grant_type", f"Invalid grant_type: {grant_type or ''}")


def _exchange_code(state: EmulatorState, client_id: str) -> Response:
    with state.lock:
        entry = state.codes.get(request.form.get("code", ""))
        if entry is None:
            return _token_error("invalid_grant", "Malformed auth code.")
        if entry.used:
            # A replayed code: refuse, and revoke what it produced (RFC 6749 §4.1.2).
            if entry.grant is not None:
                state.revoke_grant(entry.grant)
            return _token_error("invalid_grant", "Bad Request")
        params = entry.grant_params
        if state.clock() - entry.issued_at > state.code_lifetime:
            return _token_error("invalid_grant", "Bad Request")
        if params["client_id"] != client_id:
            return _token_error("invalid_grant", "Bad Request")
        if request.form.get("redirect_uri") != params["redirect_uri"]:
            return _token_error("redirect_uri_mismatch", "Bad Request")
        if not _pkce_ok(params, request.form.get("code_verifier")):
            missing = not request.form.get("code_verifier")
            return _token_error("invalid_grant", "Missing code verifier." if missing else "Invalid code verifier.")
        entry.used = True
        offline = params.get("access_type") == "offline"
        refresh = "1//" + secrets.token_urlsafe(48) if offline else None
        grant = Grant(params["account"], client_id, params["scope"].split(), refresh)
        entry.grant = grant
        if refresh:
            state.refresh_tokens[refresh] = grant
    body = {"access_token": state.issue_tokens(grant), "expires_in": state.access_token_lifetime,
            "scope": " ".join(grant.scopes), "token_type": "Bearer"}
    if refresh:
        body["refresh_token"] = refresh
    return jsonify(body)


def _refresh(state: EmulatorState, client_id: str) -> Response:
    with state.lock:
        grant = state.refresh_tokens.get(request.form.get("refresh_token", ""))
        if grant is None or grant.revoked:
            return _token_error("invalid_grant", "Token has been expired or revoked.")
        if grant.client_id != client_id:
            return _token_error("unauthorized_client", "Unauthorized", 401)
        body = {"access_token": state.issue_tokens(grant), "expires_in": state.access_token_lifetime,
                "scope": " ".join(grant.scopes), "token_type": "Bearer"}
        if state.rotate_refresh_tokens:
            del state.refresh_tokens[grant.refresh_token]
            grant.refresh_token = "1//" + secrets.token_urlsafe(48)
            state.refresh_tokens[grant.refresh_token] = grant
            body["refresh_token"] = grant.refresh_token
    return jsonify(body)


@bp.post("/revoke")
def revoke():
    """Revoke a refresh or access token (and the whole grant behind it); unknown → 400 invalid_token."""
    state = _state()
    state.count_call("oauth2.revoke")
    value = request.form.get("token") or request.args.get("token") or ""
    with state.lock:
        grant = state.refresh_tokens.get(value)
        if grant is None and value in state.access_tokens:
            grant = state.access_tokens[value].grant
        if grant is None or grant.revoked:
            return _token_error("invalid_token", "Token expired or revoked")
        state.revoke_grant(grant)
    return jsonify({})
