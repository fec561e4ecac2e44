"""TokenCipher: AES-256-GCM round trips, tamper and wrong-record rejection, key rotation, safe key errors."""
from __future__ import annotations

import base64
import hashlib

import pytest

from mailbridge.crypto import DecryptionError, TokenCipher, generate_key
from mailbridge.errors import MailbridgeError, PermanentError

REFRESH_TOKEN = "1//0gRefreshTokenValue-abcdefghijklmnopqrstuvwxyz0123456789"
CONN_ID = "conn_01HZX3K9Q4"


def _kid(b64_key: str) -> str:
    return hashlib.sha256(base64.b64decode(b64_key)).hexdigest()[:8]


def _sealed(token: str) -> bytes:
    body = token.split(".")[2]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


@pytest.fixture
def key() -> str:
    return generate_key()


@pytest.fixture
def cipher(key: str) -> TokenCipher:
    return TokenCipher.from_secret(key)


def test_generate_key_is_base64_of_32_random_bytes():
    first, second = generate_key(), generate_key()
    assert len(base64.b64decode(first, validate=True)) == 32
    assert first != second


@pytest.mark.parametrize("plaintext", [
    REFRESH_TOKEN,
    "",
    "ünïcødé — 日本語 — emoji 📬 — \x00 nul",
    "x" * 10_000,
])
def test_round_trip_returns_the_plaintext(cipher, plaintext):
    token = cipher.encrypt(plaintext, CONN_ID)
    assert cipher.decrypt(token, CONN_ID) == plaintext


def test_token_text_format_is_v1_kid_urlsafe_body(cipher, key):
    token = cipher.encrypt(REFRESH_TOKEN, CONN_ID)
    version, kid, body = token.split(".")
    assert version == "v1"
    assert kid == _kid(key) == cipher.key_id
    assert "=" not in body
    blob = _sealed(token)
    # 12-byte nonce + ciphertext (same length as the plaintext) + 16-byte tag
    assert len(blob) == 12 + len(REFRESH_TOKEN.encode()) + 16
    assert REFRESH_TOKEN not in token


def test_two_encryptions_of_the_same_text_differ(cipher):
    first = cipher.encrypt(REFRESH_TOKEN, CONN_ID)
    second = cipher.encrypt(REFRESH_TOKEN, CONN_ID)
    assert first != second
    assert _sealed(first)[:12] != _sealed(second)[:12]
    assert cipher.decrypt(first, CONN_ID) == cipher.decrypt(second, CONN_ID) == REFRESH_TOKEN


def test_changing_any_character_of_the_token_is_rejected(cipher):
    # Short plaintext so the body's last character carries spare bits: a lenient decoder would accept
    # a change there. Every position, every other character of the alphabet.
    token = cipher.encrypt("tok", CONN_ID)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    rejected = 0
    for position, original in enumerate(token):
        for replacement in alphabet:
            if replacement == original:
                continue
            tampered = token[:position] + replacement + token[position + 1:]
            with pytest.raises(DecryptionError):
                cipher.decrypt(tampered, CONN_ID)
            rejected += 1
    assert rejected == sum(len(alphabet) - (c in alphabet) for c in token)


def test_flipping_any_bit_of_the_sealed_bytes_is_rejected(cipher):
    token = cipher.encrypt(REFRESH_TOKEN, CONN_ID)
    head = token.rsplit(".", 1)[0]
    blob = _sealed(token)
    for index in range(len(blob)):
        for bit in (0x01, 0x80):
            changed = bytearray(blob)
            changed[index] ^= bit
            text = base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode()
            with pytest.raises(DecryptionError):
                cipher.decrypt(f"{head}.{text}", CONN_ID)


def test_truncated_or_extended_token_is_rejected(cipher):
    token = cipher.encrypt(REFRESH_TOKEN, CONN_ID)
    for bad in (token[:-1], token[:-4], token + "A", token + "AAAA", token + "=", token + "."):
        with pytest.raises(DecryptionError):
            cipher.decrypt(bad, CONN_ID)


def test_wrong_aad_is_rejected(cipher):
    token = cipher.encrypt(REFRESH_TOKEN, CONN_ID)
    for other in ("conn_other", "", CONN_ID + " ", CONN_ID.upper()):
        with pytest.raises(DecryptionError) as caught:
            cipher.decrypt(token, other)
        assert REFRESH_TOKEN not in str(caught.value)


@pytest.mark.parametrize("malformed", [
    "",
    "v1",
    "v1..",
    "v2.abcdef01.AAAA",
    "v1.ABCDEF01.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "v1.abcdef0.AAAA",
    "v1.abcdef01.AAAA",              # too short for nonce + tag
    "v1.abcdef01.!!!!",
    "v1.abcdef01.AAAA.AAAA",
    "not a token at all",
])
def test_malformed_tokens_raise_decryption_error(cipher, malformed):
    with pytest.raises(DecryptionError):
        cipher.decrypt(malformed, CONN_ID)


def test_non_text_token_raises_decryption_error(cipher):
    with pytest.raises(DecryptionError):
        cipher.decrypt(b"v1.abcdef01.AAAA", CONN_ID)  # type: ignore[arg-type]


def test_unknown_kid_is_rejected_and_named_without_key_material(key):
    token = TokenCipher.from_secret(key).encrypt(REFRESH_TOKEN, CONN_ID)
    other_key = generate_key()
    with pytest.raises(DecryptionError) as caught:
        TokenCipher.from_secret(other_key).decrypt(token, CONN_ID)
    message = str(caught.value)
    assert _kid(key) in message
    for secret in (key, other_key, REFRESH_TOKEN):
        assert secret not in message


def test_a_token_relabelled_with_another_configured_kid_is_rejected():
    old, new = generate_key(), generate_key()
    cipher = TokenCipher.from_secret(f"{new},{old}")
    token = cipher.encrypt(REFRESH_TOKEN, CONN_ID)
    relabelled = token.replace(_kid(new), _kid(old), 1)
    with pytest.raises(DecryptionError):
        cipher.decrypt(relabelled, CONN_ID)


def test_rotation_old_tokens_still_decrypt_and_reencryption_uses_new_kid():
    old, new = generate_key(), generate_key()
    token_under_old = TokenCipher.from_secret(old).encrypt(REFRESH_TOKEN, CONN_ID)

    rotated = TokenCipher.from_secret(f"{new}, {old}\n")
    assert rotated.key_id == _kid(new)
    assert rotated.key_ids == (_kid(new), _kid(old))
    assert rotated.needs_reencryption(token_under_old)
    assert rotated.decrypt(token_under_old, CONN_ID) == REFRESH_TOKEN

    reencrypted = rotated.encrypt(rotated.decrypt(token_under_old, CONN_ID), CONN_ID)
    assert reencrypted.split(".")[1] == _kid(new)
    assert not rotated.needs_reencryption(reencrypted)
    # Once the old key is dropped, only the re-encrypted token still opens.
    new_only = TokenCipher.from_secret(new)
    assert new_only.decrypt(reencrypted, CONN_ID) == REFRESH_TOKEN
    with pytest.raises(DecryptionError):
        new_only.decrypt(token_under_old, CONN_ID)


def test_decryption_error_is_a_permanent_internal_error():
    err = DecryptionError("x")
    assert isinstance(err, PermanentError) and isinstance(err, MailbridgeError)
    assert (err.code, err.status) == ("internal_error", 500)


def test_decryption_error_does_not_chain_library_exceptions(cipher):
    token = cipher.encrypt(REFRESH_TOKEN, CONN_ID)
    with pytest.raises(DecryptionError) as caught:
        cipher.decrypt(token, "another record")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("make_bad", [
    lambda k: k[:-4],                                   # 24 bytes of key: valid base64, wrong length
    lambda k: k + base64.b64encode(b"\x00" * 3).decode(),  # 35 bytes
    lambda k: k.replace("=", "") + "!",                  # not base64 at all
    lambda k: base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),  # urlsafe alphabet, not standard
    lambda k: k[:10] + " " + k[10:],                     # whitespace inside a key
])
def test_bad_key_config_raises_value_error_without_the_value(key, make_bad):
    bad = make_bad(key)
    for secret in (bad, f"{key},{bad}"):
        with pytest.raises(ValueError) as caught:
            TokenCipher.from_secret(secret)
        message = str(caught.value)
        assert "key #" in message
        assert bad.strip() not in message and key not in message
        assert caught.value.__cause__ is None


@pytest.mark.parametrize("empty", ["", " ", ",", " , \n"])
def test_empty_key_config_raises_value_error(empty):
    with pytest.raises(ValueError, match="no token encryption key"):
        TokenCipher.from_secret(empty)


def test_repr_shows_key_ids_only(key):
    text = repr(TokenCipher.from_secret(key))
    assert _kid(key) in text and key not in text


def test_plaintext_with_lone_surrogate_raises_value_error_without_the_text(cipher):
    with pytest.raises(ValueError) as caught:
        cipher.encrypt("secret\ud800value", CONN_ID)
    assert "secret" not in str(caught.value) and "value" not in str(caught.value)
