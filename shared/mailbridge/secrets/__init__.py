"""Secrets: one interface (`secrets.base.SecretStore`), two backends (environment, Secret Manager)."""
from __future__ import annotations

from mailbridge.secrets.base import SecretStore

__all__ = ["SecretStore", "open_secrets"]


def open_secrets(kind: str, project: str = "") -> SecretStore:
    """The store MAILBRIDGE_SECRETS names: `env` or `secretmanager` (which needs the GCP `project`).

    Backends are imported only when chosen, so the env backend never loads the Google client library.
    Raises ValueError for an unknown kind or a missing project.
    """
    if kind == "env":
        from mailbridge.secrets.env import EnvSecretStore
        return EnvSecretStore()
    if kind == "secretmanager":
        if not project:
            raise ValueError("MAILBRIDGE_SECRETS=secretmanager needs a project (GOOGLE_CLOUD_PROJECT)")
        from mailbridge.secrets.secretmanager import SecretManagerSecretStore
        return SecretManagerSecretStore(project)
    raise ValueError(f"MAILBRIDGE_SECRETS must be 'env' or 'secretmanager', not {kind!r}")
