"""Settings: every variable of API.md section 9, read from the environment once per instance."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

DEFAULT_GOOGLE_SCOPES = "https://www.googleapis.com/auth/gmail.modify"
DEFAULT_MS_SCOPES = "offline_access User.Read Mail.ReadWrite Mail.Send"


@dataclass(frozen=True)
class Settings:
    store: str = "sqlite:///.mailbridge/local.db"
    bus: str = "inline"
    secrets: str = "env"
    push_auth: str = "oidc"
    retry_base_seconds: float = 10.0
    google_scopes: tuple[str, ...] = tuple(DEFAULT_GOOGLE_SCOPES.split())
    ms_scopes: tuple[str, ...] = tuple(DEFAULT_MS_SCOPES.split())
    public_base_url: str = "http://localhost:8080"
    google_client_id: str = ""
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    google_revoke_url: str = "https://oauth2.googleapis.com/revoke"
    gmail_api_endpoint: str = "https://gmail.googleapis.com"
    gmail_pubsub_topic: str = ""
    google_oidc_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    push_audience: str = ""
    push_service_account: str = ""
    ms_client_id: str = ""
    ms_authority: str = "https://login.microsoftonline.com/common"
    graph_api_endpoint: str = "https://graph.microsoft.com/v1.0"
    ms_subscription_minutes: int = 4230
    ca_bundle: str | None = None
    gcp_project: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from `env` (default os.environ); unset variables take API.md's defaults."""
        env = os.environ if env is None else env
        d = cls()
        project = env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCP_PROJECT") or ""
        base = env.get("PUBLIC_BASE_URL", d.public_base_url).rstrip("/")
        return cls(
            store=env.get("MAILBRIDGE_STORE", d.store),
            bus=env.get("MAILBRIDGE_BUS", d.bus),
            secrets=env.get("MAILBRIDGE_SECRETS", d.secrets),
            push_auth=env.get("MAILBRIDGE_PUSH_AUTH", d.push_auth),
            retry_base_seconds=float(env.get("MAILBRIDGE_RETRY_BASE_SECONDS", d.retry_base_seconds)),
            google_scopes=tuple(env.get("GOOGLE_SCOPES", DEFAULT_GOOGLE_SCOPES).split()),
            ms_scopes=tuple(env.get("MS_SCOPES", DEFAULT_MS_SCOPES).split()),
            public_base_url=base,
            google_client_id=env.get("GOOGLE_CLIENT_ID", ""),
            google_auth_url=env.get("GOOGLE_AUTH_URL", d.google_auth_url),
            google_token_url=env.get("GOOGLE_TOKEN_URL", d.google_token_url),
            google_revoke_url=env.get("GOOGLE_REVOKE_URL", d.google_revoke_url),
            gmail_api_endpoint=env.get("GMAIL_API_ENDPOINT", d.gmail_api_endpoint).rstrip("/"),
            gmail_pubsub_topic=env.get("GMAIL_PUBSUB_TOPIC",
                                       f"projects/{project}/topics/gmail-notifications" if project else ""),
            google_oidc_certs_url=env.get("GOOGLE_OIDC_CERTS_URL", d.google_oidc_certs_url),
            push_audience=env.get("PUSH_AUDIENCE", base + "/push/gmail"),
            push_service_account=env.get("PUSH_SERVICE_ACCOUNT", ""),
            ms_client_id=env.get("MS_CLIENT_ID", ""),
            ms_authority=env.get("MS_AUTHORITY", d.ms_authority),
            graph_api_endpoint=env.get("GRAPH_API_ENDPOINT", d.graph_api_endpoint).rstrip("/"),
            ms_subscription_minutes=int(env.get("MS_SUBSCRIPTION_MINUTES", d.ms_subscription_minutes)),
            ca_bundle=env.get("MAILBRIDGE_CA_BUNDLE") or None,
            gcp_project=project,
        )
