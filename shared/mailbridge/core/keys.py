"""Tenants and API keys: created, looked up by hash, listed, revoked (API.md section 2).

A key is `mbk_` + 43 URL-safe base64 characters (256 random bits). Only its SHA-256 is stored. The
key's public id is derived from that hash (`key_` + its first 20 hex digits), so authenticating a
request is one document read, followed by a constant-time comparison of the whole hash.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets as pysecrets

from mailbridge import clock
from mailbridge.core.permissions import Permissions
from mailbridge.errors import ForbiddenError, InvalidRequestError, NotFoundError
from mailbridge.store.base import API_KEYS, TENANTS, Store

KEY_PREFIX = "mbk_"
KEY_LENGTH = len(KEY_PREFIX) + 43


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_for(key: str) -> str:
    return "key_" + _hash(key)[:20]


def looks_like_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and len(key) == KEY_LENGTH


def public_view(record: dict) -> dict:
    """The API's key object (no hash, no key)."""
    return {"id": record["id"], "name": record["name"], "tenant_id": record["tenant_id"],
            "permissions": record.get("permissions"), "expires_at": clock.rfc3339(record.get("expires_ts")),
            "created_at": clock.rfc3339(record["created_ts"])}


def ensure_tenant(store: Store, tenant_id: str) -> None:
    """Create the tenant if it is new (idempotent)."""
    if not tenant_id or len(tenant_id) > 128 or any(c in tenant_id for c in "/\r\n"):
        raise InvalidRequestError("tenant_id: 1-128 characters, no '/' or line breaks", field="tenant_id")
    store.create(TENANTS, tenant_id, {"created_ts": clock.now()})


def create_api_key(store: Store, *, tenant_id: str, name: str, permissions: Permissions | None = None,
                   expires_in: int | None = None) -> dict:
    """Create a key for an existing or new tenant; returns the public view plus `key` (shown once)."""
    ensure_tenant(store, tenant_id)
    key = KEY_PREFIX + pysecrets.token_urlsafe(32)
    now = clock.now()
    record = {"tenant_id": tenant_id, "name": name, "key_hash": _hash(key),
              "permissions": permissions.model_dump(exclude_none=True) if permissions else None,
              "expires_ts": now + expires_in if expires_in else None, "created_ts": now}
    stored = store.put(API_KEYS, key_id_for(key), record)
    return {**public_view(stored), "key": key}


def find_live_key(store: Store, key: str) -> dict | None:
    """The stored record of a presented key if it exists, matches and has not expired; else None."""
    if not looks_like_key(key):
        return None
    record = store.get(API_KEYS, key_id_for(key))
    if record is None or not hmac.compare_digest(record.get("key_hash", ""), _hash(key)):
        return None
    expires = record.get("expires_ts")
    if expires is not None and expires <= clock.now():
        return None
    return record


def list_api_keys(store: Store, tenant_id: str) -> list[dict]:
    records = store.query(API_KEYS, [("tenant_id", "==", tenant_id)], order_by="created_ts")
    return [public_view(r) for r in records]


def revoke_api_key(store: Store, *, key_id: str, tenant_id: str | None) -> None:
    """Delete a key at once. `tenant_id` None (the admin key) may revoke any tenant's key;
    another tenant's key is not found."""
    record = store.get(API_KEYS, key_id)
    if record is None or (tenant_id is not None and record["tenant_id"] != tenant_id):
        raise NotFoundError(f"api key {key_id} not found")
    store.delete(API_KEYS, key_id)


def check_tenant_access(caller_tenant: str | None, requested: str | None) -> str:
    """Which tenant a key-management call acts on: the admin key must name one; a tenant key acts on
    its own, and naming another is forbidden."""
    if caller_tenant is None:
        if not requested:
            raise InvalidRequestError("tenant_id: required with the admin key", field="tenant_id")
        return requested
    if requested and requested != caller_tenant:
        raise ForbiddenError("a tenant key cannot manage another tenant's keys")
    return caller_tenant
