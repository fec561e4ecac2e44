"""Connections (API.md section 4): the stored record, the API's connection object, create/reconnect, list, import.

A record in CONNECTIONS (fields other issues add are kept as they are):
    tenant_id, user_id, provider, email, email_key (lower-case), scopes [..]
    access_token, refresh_token      ciphertexts of runtime.cipher, AAD = the connection id
    token_expires_ts, token_version  the access token's expiry; +1 on every refresh (see core/tokens.py)
    created_ts, updated_ts, last_sync_ts (last successful sync), disconnected_ts
    error                            {"code", "message", "at"} or None (the last sync/refresh failed)
    watch                            None, or {"expires_ts", "renewed_ts", "history_id", "topic",
                                     "attempted_ts", "error"} (core/renewal.py; error: the last attempt failed)
    backfill                         None, or the public backfill object (the backfill issue)
    backfill_range, start_watching   what the customer asked for at connect/import time

The id is `conn_` + 24 hex digits of SHA-256 over (tenant, user_id, provider, address): reconnecting
the same mailbox for the same user lands on the same record by construction (create-if-absent), so
two racing callbacks can never make two connections, and the stored mail keeps its connection id.

`connection.created` is emitted when the record is first created, and again when a disconnected
connection is connected anew (the customer saw `connection.deleted`); a reconnect of a live connection
(e.g. after `reauth_required`) emits nothing: the connection never stopped existing.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Iterable

from mailbridge import clock
from mailbridge.core import oauth_state
from mailbridge.core.events import emit
from mailbridge.errors import (ConflictError, ForbiddenError, InvalidRequestError, MailbridgeError,
                               NotFoundError, ProviderError, ReauthRequiredError)
from mailbridge.runtime import Runtime
from mailbridge.secrets.base import GOOGLE_CLIENT_SECRET
from mailbridge.store.base import CONNECTIONS

if TYPE_CHECKING:   # google-auth and requests load only on the routes that call Google
    from mailbridge.providers.google_auth import TokenSet

log = logging.getLogger("mailbridge.connections")

STATUSES = ("never_synced", "healthy", "stale", "error", "disconnected")
PROVIDERS = ("google", "microsoft")
STALE_AFTER = 25 * 3600


def connection_id_for(tenant_id: str, user_id: str, provider: str, email: str) -> str:
    """The stable id of a (tenant, user, provider, address) connection."""
    canonical = json.dumps([tenant_id, user_id, provider, email.strip().lower()], separators=(",", ":"))
    return "conn_" + hashlib.sha256(canonical.encode()).hexdigest()[:24]


def status_of(record: dict, now: float | None = None) -> str:
    """never_synced / healthy / stale / error / disconnected, from the record's fields.

    Precedence: disconnected, then error (the last sync or refresh failed), then never_synced,
    then stale (no successful sync for 25 h), else healthy."""
    now = clock.now() if now is None else now
    if record.get("disconnected_ts"):
        return "disconnected"
    if record.get("error"):
        return "error"
    last = record.get("last_sync_ts")
    if last is None:
        return "never_synced"
    return "stale" if now - last > STALE_AFTER else "healthy"


def public_view(record: dict, now: float | None = None) -> dict:
    """The API's connection object; never a token or ciphertext."""
    error = record.get("error")
    watch = record.get("watch")
    return {
        "id": record["id"], "provider": record["provider"], "email": record["email"],
        "user_id": record["user_id"], "status": status_of(record, now),
        "error": {"code": error.get("code"), "message": error.get("message")} if error else None,
        "last_sync_at": clock.rfc3339(record.get("last_sync_ts")),
        "created_at": clock.rfc3339(record["created_ts"]),
        "watch": {"expires_at": clock.rfc3339(watch.get("expires_ts"))} if isinstance(watch, dict) else None,
        "backfill": record.get("backfill"),
    }


def get_connection(runtime: Runtime, connection_id: str) -> dict:
    """The stored record; NotFoundError if there is none (tenant checks are the caller's)."""
    record = runtime.store.get(CONNECTIONS, connection_id) if connection_id.startswith("conn_") else None
    if record is None:
        raise NotFoundError(f"connection {connection_id} not found")
    return record


def list_connections(runtime: Runtime, tenant_id: str, *, user_id: str | None = None,
                     provider: str | None = None, status: str | None = None,
                     visible: Iterable[str] | None = None) -> list[dict]:
    """The tenant's connection objects, oldest first, filtered; `visible` (a key's connection_ids)
    hides the rest. Only equality filters reach the store (no composite index needed)."""
    if status is not None and status not in STATUSES:
        raise InvalidRequestError(f"status: one of {', '.join(STATUSES)}", field="status")
    if provider is not None and provider not in PROVIDERS:
        raise InvalidRequestError("provider: google or microsoft", field="provider")
    where = [("tenant_id", "==", tenant_id)]
    if user_id is not None:
        where.append(("user_id", "==", user_id))
    if provider is not None:
        where.append(("provider", "==", provider))
    allowed = set(visible) if visible is not None else None
    now = clock.now()
    records = sorted(runtime.store.query(CONNECTIONS, where), key=lambda r: (r.get("created_ts", 0), r["id"]))
    views = [public_view(r, now) for r in records if allowed is None or r["id"] in allowed]
    return [v for v in views if status is None or v["status"] == status]


def save_connection(runtime: Runtime, *, tenant_id: str, user_id: str, provider: str, email: str,
                    tokens: "TokenSet", refresh_token: str | None = None, backfill_range: str = "30d",
                    start_watching: bool = True, shared_mailbox: str | None = None) -> tuple[dict, bool]:
    """Create the connection, or reconnect the existing one (same id, mail kept, error cleared, new
    tokens stored). Returns (record, created). `refresh_token` is used when `tokens` carries none.

    With `start_watching` a Google mailbox is watched (users.watch on GMAIL_PUBSUB_TOPIC) before the
    event is emitted; a watch failure is recorded, never raised (renew retries it).
    Raises ProviderError when no refresh token is known at all (the mailbox could not stay connected).
    Idempotent per mailbox: a repeated call updates the same record and emits no second event."""
    conn_id = connection_id_for(tenant_id, user_id, provider, email)
    cipher, now = runtime.cipher, clock.now()
    refresh = tokens.refresh_token or refresh_token
    token_fields = {"access_token": cipher.encrypt(tokens.access_token, conn_id),
                    "token_expires_ts": tokens.expires_at, "updated_ts": now, "error": None,
                    "disconnected_ts": None, "backfill_range": backfill_range, "start_watching": start_watching}
    if refresh:
        token_fields["refresh_token"] = cipher.encrypt(refresh, conn_id)
    if tokens.scopes is not None:
        token_fields["scopes"] = list(tokens.scopes)
    record = {"tenant_id": tenant_id, "user_id": user_id, "provider": provider, "email": email,
              "email_key": email.strip().lower(), "scopes": list(tokens.scopes or ()),
              "refresh_token": None, "token_version": 1, "created_ts": now, "last_sync_ts": None,
              "watch": None, "backfill": None, "shared_mailbox": shared_mailbox, **token_fields}
    if not refresh:
        existing = runtime.store.get(CONNECTIONS, conn_id)
        if existing is None or not existing.get("refresh_token"):
            raise ProviderError("Google granted no refresh token; the mailbox cannot stay connected")
    created = runtime.store.create(CONNECTIONS, conn_id, record)
    if created:
        stored, announce = {**record, "id": conn_id}, True
    else:
        previous = runtime.store.get(CONNECTIONS, conn_id) or {}
        announce = bool(previous.get("disconnected_ts"))   # back from `disconnected`
        token_fields["token_version"] = int(previous.get("token_version") or 0) + 1
        stored = runtime.store.update(CONNECTIONS, conn_id, token_fields)
    if start_watching and provider == "google":
        from mailbridge.core.renewal import watch_on_connect
        stored = watch_on_connect(runtime, stored)
    if announce:
        emit(runtime.store, runtime.bus, tenant_id=tenant_id, event_type="connection.created",
             data=public_view(stored), connection_id=conn_id,
             event_id=_event_id(conn_id, "created", stored.get("updated_ts")))
    return stored, created


def mark_reauth_required(runtime: Runtime, record: dict) -> dict:
    """Record a revoked/expired grant: status `error`, error.code `reauth_required`, and one
    `connection.error` event per transition (a connection already in that state emits nothing)."""
    previous = record.get("error") or {}
    if previous.get("code") == "reauth_required":
        return record
    now = clock.now()
    error = {"code": "reauth_required",
             "message": "the grant was revoked or has expired; connect the mailbox again", "at": now}
    stored = runtime.store.update(CONNECTIONS, record["id"], {"error": error, "updated_ts": now})
    emit(runtime.store, runtime.bus, tenant_id=stored["tenant_id"], event_type="connection.error",
         data=public_view(stored, now), connection_id=stored["id"],
         event_id=_event_id(stored["id"], "reauth", now))
    return stored


def import_connection(runtime: Runtime, *, tenant_id: str, provider: str, user_id: str, email: str,
                      refresh_token: str, start_watching: bool = True) -> dict:
    """`POST /v1/connections`: adopt a grant the customer obtained. One refresh proves the token
    (refused → 422 field refresh_token), the profile proves the address (another → 422 field email).
    Returns the stored record; reimporting the same mailbox updates the same connection."""
    from mailbridge.core.mailbox import profile_with_token
    from mailbridge.providers import google_auth

    if provider != "google":
        raise InvalidRequestError("provider: microsoft is not available yet", field="provider")
    secret = google_client_secret(runtime)
    try:
        tokens = google_auth.refresh(runtime.settings, secret, refresh_token)
    except (ReauthRequiredError, ProviderError) as exc:
        if exc.details.get("oauth_error") == "invalid_client":
            raise   # our own client id/secret is wrong: not the customer's token
        raise InvalidRequestError("refresh_token: Google refused this refresh token (revoked, expired, "
                                  "or issued to another OAuth client)", field="refresh_token") from None
    address = profile_with_token(runtime, provider, tokens.access_token)["email"]
    if address.strip().lower() != email.strip().lower():
        raise InvalidRequestError("email: the refresh token belongs to another mailbox", field="email")
    record, _ = save_connection(runtime, tenant_id=tenant_id, user_id=user_id, provider=provider,
                                email=address, tokens=tokens, refresh_token=refresh_token,
                                start_watching=start_watching)
    return record


def start_connect(runtime: Runtime, *, tenant_id: str, provider: str, user_id: str, redirect_url: str,
                  login_hint: str | None, backfill: str) -> dict:
    """`POST /v1/connect`: a state (with its PKCE verifier kept server-side) and the consent URL.
    Raises MailbridgeError (500) when Google sign-in is not configured."""
    from mailbridge.providers import google_auth

    if not runtime.settings.google_client_id:
        raise MailbridgeError("Google sign-in is not configured: set GOOGLE_CLIENT_ID")
    issued = oauth_state.issue(runtime, provider=provider, tenant_id=tenant_id, user_id=user_id,
                               redirect_url=redirect_url,
                               options={"backfill": backfill, "login_hint": login_hint})
    url = google_auth.authorization_url(runtime.settings, issued.token, issued.code_challenge, login_hint)
    return {"url": url, "state": issued.token, "expires_at": clock.rfc3339(issued.expires_at)}


def finish_connect(runtime: Runtime, state: dict, code: str) -> dict:
    """The callback's work once the state is redeemed: exchange the code (PKCE), read the address,
    store the connection (or reconnect it). Returns the record. ForbiddenError: the user withheld a
    required scope (the callback answers `access_denied`); any other MailbridgeError: `exchange_failed`."""
    from mailbridge.core.mailbox import profile_with_token
    from mailbridge.providers import google_auth

    if state["provider"] != "google":
        raise ConflictError(f"{state['provider']} mailboxes are not available yet")
    settings = runtime.settings
    tokens = google_auth.exchange_code(settings, google_client_secret(runtime), code, state["verifier"],
                                       google_auth.redirect_uri(settings))
    missing = sorted(set(settings.google_scopes) - set(tokens.scopes or settings.google_scopes))
    if missing:
        # Granular consent lets the user untick a scope; without it the mailbox would not work.
        raise ForbiddenError("the user did not grant every scope mailbridge needs",
                             details={"missing_scopes": missing})
    address = profile_with_token(runtime, "google", tokens.access_token, tokens.scopes)["email"]
    options = state.get("options") or {}
    record, _ = save_connection(runtime, tenant_id=state["tenant_id"], user_id=state["user_id"],
                                provider="google", email=address, tokens=tokens,
                                backfill_range=options.get("backfill") or "30d")
    return record


def disconnect(runtime: Runtime, record: dict) -> dict:
    """`DELETE /v1/connections/{id}`: stop the Gmail watch, revoke the Google grant, forget the tokens,
    keep the stored mail, set `disconnected_ts` (status `disconnected`) and emit `connection.deleted` once.
    Returns the stored record. Mailbox calls on it answer 409 conflict from then on.

    The watch and the grant belong to the Google account, not to us: when another live connection
    (another tenant or user) holds the same mailbox, neither is touched — only this record's tokens are
    forgotten. users.stop is best effort (an unstopped watch dies within 7 days, and pushes for
    disconnected connections are ignored); a failed revoke raises (ProviderUnavailableError → 503) with
    nothing changed, so the caller retries. Idempotent: disconnecting again changes nothing and emits
    nothing new (it only finishes a `connection.deleted` whose fan-out had failed)."""
    from mailbridge.core.renewal import stop_watch
    from mailbridge.providers import google_auth

    if record.get("disconnected_ts"):
        _announce_deleted(runtime, record)
        return record
    shared = record.get("provider") == "google" and _mailbox_shared(runtime, record)
    if record.get("provider") == "google" and not shared:
        stop_watch(runtime, record)
        if record.get("refresh_token"):
            google_auth.revoke(runtime.settings, runtime.cipher.decrypt(record["refresh_token"], record["id"]))
    now = clock.now()
    current = runtime.store.get(CONNECTIONS, record["id"]) or record
    forgotten = {**current, "access_token": None, "refresh_token": None, "token_expires_ts": None,
                 "watch": None, "error": None, "disconnected_ts": now, "updated_ts": now}
    # Compare-and-set on `disconnected_ts`: of two racing DELETEs exactly one writes and announces.
    if not runtime.store.compare_and_set(CONNECTIONS, record["id"], "disconnected_ts", None, forgotten):
        return get_connection(runtime, record["id"])
    stored = {**forgotten, "id": record["id"]}
    _announce_deleted(runtime, stored)
    return stored


def google_client_secret(runtime: Runtime) -> str:
    """The `google-client-secret` secret; a clear (secret-free) 500 when sign-in is not configured."""
    secret = runtime.secrets.get(GOOGLE_CLIENT_SECRET)
    if not runtime.settings.google_client_id or not secret:
        raise MailbridgeError("Google sign-in is not configured: set GOOGLE_CLIENT_ID and the "
                              "google-client-secret secret")
    return secret.strip()


def _event_id(conn_id: str, what: str, stamp) -> str:
    # Deterministic per (connection, transition): a retried call records and publishes nothing new.
    return "evt_" + hashlib.sha256(f"{conn_id}:{what}:{stamp}".encode()).hexdigest()[:24]


def _mailbox_shared(runtime: Runtime, record: dict) -> bool:
    """Another live Google connection of the same address (the same Google grant and watch)."""
    key = record.get("email_key") or record["email"].strip().lower()
    return any(other["id"] != record["id"] and other.get("provider") == "google"
               and not other.get("disconnected_ts")
               for other in runtime.store.query(CONNECTIONS, [("email_key", "==", key)]))


def _announce_deleted(runtime: Runtime, record: dict) -> None:
    emit(runtime.store, runtime.bus, tenant_id=record["tenant_id"], event_type="connection.deleted",
         data=public_view(record), connection_id=record["id"],
         event_id=_event_id(record["id"], "deleted", record.get("disconnected_ts")))
