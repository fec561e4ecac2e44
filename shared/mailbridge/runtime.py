"""The per-instance dependencies (settings, store, secrets, bus, cipher), built lazily on first use.

Cloud Functions keep an instance warm between requests, so each dependency is built once and reused
("lazy globals"); tests build their own `Runtime` with explicit parts instead of patching globals.
"""
from __future__ import annotations

import hashlib
import hmac
import threading
from functools import cached_property
from typing import TYPE_CHECKING

from mailbridge.config import Settings
from mailbridge.secrets.base import ADMIN_API_KEY, TOKEN_ENCRYPTION_KEY

if TYPE_CHECKING:
    from mailbridge.bus.base import Bus
    from mailbridge.crypto import TokenCipher
    from mailbridge.secrets.base import SecretStore
    from mailbridge.store.base import Store


class Runtime:
    """Everything a use case needs from the outside world, each part built on first use."""

    def __init__(self, settings: Settings | None = None, *, store: "Store | None" = None,
                 secrets: "SecretStore | None" = None, bus: "Bus | None" = None):
        self.settings = settings or Settings.from_env()
        if store is not None:
            self.__dict__["store"] = store
        if secrets is not None:
            self.__dict__["secrets"] = secrets
        if bus is not None:
            self.__dict__["bus"] = bus
            bus.bind(self)  # an inline bus hands this runtime to its handlers (the first runtime wins)

    @cached_property
    def store(self) -> "Store":
        from mailbridge.store import open_store
        return open_store(self.settings.store)

    @cached_property
    def secrets(self) -> "SecretStore":
        from mailbridge.secrets import open_secrets
        return open_secrets(self.settings.secrets, self.settings.gcp_project)

    @cached_property
    def bus(self) -> "Bus":
        """MAILBRIDGE_BUS: inline (handlers run in this process with this runtime) or pubsub."""
        from mailbridge.bus import open_bus
        return open_bus(self.settings.bus, project=self.settings.gcp_project, runtime=self)

    @cached_property
    def cipher(self) -> "TokenCipher":
        from mailbridge.crypto import TokenCipher
        value = self.secrets.get(TOKEN_ENCRYPTION_KEY)
        if not value:
            raise RuntimeError("token-encryption-key is not set (MAILBRIDGE_ENCRYPTION_KEY locally)")
        return TokenCipher.from_secret(value)

    @cached_property
    def _admin_key_hash(self) -> bytes | None:
        value = (self.secrets.get(ADMIN_API_KEY) or "").strip()
        return hashlib.sha256(value.encode()).digest() if value else None

    def is_admin_key(self, presented: str) -> bool:
        """Constant-time check of a presented key against the admin key (False when none is set)."""
        expected = self._admin_key_hash
        return expected is not None and hmac.compare_digest(
            expected, hashlib.sha256(presented.encode()).digest())


_lock = threading.Lock()
_default: Runtime | None = None


def default_runtime() -> Runtime:
    """The instance-wide runtime built from the environment (created once, thread-safe)."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = Runtime()
    return _default


def reset_default_runtime() -> None:
    """Forget the instance-wide runtime; the next request builds a new one from the environment
    (a new deployment's environment in tests; never needed in a running function)."""
    global _default
    with _lock:
        _default = None
