"""Public ids and opaque page tokens (core/ids.py)."""
from __future__ import annotations

import base64

import pytest

from mailbridge.core.ids import (PublicId, build_id, decode_page_token, encode_page_token, filters_hash,
                                 parse_id)
from mailbridge.crypto import TokenCipher
from mailbridge.errors import InvalidRequestError, NotFoundError

CIPHER = TokenCipher([b"p" * 32])
FILTERS = {"query": {"q": "invoice"}, "connections": ["conn_a", "conn_b"], "user_id": None}
CURSORS = {"conn_a": ("18c0ffee", 20, 7), "conn_b": (None, 20, 0)}


def _encode(**over) -> str:
    args = {"tenant_id": "acme", "kind": "messages", "filters": FILTERS, **over}
    return encode_page_token(CIPHER, CURSORS, **args)


def _decode(token: str, cipher: TokenCipher = CIPHER, **over):
    args = {"tenant_id": "acme", "kind": "messages", "filters": FILTERS, **over}
    return decode_page_token(cipher, token, **args)


def test_build_and_parse_round_trip_for_both_providers():
    gid = build_id("google", "conn_1a2b", "19485a3b2c1d")
    assert gid == "google:conn_1a2b:19485a3b2c1d"
    assert parse_id(gid) == PublicId("google", "conn_1a2b", "19485a3b2c1d")
    graph = "AAMkAGI2T/G93+AAA="
    mid = build_id("microsoft", "conn_9", graph)
    parsed = parse_id(mid)
    assert (mid, parsed.provider, parsed.provider_id, parsed.store_key) == (
        f"m365:conn_9:{graph}", "microsoft", graph, f"conn_9:{graph}")
    assert str(parsed) == mid


def test_build_id_refuses_an_unknown_provider():
    with pytest.raises(ValueError):
        build_id("yahoo", "conn_1", "x")


@pytest.mark.parametrize("bad", ["", "google", "google:conn_1", "google::abc", "google:conn_1:",
                                 "imap:conn_1:abc", "google:conn 1:abc", "google:conn_1:ab/cd",
                                 "google:conn_1:a?b", "google:conn_1:ab\ncd", "m365:conn_1:a b",
                                 "google:" + "c" * 200 + ":abc", None, 42])
def test_malformed_id_in_a_path_is_not_found(bad):
    with pytest.raises(NotFoundError):
        parse_id(bad, what="thread")


def test_malformed_id_in_a_query_or_body_is_422_naming_the_field():
    with pytest.raises(InvalidRequestError) as caught:
        parse_id("nonsense", field="in_reply_to")
    assert caught.value.status == 422 and caught.value.details == {"field": "in_reply_to"}


def test_not_found_message_does_not_echo_a_huge_value():
    with pytest.raises(NotFoundError) as caught:
        parse_id("x" * 5000)
    assert len(caught.value.message) < 300


def test_page_token_round_trip_is_opaque_and_url_safe():
    token = _encode()
    assert _decode(token) == CURSORS
    assert "18c0ffee" not in token and "conn_a" not in token
    assert set(token) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def test_filters_hash_ignores_key_order():
    assert filters_hash({"a": 1, "b": [2]}) == filters_hash({"b": [2], "a": 1})
    assert filters_hash({"a": 1}) != filters_hash({"a": 2})


def _tampered(token: str) -> list[str]:
    head, body = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    out = []
    for index in (0, len(raw) // 2, len(raw) - 1):   # nonce, ciphertext, tag
        changed = bytearray(raw)
        changed[index] ^= 0x01
        out.append(head + "." + base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode())
    return out


@pytest.mark.parametrize("case", ["flip0", "flip1", "flip2", "garbage", "empty", "truncated", "huge",
                                  "plain_json"])
def test_tampered_or_garbage_page_token_is_422_naming_page_token(case):
    token = _encode()
    bad = {"flip0": _tampered(token)[0], "flip1": _tampered(token)[1], "flip2": _tampered(token)[2],
           "garbage": "not-a-token", "empty": "", "truncated": token[:-4], "huge": token + "A" * 20000,
           "plain_json": base64.urlsafe_b64encode(b'{"v":1,"c":{}}').decode()}[case]
    with pytest.raises(InvalidRequestError) as caught:
        _decode(bad)
    assert caught.value.details == {"field": "page_token"} and caught.value.status == 422


@pytest.mark.parametrize("over", [{"tenant_id": "globex"}, {"kind": "threads"},
                                  {"filters": {**FILTERS, "user_id": "u_1"}}])
def test_page_token_is_bound_to_tenant_listing_and_filters(over):
    with pytest.raises(InvalidRequestError):
        _decode(_encode(), **over)


def test_page_token_of_another_deployment_key_is_refused():
    with pytest.raises(InvalidRequestError):
        _decode(_encode(), cipher=TokenCipher([b"q" * 32]))


def test_page_token_survives_key_rotation():
    rotated = TokenCipher([b"r" * 32, b"p" * 32])   # new primary, the old key still listed
    assert _decode(_encode(), cipher=rotated) == CURSORS


def test_sealed_but_malformed_cursor_is_refused():
    token = encode_page_token(CIPHER, {"conn_a": ("t", 20, 20)}, tenant_id="acme", kind="messages",
                              filters=FILTERS)   # skip == size: never issued
    with pytest.raises(InvalidRequestError):
        _decode(token)
