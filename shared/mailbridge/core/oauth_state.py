"""OAuth `state`: signed, single-use, 10 minutes, bound to one provider, with the PKCE verifier kept server-side.

The state handed to the browser is `<payload>.<signature>` (unpadded base64url of each). The payload is
compact JSON `{"s": state id, "p": provider, "r": redirect_url, "e": expiry}`, signed with HMAC-SHA256
under a key derived (HKDF-SHA256, info "oauth-state") from the token-encryption key. Because the
redirect URL travels signed, the callback can still send the browser back to the customer when the
stored half is gone (expired or already used). The stored half (OAUTH_STATES, id = state id, taken
exactly once) holds what the browser must never see: the PKCE verifier (encrypted, AAD = the state id)
and the tenant, user and connect options.

Verdicts of `redeem`:
- forged, malformed, unknown key      → InvalidRequestError 400 (no redirect: nothing to trust);
- signed for the other provider       → InvalidRequestError 400, the state is left untouched;
- expired (signed expiry or record)   → StateRejectedError("expired_state"), redirect allowed;
- already used                        → StateRejectedError("invalid_state"), redirect allowed.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets as pysecrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mailbridge import clock
from mailbridge.errors import InvalidRequestError
from mailbridge.runtime import Runtime
from mailbridge.store.base import OAUTH_STATES

STATE_LIFETIME = 600          # seconds: API.md section 4
HKDF_INFO = b"oauth-state"
MAX_STATE_LENGTH = 4096       # the redirect URL (≤ 2000) dominates


class StateRejectedError(InvalidRequestError):
    """An authentic state that cannot be used (expired or already used); the callback redirects to
    `redirect_url` with `error=<code>` instead of answering with the envelope."""

    def __init__(self, error: str, redirect_url: str):
        super().__init__(f"state rejected: {error}", field="state", status=400)
        self.error = error
        self.redirect_url = redirect_url


@dataclass(frozen=True)
class IssuedState:
    token: str                 # the `state` parameter
    code_challenge: str        # PKCE S256 challenge for the authorize URL
    expires_at: float


def issue(runtime: Runtime, *, provider: str, tenant_id: str, user_id: str, redirect_url: str,
          options: dict | None = None) -> IssuedState:
    """Create a state for one sign-in: store its secret half, return the signed token and the PKCE
    challenge. `options` (backfill, login_hint, shared_mailbox…) come back from `redeem`."""
    state_id = pysecrets.token_urlsafe(24)
    verifier = pysecrets.token_urlsafe(64)   # 86 chars of [A-Za-z0-9_-]: RFC 7636 allows 43-128
    expires = clock.now() + STATE_LIFETIME
    record = {"provider": provider, "tenant_id": tenant_id, "user_id": user_id, "redirect_url": redirect_url,
              "options": dict(options or {}), "verifier": runtime.cipher.encrypt(verifier, state_id),
              "created_ts": clock.now(), "expires_ts": expires}
    runtime.store.put(OAUTH_STATES, state_id, record, expires_at=expires)
    payload = {"s": state_id, "p": provider, "r": redirect_url, "e": int(expires)}
    return IssuedState(token=sign(_keys(runtime)[0], payload), code_challenge=pkce_challenge(verifier),
                       expires_at=expires)


def redeem(runtime: Runtime, token: str | None, provider: str) -> dict:
    """Consume a state at the `provider` callback: the stored record plus `verifier` (decrypted).

    Single use: of concurrent redemptions exactly one succeeds. Raises as the module docstring says."""
    payload = verify(_keys(runtime), token)
    if payload is None:
        raise InvalidRequestError("state: unknown or forged; start the connection again", field="state",
                                  status=400)
    if payload["p"] != provider:
        # Mix-up defence (RFC 9700): a state is only ever redeemed at its own provider's callback.
        raise InvalidRequestError(f"state: issued for another provider, not {provider}", field="state",
                                  status=400)
    now = clock.now()
    record = runtime.store.take(OAUTH_STATES, payload["s"])
    if record is None:
        raise StateRejectedError("expired_state" if payload["e"] <= now else "invalid_state", payload["r"])
    if record.get("expires_ts", 0) <= now:
        raise StateRejectedError("expired_state", payload["r"])
    if record.get("provider") != provider or record.get("redirect_url") != payload["r"]:
        raise InvalidRequestError("state: does not match its record", field="state", status=400)
    record["verifier"] = runtime.cipher.decrypt(record["verifier"], payload["s"])
    return record


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: unpadded base64url of SHA-256 of the verifier."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


# ---- signing (pure functions, unit-tested) -------------------------------------------------------

def derive_key(encryption_key: bytes) -> bytes:
    """The state-signing key: HKDF-SHA256(token-encryption key, info "oauth-state"), 32 bytes.
    A separate key, so that a signature never doubles as anything the cipher accepts."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(encryption_key)


def sign(key: bytes, payload: dict) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return body + "." + _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())


def verify(keys: list[bytes], token: str | None) -> dict | None:
    """The payload if `token` is signed by one of `keys` (rotation: any configured key) and well formed;
    None otherwise. Constant-time comparison of the signature."""
    if not isinstance(token, str) or len(token) > MAX_STATE_LENGTH or token.count(".") != 1:
        return None
    body, sig = token.split(".")
    try:
        given = _unb64(sig)
    except ValueError:
        return None
    if not any(hmac.compare_digest(hmac.new(k, body.encode("ascii", "replace"), hashlib.sha256).digest(), given)
               for k in keys):
        return None
    try:
        payload = json.loads(_unb64(body))
    except ValueError:
        return None
    if (not isinstance(payload, dict) or not all(isinstance(payload.get(f), str) for f in ("s", "p", "r"))
            or not isinstance(payload.get("e"), int)):
        return None
    return payload


def _keys(runtime: Runtime) -> list[bytes]:
    """Signing keys derived from every configured encryption key, primary first."""
    value = runtime.secrets.get("token-encryption-key") or ""
    raw = []
    for part in (p.strip() for p in value.split(",")):
        if part:
            try:
                raw.append(base64.b64decode(part, validate=True))
            except (binascii.Error, ValueError):
                continue   # the cipher reports a malformed key; here it just signs nothing
    if not raw:
        raise RuntimeError("token-encryption-key is not set (MAILBRIDGE_ENCRYPTION_KEY locally)")
    return [derive_key(k) for k in raw]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        raw = text.encode("ascii")
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("not base64url") from exc
