"""Every pulumi.Config read of the mailbridge program, in one place (`pulumi config set …`)."""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

import pulumi

# The repository root: functions/ and shared/mailbridge/ are packaged from here.
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    project: str
    region: str
    google_client_id: str
    ms_client_id: str
    # Secrets stay pulumi Outputs marked secret: they only ever reach Secret Manager versions.
    google_client_secret: pulumi.Output[str]
    ms_client_secret: pulumi.Output[str]
    admin_api_key: pulumi.Output[str]
    token_encryption_key: pulumi.Output[str]
    public_base_url: str | None = None      # a custom domain in front of the gateway, if any
    google_scopes: str | None = None        # GOOGLE_SCOPES, else API.md's default
    ms_scopes: str | None = None            # MS_SCOPES, else API.md's default
    firestore_location: str | None = None   # defaults to the region
    firestore_exists: bool = False          # the project already has a native-mode (default) database
    gateway_region: str | None = None       # API Gateway runs in fewer regions than functions
    source_root: Path = REPO_ROOT           # where functions/ and shared/mailbridge/ are packaged from
    openapi_path: Path | None = None        # the OpenAPI 3 document; default <source_root>/openapi.yaml
    build_dir: Path = Path(__file__).resolve().parent / ".build"  # where the archives are written


def _checked_key(value: str) -> str:
    """tokenEncryptionKey: one or more base64 keys of 32 bytes (AES-256-GCM), comma-separated — the first
    encrypts, all decrypt, so a key rotates by prepending a new one. The error never shows a key."""
    for position, key in enumerate(value.split(","), start=1):
        try:
            raw = base64.b64decode(key.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"config mailbridge:tokenEncryptionKey: key #{position} must be base64 of 32 random bytes")
    return value


def load() -> Settings:
    """Read the stack's configuration. Raises pulumi.ConfigMissingError naming a missing key."""
    gcp = pulumi.Config("gcp")
    cfg = pulumi.Config()
    return Settings(
        project=gcp.require("project"),
        region=gcp.require("region"),
        google_client_id=cfg.require("googleClientId"),
        ms_client_id=cfg.require("msClientId"),
        google_client_secret=cfg.require_secret("googleClientSecret"),
        ms_client_secret=cfg.require_secret("msClientSecret"),
        admin_api_key=cfg.require_secret("adminApiKey"),
        token_encryption_key=cfg.require_secret("tokenEncryptionKey").apply(_checked_key),
        public_base_url=(cfg.get("publicBaseUrl") or "").rstrip("/") or None,
        google_scopes=cfg.get("googleScopes"),
        ms_scopes=cfg.get("msScopes"),
        firestore_location=cfg.get("firestoreLocation"),
        firestore_exists=bool(cfg.get_bool("firestoreDatabaseExists")),
        gateway_region=cfg.get("gatewayRegion"),
        source_root=Path(cfg.get("sourceRoot") or REPO_ROOT),
        openapi_path=Path(cfg.get("openapiPath")) if cfg.get("openapiPath") else None,
        build_dir=Path(cfg.get("buildDir") or Path(__file__).resolve().parent / ".build"),
    )
