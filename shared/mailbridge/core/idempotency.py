"""`Idempotency-Key` (API.md section 6): per tenant, 24 h, the first answer replayed, nothing sent twice.

One IDEMPOTENCY document per (tenant, key), id = SHA-256 of both (keys may hold characters document
ids may not), created-if-absent as "pending" with a hash of the request and a random claim token:

    pending  → another request with the key is running: 409 conflict, nothing sent
    done     → same request hash: its stored answer (status + body); another hash: 409 conflict
    released → the first attempt failed; the next request with the key claims it anew

Every later write is a compare-and-set on the claim token, so a request that lost its claim (a
pending record older than PENDING_TIMEOUT is presumed abandoned by a crashed instance and taken
over) can never overwrite the new owner's record.
"""
from __future__ import annotations

import hashlib
import json
import secrets as pysecrets
from dataclasses import dataclass

from mailbridge import clock
from mailbridge.errors import ConflictError, InvalidRequestError
from mailbridge.store.base import IDEMPOTENCY, Store

HEADER = "Idempotency-Key"
TTL = 24 * 3600
MAX_KEY_LENGTH = 256
PENDING_TIMEOUT = 15 * 60   # longer than any send can run (60 s upstream timeout, a few retries)
_ATTEMPTS = 5


@dataclass(frozen=True)
class Claim:
    """This request owns the key: call `complete` with its answer, or `release` on failure."""
    doc_id: str
    token: str
    record: dict
    expires_at: float


@dataclass(frozen=True)
class Replay:
    """The key was already used for the same request: answer this, send nothing."""
    status: int
    body: object


def check_key(value: str | None) -> str | None:
    """The header's value, or None when absent; 1-256 printable ASCII characters, else 422 naming it."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in value) or not value.strip():
        raise InvalidRequestError(f"{HEADER}: 1-{MAX_KEY_LENGTH} printable ASCII characters",
                                  field=HEADER, details={"header": HEADER})
    return value


def request_hash(method: str, path: str, body: bytes) -> str:
    """SHA-256 of the request; a JSON body is canonicalised first (key order and spacing do not count)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    digest = hashlib.sha256(f"{method.upper()}\n{path}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


def _doc_id(tenant_id: str, key: str) -> str:
    return "idem_" + hashlib.sha256(json.dumps([tenant_id, key]).encode()).hexdigest()


def begin(store: Store, tenant_id: str, key: str, fingerprint: str) -> Claim | Replay:
    """Claim the key for this request, or the stored answer of the same earlier request.

    Raises ConflictError when the key was used with another request (method, path or body), or while
    the first request with it is still running."""
    doc_id = _doc_id(tenant_id, key)
    for _ in range(_ATTEMPTS):
        now = clock.now()
        token = pysecrets.token_hex(16)
        record = {"tenant_id": tenant_id, "request_hash": fingerprint, "state": "pending", "claim": token,
                  "started_ts": now, "status": None, "body": None}
        expires = now + TTL
        if store.create(IDEMPOTENCY, doc_id, record, expires_at=expires):
            return Claim(doc_id, token, record, expires)
        existing = store.get(IDEMPOTENCY, doc_id)
        if existing is None:
            continue  # expired or deleted between the two calls: try to create again
        state = existing.get("state")
        abandoned = state == "pending" and now - float(existing.get("started_ts") or 0) > PENDING_TIMEOUT
        if state == "released" or abandoned:
            if store.compare_and_set(IDEMPOTENCY, doc_id, "claim", existing.get("claim"), record,
                                     expires_at=expires):
                return Claim(doc_id, token, record, expires)
            continue
        if existing.get("request_hash") != fingerprint:
            raise ConflictError(f"{HEADER}: this key was already used with a different request",
                                details={"header": HEADER})
        if state == "pending":
            raise ConflictError(f"{HEADER}: a request with this key is still being processed; retry later",
                                details={"header": HEADER})
        return Replay(int(existing.get("status") or 200), existing.get("body"))
    raise ConflictError(f"{HEADER}: this key is being claimed by concurrent requests; retry later",
                        details={"header": HEADER})


def complete(store: Store, claim: Claim, status: int, body: object) -> None:
    """Store the answer to replay for the rest of the 24 h (a lost claim stores nothing)."""
    store.compare_and_set(IDEMPOTENCY, claim.doc_id, "claim", claim.token,
                          {**claim.record, "state": "done", "status": status, "body": body,
                           "completed_ts": clock.now()}, expires_at=claim.expires_at)


def release(store: Store, claim: Claim) -> None:
    """The request failed: let the next request with the key run (idempotent)."""
    store.compare_and_set(IDEMPOTENCY, claim.doc_id, "claim", claim.token,
                          {**claim.record, "state": "released"}, expires_at=claim.expires_at)
