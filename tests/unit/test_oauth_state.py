"""The OAuth state's signature, key derivation and PKCE, and the consent URL built around them."""
from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from mailbridge.config import DEFAULT_GOOGLE_SCOPES, Settings
from mailbridge.core import oauth_state
from mailbridge.providers import google_auth

KEY = oauth_state.derive_key(b"k" * 32)
OLD_KEY = oauth_state.derive_key(b"o" * 32)
PAYLOAD = {"s": "state-id", "p": "google", "r": "https://app.example.com/cb", "e": 1_900_000_000}


def test_signed_payload_verifies_under_its_key_and_any_rotated_key():
    token = oauth_state.sign(KEY, PAYLOAD)
    assert oauth_state.verify([KEY], token) == PAYLOAD
    assert oauth_state.verify([OLD_KEY, KEY], token) == PAYLOAD, "a state signed before rotation still verifies"
    assert oauth_state.verify([OLD_KEY], token) is None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("forge", [
    lambda t: _b64(json.dumps({**PAYLOAD, "r": "https://evil.example.net/"}).encode()) + "." + t.split(".")[1],
    lambda t: t.split(".")[0] + "." + _b64(b"\0" * 32),
    lambda t: t.split(".")[0] + ".",
    lambda t: t + ".x",
    lambda t: t.replace(".", ""),
    lambda t: t.split(".")[0] + ".!!!",
    lambda t: None,
    lambda t: "x" * 5000,
])
def test_forged_or_malformed_states_do_not_verify(forge):
    assert oauth_state.verify([KEY], forge(oauth_state.sign(KEY, PAYLOAD))) is None


def test_a_signed_payload_of_the_wrong_shape_is_refused():
    for payload in ({"s": "x", "p": "google", "r": "https://a.example/"}, {**PAYLOAD, "e": "soon"},
                    {**PAYLOAD, "s": 7}):
        assert oauth_state.verify([KEY], oauth_state.sign(KEY, payload)) is None


def test_the_signing_key_is_derived_not_the_encryption_key_itself():
    assert len(KEY) == 32 and KEY != b"k" * 32
    assert oauth_state.derive_key(b"k" * 32) == KEY, "deterministic: every instance derives the same key"
    assert OLD_KEY != KEY


def test_pkce_challenge_matches_rfc_7636_appendix_b():
    assert oauth_state.pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_consent_url_asks_for_offline_consent_with_pkce():
    settings = Settings(google_client_id="cid", public_base_url="https://mb.example.org",
                        google_auth_url="http://127.0.0.1:9/o/oauth2/v2/auth",
                        google_scopes=(DEFAULT_GOOGLE_SCOPES, "https://mail.google.com/"))
    url = google_auth.authorization_url(settings, "st", "ch" * 21 + "c", login_hint=None)
    assert url.startswith("http://127.0.0.1:9/o/oauth2/v2/auth?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {"client_id": "cid", "redirect_uri": "https://mb.example.org/oauth/callback/google",
                     "response_type": "code",
                     "scope": DEFAULT_GOOGLE_SCOPES + " https://mail.google.com/",
                     "access_type": "offline", "prompt": "consent", "include_granted_scopes": "true",
                     "state": "st", "code_challenge": "ch" * 21 + "c", "code_challenge_method": "S256"}


def test_token_set_repr_hides_tokens():
    tokens = google_auth.TokenSet("ya29.secret-access", 1.0, "1//secret-refresh", ("s",))
    assert "secret" not in repr(tokens) and "secret" not in str(tokens)
