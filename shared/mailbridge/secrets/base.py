"""The secrets interface: read a named secret (Secret Manager in the cloud, environment variables locally)."""
from __future__ import annotations

import abc
import re

# Secret Manager's rule for secret ids, applied to every backend: a name that works locally works in the cloud.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")

ADMIN_API_KEY = "admin-api-key"
TOKEN_ENCRYPTION_KEY = "token-encryption-key"
GOOGLE_CLIENT_SECRET = "google-client-secret"
MS_CLIENT_SECRET = "ms-client-secret"


class SecretStore(abc.ABC):
    """Where mailbridge reads its secrets. Names are the cloud secret names (`admin-api-key`,
    `token-encryption-key`, `google-client-secret`, `ms-client-secret`, ...), whatever the backend.

    Implementations never log, and never put into an error message, a secret's value.
    """

    @abc.abstractmethod
    def get(self, name: str) -> str | None:
        """The secret's current value exactly as stored (no stripping), or None when it does not exist or is empty.

        Raises ValueError for a name Secret Manager would not accept, and
        mailbridge.errors.StoreUnavailableError when the backend cannot answer now (retrying later may help).
        Idempotent; backends may cache values for the life of the instance.
        """


def check_name(name: str) -> str:
    """Return `name` when it is a valid secret id ([A-Za-z0-9_-], 1-255 characters); ValueError otherwise."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError("secret names are 1-255 characters of letters, digits, '-' and '_'")
    return name
