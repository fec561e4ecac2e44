"""Secrets from Google Secret Manager: the cloud backend (MAILBRIDGE_SECRETS=secretmanager)."""
from __future__ import annotations

import functools
import threading
from typing import Any

from mailbridge.errors import PermanentError, StoreUnavailableError
from mailbridge.secrets.base import SecretStore, check_name

# A cold function waits on this call, so bound it well below the library's 60 s default.
DEFAULT_TIMEOUT_SECONDS = 10.0


class SecretManagerSecretStore(SecretStore):
    """Reads `projects/<project>/secrets/<name>/versions/latest`.

    The client is built on first use, once per instance; values are cached per instance (a rotated secret is
    seen by new instances). Absence is not cached, so a secret created after deploy is found on the next call.
    Thread-safe.
    """

    def __init__(self, project: str, client: Any = None, *, timeout: float = DEFAULT_TIMEOUT_SECONDS):
        """`client`: a `secretmanager.SecretManagerServiceClient` (tests point one at the emulator)."""
        if not project:
            raise ValueError("a Google Cloud project is required for Secret Manager")
        self._project = project
        self._client = client
        self._timeout = timeout
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        """The latest version's value (cached), or None when the secret has no version or is empty.

        Raises ValueError for an invalid name; StoreUnavailableError when Secret Manager fails or the payload's
        CRC32C does not match (corrupted in transit); PermanentError when the value is not UTF-8 text.
        Messages name the secret, never its value.
        """
        check_name(name)
        with self._lock:
            if name in self._cache:
                return self._cache[name]
        # Fetched outside the lock: a slow secret must not hold up others; a racing duplicate fetch is harmless.
        value = self._fetch(name)
        if value is None:
            return None
        with self._lock:
            return self._cache.setdefault(name, value)

    def _fetch(self, name: str) -> str | None:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc

        resource = f"projects/{self._project}/secrets/{name}/versions/latest"
        try:
            response = self._get_client().access_secret_version(
                request={"name": resource}, retry=_retry(self._timeout), timeout=self._timeout)
        except gexc.NotFound:
            return None
        except (gexc.GoogleAPIError, auth_exc.GoogleAuthError) as exc:
            raise StoreUnavailableError(f"Secret Manager could not read secret {name!r} "
                                        f"({type(exc).__name__})") from exc
        except OSError as exc:  # requests' ConnectionError/Timeout on the REST transport are OSErrors
            raise StoreUnavailableError(f"Secret Manager is unreachable reading secret {name!r}") from exc
        payload = response.payload
        data = bytes(payload.data)
        # `data_crc32c` is proto3 `optional`: verify only when the server sent one.
        if "data_crc32c" in payload and (payload.data_crc32c & 0xFFFFFFFF) != crc32c(data):
            raise StoreUnavailableError(f"Secret Manager returned a corrupted payload for secret {name!r} "
                                        "(CRC32C mismatch)")
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PermanentError(f"secret {name!r} is not UTF-8 text") from None
        return value or None

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                # Imported here: the library costs ~270 ms to import, paid only by instances that read secrets.
                from google.cloud import secretmanager
                self._client = secretmanager.SecretManagerServiceClient()
            return self._client


@functools.lru_cache(maxsize=None)
def _retry(deadline: float) -> Any:
    """Retry 429/503 with short backoff within `deadline` (the library's default waits up to 60 s)."""
    from google.api_core import exceptions as gexc
    from google.api_core import retry as gretry
    return gretry.Retry(initial=0.1, maximum=2.0, multiplier=2.0, timeout=deadline,
                        predicate=gretry.if_exception_type(gexc.ResourceExhausted, gexc.ServiceUnavailable))


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, as Secret Manager's `data_crc32c`."""
    import google_crc32c
    return google_crc32c.value(data)
