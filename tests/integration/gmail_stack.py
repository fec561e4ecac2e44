"""Fixtures for end-to-end tests on Gmail: the emulator, a Runtime and app pointed at it, a key, a connected mailbox.

Use from a test module (integration or e2e) with::

    from tests.integration.gmail_stack import *  # noqa: F401,F403  (the fixtures below)

- `google_emulator` (session): the Google sign-in + Gmail emulator (dev.google_emulator) in a thread.
- `gmail` (per test): the same emulator, reset (mailboxes emptied, grants, counts and faults forgotten);
  `gmail.deliver(raw)`, `gmail.calls()`, `gmail.add_fault(...)`, `gmail.mailbox`, `gmail.sent()`.
- `gmail_settings`, `gmail_runtime` (on the parametrized `store`: SQLite and Firestore; an InlineBus
  whose `.published` the test reads), `api` (Flask test client of every function), `tenant_key`,
  `auth_headers`, and `connected_mailbox`: ACCOUNT connected through the real HTTP connect flow.
"""
from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest

from dev.google_emulator import EmulatorState, run_in_thread
from mailbridge.api.app import create_app
from mailbridge.api.functions import FUNCTIONS
from mailbridge.bus.inline import InlineBus
from mailbridge.config import Settings
from mailbridge.core import keys
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore

__all__ = ["google_emulator", "gmail", "gmail_settings", "gmail_runtime", "api", "tenant_key",
           "auth_headers", "connected_mailbox", "GoogleEmulator", "ConnectedMailbox", "bearer",
           "ACCOUNT", "TENANT", "USER_ID", "CLIENT_ID", "CLIENT_SECRET", "ADMIN_KEY", "PUBLIC_BASE_URL",
           "REDIRECT_URL"]

ACCOUNT = "me@example.com"
TENANT = "acme"
USER_ID = "u_42"
CLIENT_ID = "mailbridge-test.apps.example.com"
CLIENT_SECRET = "emulator-client-secret"
ADMIN_KEY = "mbk_" + "A" * 43
ENCRYPTION_KEY = base64.b64encode(b"k" * 32).decode()
PUBLIC_BASE_URL = "http://127.0.0.1:8080"      # never dialled: the callback goes through the test client
REDIRECT_URL = "http://127.0.0.1:9/connected"  # the customer's page (loopback; never dialled either)
PUBSUB_TOPIC = "projects/mailbridge-test/topics/gmail-notifications"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # we want the 302's Location, not to follow it


class GoogleEmulator:
    """A running emulator and what tests do with it; `state` is the EmulatorState itself."""

    def __init__(self, state: EmulatorState, base_url: str):
        self.state = state
        self.base_url = base_url

    @property
    def mailbox(self):
        """ACCOUNT's emulated mailbox (messages, threads, labels)."""
        return self.state.mailbox(ACCOUNT)

    def deliver(self, raw: bytes, **kwargs):
        """Inbound mail into ACCOUNT's mailbox (INBOX+UNREAD); returns the StoredMessage (id, thread_id, raw)."""
        return self.state.deliver(ACCOUNT, raw, **kwargs)

    def sent(self) -> list:
        """ACCOUNT's messages labelled SENT, oldest first."""
        return sorted((m for m in self.mailbox.messages.values() if "SENT" in m.labels),
                      key=lambda m: (m.history_id, m.id))

    def calls(self) -> Counter:
        """A copy of the call counts by method ("gmail.users.messages.send", "batch", "oauth2.token"…)."""
        with self.state.lock:
            return Counter(self.state.calls)

    def add_fault(self, method: str, status: int, count: int = 1, retry_after: int | None = None) -> None:
        """The next `count` calls of `method` ("*" for any) answer `status`."""
        self.state.add_fault(method, status, count, retry_after)

    def revoke(self) -> int:
        """Revoke every grant of ACCOUNT, as if the user removed the app's access."""
        return self.state.revoke_account(ACCOUNT)

    def get(self, url: str) -> tuple[int, dict]:
        """GET without following redirects: (status, headers)."""
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(url, timeout=10) as resp:
                return resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:  # 3xx lands here when redirects are not followed
            return exc.code, dict(exc.headers)


@dataclass(frozen=True)
class ConnectedMailbox:
    id: str
    email: str
    user_id: str


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def google_emulator():
    state = EmulatorState()
    state.add_client(CLIENT_ID, CLIENT_SECRET, [PUBLIC_BASE_URL + "/oauth/callback/google"])
    state.add_account(ACCOUNT)
    server = run_in_thread(state)
    yield GoogleEmulator(state, server.base_url)
    server.stop()


@pytest.fixture
def gmail(google_emulator) -> GoogleEmulator:
    """The session's emulator, reset for this test."""
    google_emulator.state.reset()
    google_emulator.state.oauth_decision = "approve"
    google_emulator.state.oauth_account = None
    return google_emulator


@pytest.fixture
def gmail_settings(gmail) -> Settings:
    base = gmail.base_url
    return Settings(google_client_id=CLIENT_ID, google_auth_url=base + "/o/oauth2/v2/auth",
                    google_token_url=base + "/token", google_revoke_url=base + "/revoke",
                    gmail_api_endpoint=base, public_base_url=PUBLIC_BASE_URL, push_auth="off",
                    gmail_pubsub_topic=PUBSUB_TOPIC, gcp_project="mailbridge-test")


@pytest.fixture
def gmail_runtime(store, gmail_settings) -> Runtime:
    secrets = EnvSecretStore({"MAILBRIDGE_ADMIN_KEY": ADMIN_KEY, "MAILBRIDGE_ENCRYPTION_KEY": ENCRYPTION_KEY,
                              "GOOGLE_CLIENT_SECRET": CLIENT_SECRET})
    return Runtime(gmail_settings, store=store, secrets=secrets, bus=InlineBus())


@pytest.fixture
def api(gmail_runtime):
    """A Flask test client of every function's routes on `gmail_runtime`."""
    return create_app(list(FUNCTIONS), gmail_runtime).test_client()


@pytest.fixture
def tenant_key(gmail_runtime) -> str:
    """An unrestricted API key of TENANT."""
    return keys.create_api_key(gmail_runtime.store, tenant_id=TENANT, name="tests")["key"]


@pytest.fixture
def auth_headers(tenant_key) -> dict[str, str]:
    return bearer(tenant_key)


@pytest.fixture
def connected_mailbox(api, auth_headers, gmail) -> ConnectedMailbox:
    """ACCOUNT connected through the real flow: POST /v1/connect → the emulator's consent page
    (auto-approve) → GET /oauth/callback/google → 302 to REDIRECT_URL?status=success&connection_id=…"""
    resp = api.post("/v1/connect", headers=auth_headers,
                    json={"provider": "google", "user_id": USER_ID, "redirect_url": REDIRECT_URL,
                          "backfill": "none"})
    assert resp.status_code == 201, resp.get_json()
    status, headers = gmail.get(resp.get_json()["url"])
    assert status == 302, (status, headers)
    callback = urlsplit(headers["Location"])
    assert callback.path == "/oauth/callback/google", headers["Location"]
    done = api.get(f"{callback.path}?{callback.query}")
    assert done.status_code == 302, done.get_data(as_text=True)
    query = parse_qs(urlsplit(done.headers["Location"]).query)
    assert query.get("status") == ["success"], done.headers["Location"]
    return ConnectedMailbox(id=query["connection_id"][0], email=ACCOUNT, user_id=USER_ID)

