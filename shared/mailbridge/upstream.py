"""HTTP to upstream services (Google sign-in, Google's certificates): one pooled requests session per
instance, a timeout on every call, and MAILBRIDGE_CA_BUNDLE trusted beside the system roots."""
from __future__ import annotations

import os
import tempfile
import threading

import requests
from google.auth.transport.requests import Request

from mailbridge.config import Settings

TIMEOUT = (5.0, 15.0)  # (connect, read) seconds


class TimedRequest(Request):
    """google-auth's requests transport with our timeout and CA bundle on every call (it passes
    neither itself: its default timeout is 120 s, and REQUESTS_CA_BUNDLE would override a session's)."""

    def __init__(self, session: requests.Session, verify: str | bool):
        super().__init__(session)
        self._verify = verify

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        kwargs.setdefault("verify", self._verify)
        return super().__call__(url, method=method, body=body, headers=headers,
                                timeout=timeout or TIMEOUT, **kwargs)


_lock = threading.Lock()
_sessions: dict[str | None, requests.Session] = {}
_bundles: dict[str, str] = {}


def session(settings: Settings) -> requests.Session:
    """One pooled session per instance (and CA bundle): connections are reused."""
    key = settings.ca_bundle
    found = _sessions.get(key)
    if found is None:
        with _lock:
            found = _sessions.get(key)
            if found is None:
                found = _sessions[key] = requests.Session()
    return found


def verify(settings: Settings) -> str | bool:
    """What requests should trust: the default roots, or those plus MAILBRIDGE_CA_BUNDLE."""
    return combined_ca_bundle(settings.ca_bundle) if settings.ca_bundle else True


def combined_ca_bundle(extra: str) -> str:
    """A PEM file of the system roots plus `extra`, written once per instance (requests and httplib2
    each take a single bundle path). OSError if `extra` cannot be read."""
    with _lock:
        if extra not in _bundles:
            _bundles[extra] = _combine(extra)
        return _bundles[extra]


def _combine(extra: str) -> str:
    import certifi  # requests' own roots; imported only when a bundle is configured
    system = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or certifi.where()
    if not os.path.isfile(system):
        system = certifi.where()
    parts = []
    for path in (system, extra):
        with open(path, "rb") as fh:
            parts.append(fh.read().strip() + b"\n")
    fd, path = tempfile.mkstemp(prefix="mailbridge-ca-", suffix=".pem")
    with os.fdopen(fd, "wb") as fh:
        fh.write(b"".join(parts))
    return path
