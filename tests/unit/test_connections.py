"""Connection logic without a store: ids, computed status, the public object, redirect URL rules."""
from __future__ import annotations

import pytest

from mailbridge.api.oauth import check_redirect_url
from mailbridge.core.connections import STALE_AFTER, connection_id_for, public_view, status_of

NOW = 2_000_000_000.0


def record(**fields) -> dict:
    base = {"id": "conn_1", "provider": "google", "email": "ada@example.com", "user_id": "u_42",
            "created_ts": NOW - 86400, "last_sync_ts": None, "error": None, "disconnected_ts": None,
            "watch": None, "backfill": None, "access_token": "v1.aaaaaaaa.xx", "refresh_token": "v1.aaaaaaaa.yy"}
    return {**base, **fields}


def test_connection_ids_are_stable_per_tenant_user_provider_and_address():
    one = connection_id_for("acme", "u_42", "google", "Ada@Example.com ")
    assert one == connection_id_for("acme", "u_42", "google", "ada@example.com")
    assert one.startswith("conn_") and len(one) == 5 + 24 and int(one[5:], 16) >= 0
    others = {connection_id_for("globex", "u_42", "google", "ada@example.com"),
              connection_id_for("acme", "u_43", "google", "ada@example.com"),
              connection_id_for("acme", "u_42", "microsoft", "ada@example.com"),
              connection_id_for("acme", "u_42", "google", "bob@example.com"),
              # no ambiguity from joining the parts
              connection_id_for("acme\",\"u_42", "", "google", "ada@example.com")}
    assert one not in others and len(others) == 5


@pytest.mark.parametrize("fields, status", [
    ({}, "never_synced"),
    ({"last_sync_ts": NOW - 60}, "healthy"),
    ({"last_sync_ts": NOW - STALE_AFTER + 1}, "healthy"),
    ({"last_sync_ts": NOW - STALE_AFTER - 1}, "stale"),
    ({"last_sync_ts": NOW - 60, "error": {"code": "reauth_required", "message": "m"}}, "error"),
    ({"error": {"code": "reauth_required", "message": "m"}}, "error"),
    ({"last_sync_ts": NOW - 60, "error": {"code": "x"}, "disconnected_ts": NOW}, "disconnected"),
])
def test_status_is_computed_from_sync_error_and_disconnect(fields, status):
    assert status_of(record(**fields), NOW) == status


def test_public_view_shows_the_api_object_and_never_a_token():
    view = public_view(record(last_sync_ts=NOW - 5, watch={"expires_ts": NOW + 3600, "history_id": "9"},
                              error={"code": "reauth_required", "message": "reconnect", "at": NOW}), NOW)
    assert list(view) == ["id", "provider", "email", "user_id", "status", "error", "last_sync_at",
                          "created_at", "watch", "backfill"]
    assert view["error"] == {"code": "reauth_required", "message": "reconnect"}
    assert view["watch"] == {"expires_at": "2033-05-18T04:33:20Z"}
    assert view["last_sync_at"] == "2033-05-18T03:33:15Z" and view["backfill"] is None
    assert "v1.aaaaaaaa" not in repr(view)


@pytest.mark.parametrize("url", [
    "https://app.example.com/cb", "https://app.example.com:8443/cb?x=1", "http://localhost:3000/cb",
    "http://127.0.0.1/cb", "http://127.8.9.10/cb", "http://[::1]:8000/cb", "http://dev.localhost/cb",
])
def test_redirect_urls_accepted(url):
    assert check_redirect_url(url) == url


@pytest.mark.parametrize("url", [
    "http://app.example.com/cb", "https:///nohost", "/relative", "ftp://app.example.com/",
    "https://user:pw@app.example.com/", "https://app.example.com/cb#x", "https://app.example.com/cb#",
    "https://app.example.com/a b", "https://app.example.com/\r\nx", "javascript:alert(1)",
    "http://10.0.0.1/cb", "http://localhost.evil.example.net/cb",
])
def test_redirect_urls_refused(url):
    with pytest.raises(ValueError):
        check_redirect_url(url)
