"""Secrets from environment variables: the local backend (MAILBRIDGE_SECRETS=env)."""
from __future__ import annotations

import os
from typing import Mapping

from mailbridge.secrets.base import (ADMIN_API_KEY, GOOGLE_CLIENT_SECRET, MS_CLIENT_SECRET,
                                     TOKEN_ENCRYPTION_KEY, SecretStore, check_name)

# The names API.md section 9 gives these secrets locally; any other secret maps by upper-casing.
ENV_NAMES = {
    ADMIN_API_KEY: "MAILBRIDGE_ADMIN_KEY",
    TOKEN_ENCRYPTION_KEY: "MAILBRIDGE_ENCRYPTION_KEY",
    GOOGLE_CLIENT_SECRET: "GOOGLE_CLIENT_SECRET",
    MS_CLIENT_SECRET: "MS_CLIENT_SECRET",
}


def env_var_for(name: str) -> str:
    """The environment variable holding secret `name`: the table above, else upper-case with '-' as '_'."""
    check_name(name)
    return ENV_NAMES.get(name) or name.upper().replace("-", "_")


class EnvSecretStore(SecretStore):
    """Reads `environ` (default: os.environ, read live on every call, so tests may change it)."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        self._environ = environ

    def get(self, name: str) -> str | None:
        """The variable's value; None when it is unset or empty. Raises ValueError for an invalid name."""
        environ = os.environ if self._environ is None else self._environ
        return environ.get(env_var_for(name)) or None
