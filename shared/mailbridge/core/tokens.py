"""Access tokens of a connection: decrypt, refresh once per connection under a store lease, persist rotation.

Many requests (threads of one instance, or several instances) may find a connection's token expired at
the same moment. One of them takes the lease (create-if-absent on LEASES, short TTL, so a crashed
holder frees it by itself) and refreshes; the others poll the record, bounded, until its
`token_version` moves, and use the new token. Google is asked once, not N times.
"""
from __future__ import annotations

import logging
import secrets as pysecrets
import time
from typing import Callable

from mailbridge import clock
from mailbridge.core.connections import get_connection, google_client_secret, mark_reauth_required
from mailbridge.errors import ConflictError, ProviderUnavailableError, ReauthRequiredError
from mailbridge.runtime import Runtime
from mailbridge.store.base import CONNECTIONS, LEASES

log = logging.getLogger("mailbridge.tokens")

MIN_VALIDITY = 60          # seconds a token must still be valid to be handed out
LEASE_TTL = 30             # seconds: longer than a refresh with google-auth's own retries
WAIT_LIMIT = 20.0          # seconds a request waits for another's refresh before giving up (503)
POLL_START, POLL_MAX = 0.02, 0.25


def access_token_for(runtime: Runtime, connection_id: str, *, force: bool = False) -> str:
    """A valid access token (≥ 60 s left) for the connection; `force` refreshes even if the current
    one looks valid (the provider answered 401), unless another request refreshed meanwhile.

    Raises NotFoundError (no such connection), ConflictError (disconnected), ReauthRequiredError (grant
    revoked: the connection is marked `error`/`reauth_required` and one `connection.error` emitted),
    ProviderUnavailableError (Google down, or another request's refresh did not finish in time)."""
    record = get_connection(runtime, connection_id)
    _check_usable(record)
    if not force and _valid(record):
        return _decrypt(runtime, record, "access_token")
    seen = record.get("token_version")
    deadline = time.monotonic() + WAIT_LIMIT
    pause = POLL_START
    while True:
        owner = pysecrets.token_hex(8)
        if runtime.store.create(LEASES, _lease_id(connection_id), {"owner": owner},
                                expires_at=clock.now() + LEASE_TTL):
            try:
                return _refresh_as_holder(runtime, connection_id, seen, force)
            finally:
                _release(runtime, connection_id, owner)
        if time.monotonic() >= deadline:
            raise ProviderUnavailableError("a token refresh for this connection is still running; retry",
                                           retry_after=1)
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX)
        record = get_connection(runtime, connection_id)
        _check_usable(record)
        if record.get("token_version") != seen and _valid(record):
            return _decrypt(runtime, record, "access_token")


def token_source(runtime: Runtime, connection_id: str) -> Callable[..., str]:
    """The `access_token(force=False) -> str` callable a provider adapter takes."""
    def access_token(force: bool = False) -> str:
        return access_token_for(runtime, connection_id, force=force)
    return access_token


def refresh_now(runtime: Runtime, connection_id: str) -> float:
    """Force a refresh (`POST /v1/connections/{id}/refresh`); returns the new token's expiry."""
    access_token_for(runtime, connection_id, force=True)
    return get_connection(runtime, connection_id)["token_expires_ts"]


def _refresh_as_holder(runtime: Runtime, connection_id: str, seen, force: bool) -> str:
    from mailbridge.providers import google_auth

    record = get_connection(runtime, connection_id)   # fresh: the previous holder may have just finished
    _check_usable(record)
    if record.get("token_version") != seen and _valid(record):
        return _decrypt(runtime, record, "access_token")
    if not force and _valid(record):
        return _decrypt(runtime, record, "access_token")
    if record["provider"] != "google":
        raise ConflictError(f"{record['provider']} connections are not available yet")
    refresh_token = _decrypt(runtime, record, "refresh_token")
    try:
        tokens = google_auth.refresh(runtime.settings, google_client_secret(runtime), refresh_token)
    except ReauthRequiredError:
        mark_reauth_required(runtime, record)
        raise
    cipher = runtime.cipher
    changes = {"access_token": cipher.encrypt(tokens.access_token, connection_id),
               "token_expires_ts": tokens.expires_at, "updated_ts": clock.now(),
               "token_version": int(record.get("token_version") or 0) + 1}
    # A rotated refresh token is the only one that works from now on: persist it with the access token
    # in the same write. Re-encrypt an unrotated one only when it is under a retired key.
    if tokens.refresh_token:
        changes["refresh_token"] = cipher.encrypt(tokens.refresh_token, connection_id)
    elif cipher.needs_reencryption(record["refresh_token"]):
        changes["refresh_token"] = cipher.encrypt(refresh_token, connection_id)
    runtime.store.update(CONNECTIONS, connection_id, changes)
    log.info("refreshed the access token of %s", connection_id)
    return tokens.access_token


def _check_usable(record: dict) -> None:
    if record.get("disconnected_ts"):
        raise ConflictError(f"connection {record['id']} is disconnected; connect the mailbox again")
    if (record.get("error") or {}).get("code") == "reauth_required":
        # Revoked grants stay revoked until the mailbox is reconnected: don't ask Google again.
        raise ReauthRequiredError("the grant was revoked or has expired; connect the mailbox again",
                                  details={"connection_id": record["id"]})
    if not record.get("refresh_token"):
        raise ConflictError(f"connection {record['id']} holds no tokens; connect the mailbox again")


def _valid(record: dict) -> bool:
    expires = record.get("token_expires_ts")
    return bool(record.get("access_token")) and expires is not None and expires - clock.now() >= MIN_VALIDITY


def _decrypt(runtime: Runtime, record: dict, field: str) -> str:
    return runtime.cipher.decrypt(record[field], record["id"])


def _lease_id(connection_id: str) -> str:
    return f"token-refresh:{connection_id}"


def _release(runtime: Runtime, connection_id: str, owner: str) -> None:
    # Only the holder releases: past its TTL the lease may already be someone else's.
    try:
        lease = runtime.store.get(LEASES, _lease_id(connection_id))
        if lease is not None and lease.get("owner") == owner:
            runtime.store.delete(LEASES, _lease_id(connection_id))
    except Exception:   # the TTL frees it anyway; never mask the refresh's own outcome
        log.warning("could not release the token lease of %s", connection_id, exc_info=True)
