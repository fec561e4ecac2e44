"""Secret Manager secrets, their versions from `--secret` config, and who may read each."""
from __future__ import annotations

from typing import Mapping

import pulumi
import pulumi_gcp as gcp

# Secret name (what mailbridge.secrets asks for) → the config key its value comes from.
SECRETS = {
    "admin-api-key": "adminApiKey",
    "token-encryption-key": "tokenEncryptionKey",
    "google-client-secret": "googleClientSecret",
    "ms-client-secret": "msClientSecret",
}

_PROVIDER_USERS = ("oauth", "send", "read", "manage", "gmail_push", "graph_push", "renew")
# Secret → the only functions whose runtime account may read it (roles/secretmanager.secretAccessor
# on that one secret). deliver decrypts webhook secrets; it never talks to a mailbox provider.
SECRET_READERS: dict[str, tuple[str, ...]] = {
    "admin-api-key": ("manage",),
    "token-encryption-key": _PROVIDER_USERS + ("deliver",),
    "google-client-secret": _PROVIDER_USERS,
    "ms-client-secret": _PROVIDER_USERS,
}


class Secrets(pulumi.ComponentResource):
    """One secret per SECRETS entry with one version holding the configured value.

    The functions read them at runtime (MAILBRIDGE_SECRETS=secretmanager); no value is ever put
    into an environment variable. `values`: secret name → secret Output; `readers`: function →
    IAM member of its runtime account.
    """

    def __init__(self, name: str, project: str, values: Mapping[str, pulumi.Input[str]],
                 readers: Mapping[str, pulumi.Input[str]], opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailbridge:infra:Secrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.secrets: dict[str, gcp.secretmanager.Secret] = {}
        for secret_id in SECRETS:
            secret = gcp.secretmanager.Secret(
                f"{name}-{secret_id}", project=project, secret_id=secret_id,
                replication={"auto": {}}, opts=child)
            gcp.secretmanager.SecretVersion(
                f"{name}-{secret_id}-version", secret=secret.id,
                secret_data=pulumi.Output.secret(values[secret_id]), opts=child)
            for function in SECRET_READERS[secret_id]:
                gcp.secretmanager.SecretIamMember(
                    f"{name}-{secret_id}-{function}", project=project, secret_id=secret.secret_id,
                    role="roles/secretmanager.secretAccessor", member=readers[function], opts=child)
            self.secrets[secret_id] = secret
        self.register_outputs({"secrets": [s.secret_id for s in self.secrets.values()]})
