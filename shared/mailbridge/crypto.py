"""Tokens at rest: AES-256-GCM bound to the owning record's id, with a key id inside so keys can rotate."""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from typing import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailbridge.errors import PermanentError

FORMAT_VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12  # 96 bits: GCM's native nonce size; random per encryption
TAG_BYTES = 16
_KID_RE = re.compile(r"^[0-9a-f]{8}$")


class DecryptionError(PermanentError):
    """A stored token could not be decrypted: tampered, malformed, wrong record, or key no longer configured.

    The message names what failed, never the key, the token or the plaintext.
    """

    code = "internal_error"
    status = 500


def generate_key() -> str:
    """A fresh key for MAILBRIDGE_ENCRYPTION_KEY (secret `token-encryption-key`): base64 of 32 random bytes."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def key_id(key: bytes) -> str:
    """The key id written into every token: first 8 hex characters of sha256(key) (identifies, never reveals)."""
    return hashlib.sha256(key).hexdigest()[:8]


class TokenCipher:
    """Encrypts with the first key; decrypts with any key whose id the token names (rotation).

    Text format: `v1.<kid>.<urlsafe base64, unpadded, of nonce + ciphertext + tag>`. The associated data
    (the owning record's id) is not stored: a token copied onto another record fails to decrypt.
    Thread-safe: AESGCM objects are stateless per call.
    """

    def __init__(self, keys: Sequence[bytes]):
        """Raises ValueError when no key is given, a key is not 32 bytes, or two keys share a key id."""
        if not keys:
            raise ValueError("no token encryption key configured")
        self._by_kid: dict[str, AESGCM] = {}
        for index, key in enumerate(keys, start=1):
            if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
                raise ValueError(f"token encryption key #{index} must be {KEY_BYTES} bytes")
            kid = key_id(bytes(key))
            if kid in self._by_kid:
                continue  # the same key listed twice; a real 32-bit id collision is not worth a branch
            self._by_kid[kid] = AESGCM(bytes(key))
        self._primary_kid = key_id(bytes(keys[0]))
        self._primary = self._by_kid[self._primary_kid]

    @classmethod
    def from_secret(cls, value: str) -> "TokenCipher":
        """Build from the secret's text: standard-base64 32-byte keys separated by commas, newest first.

        Whitespace around each key (a trailing newline from `gcloud secrets create`) is ignored.
        Raises ValueError naming the key's position, never its value.
        """
        parts = [part.strip() for part in (value or "").split(",")]
        parts = [part for part in parts if part]
        if not parts:
            raise ValueError("no token encryption key configured")
        keys = []
        for index, part in enumerate(parts, start=1):
            try:
                key = base64.b64decode(part, validate=True)
            except (binascii.Error, ValueError):
                # `from None`: the decoder's own message is not ours to vouch for.
                raise ValueError(f"token encryption key #{index} is not standard base64") from None
            if len(key) != KEY_BYTES:
                raise ValueError(f"token encryption key #{index} must decode to {KEY_BYTES} bytes, "
                                 f"got {len(key)}")
            keys.append(key)
        return cls(keys)

    @property
    def key_id(self) -> str:
        """The id of the key new tokens are encrypted under."""
        return self._primary_kid

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id this cipher can decrypt, primary first."""
        return tuple(self._by_kid)

    def __repr__(self) -> str:
        return f"TokenCipher(key_ids={list(self._by_kid)!r})"

    def encrypt(self, plaintext: str, aad: str) -> str:
        """Encrypt `plaintext` bound to `aad` (the owning record's id) under the primary key.

        Never deterministic (random nonce), so equal tokens never give equal ciphertexts.
        Raises ValueError when either argument is not encodable as UTF-8.
        """
        data = _utf8(plaintext, "plaintext")
        associated = _utf8(aad, "associated data")
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._primary.encrypt(nonce, data, associated)
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{FORMAT_VERSION}.{self._primary_kid}.{body}"

    def decrypt(self, token: str, aad: str) -> str:
        """Decrypt a token made by `encrypt` with the same `aad`.

        Raises DecryptionError on anything wrong: malformed text, unknown version or key id, a changed byte,
        or another record's id as `aad`.
        """
        kid, blob = self._parse(token)
        cipher = self._by_kid.get(kid)
        if cipher is None:
            raise DecryptionError(f"token was encrypted under key id {kid}, which is not configured")
        try:
            associated = _utf8(aad, "associated data")
        except ValueError:
            raise DecryptionError("token associated data is not valid text") from None
        try:
            data = cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated)
        except InvalidTag:
            raise DecryptionError("token failed authentication (altered, or bound to another record)") from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("token plaintext is not UTF-8") from None

    def needs_reencryption(self, token: str) -> bool:
        """True when `token` is not under the primary key: re-encrypt it after a successful decrypt.

        Raises DecryptionError when the token is malformed.
        """
        kid, _ = self._parse(token)
        return kid != self._primary_kid

    @staticmethod
    def _parse(token: str) -> tuple[str, bytes]:
        """Split and decode a token's text; strict, so that no two texts decode to the same bytes."""
        if not isinstance(token, str):
            raise DecryptionError("token is not text")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != FORMAT_VERSION:
            raise DecryptionError("token is not in the v1 format")
        kid, body = parts[1], parts[2]
        if not _KID_RE.match(kid):
            raise DecryptionError("token key id is malformed")
        try:
            raw = body.encode("ascii")
            blob = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
        except (UnicodeEncodeError, binascii.Error, ValueError):
            raise DecryptionError("token body is not urlsafe base64") from None
        # Reject non-canonical text (spare bits set in the last character, padding, stray characters):
        # otherwise a changed character could decode to the very same bytes and pass authentication.
        if base64.urlsafe_b64encode(blob).rstrip(b"=") != raw:
            raise DecryptionError("token body is not canonical base64")
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("token is too short")
        return kid, blob


def _utf8(text: str, what: str) -> bytes:
    """UTF-8 bytes of `text`; ValueError (without the text) when it is not a str or holds lone surrogates."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be str")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not encodable as UTF-8") from None
