"""Fixtures for the HTTP layer: a Runtime on a real store, apps built the way each function builds them."""
from __future__ import annotations

import base64
import os

import pytest

from mailbridge.config import Settings
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore

ADMIN_KEY = "mbk_" + "A" * 43
ENCRYPTION_KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def secrets_env() -> dict[str, str]:
    return {"MAILBRIDGE_ADMIN_KEY": ADMIN_KEY, "MAILBRIDGE_ENCRYPTION_KEY": ENCRYPTION_KEY}


@pytest.fixture
def runtime(store, secrets_env) -> Runtime:
    """A Runtime on the parametrized store (SQLite and the Firestore emulator)."""
    return Runtime(Settings(), store=store, secrets=EnvSecretStore(secrets_env))


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}
