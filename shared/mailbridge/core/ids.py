"""Public ids (`google:<connection_id>:<gmail id>`, `m365:…`) and opaque, tamper-proof page tokens.

Ids: the prefix names the provider, the connection id scopes the provider's own id. An id that cannot
be parsed is `404 not_found` when it came in a path (there is no such resource) and `422` naming the
field when it came in a query or a body (the request itself is wrong).

Page tokens carry one cursor per connection (`[provider page token, page size, items already taken
from that page]`), serialized as compact JSON and sealed with the runtime's AES-256-GCM cipher. The
associated data binds a token to its tenant, its listing and a hash of its filters, so a token that
was altered, forged, made by another tenant or replayed with other filters fails authentication and
is refused with `422` naming `page_token` — a user-supplied string never reaches a provider unchecked.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailbridge.crypto import DecryptionError
from mailbridge.errors import InvalidRequestError, NotFoundError

if TYPE_CHECKING:
    from mailbridge.crypto import TokenCipher

PREFIXES = {"google": "google", "microsoft": "m365"}      # connection provider → id prefix
PROVIDERS = {prefix: provider for provider, prefix in PREFIXES.items()}
_CONNECTION = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Gmail ids are hex; Graph ids and conversationIds are base64 (with "-", "_", "=", and "/" or "+").
_PROVIDER_ID = {"google": re.compile(r"[A-Za-z0-9_-]{1,256}"),
                "m365": re.compile(r"[A-Za-z0-9_=+/-]{1,1024}")}
MAX_PAGE_TOKEN = 16384      # characters; longer text is refused before any decryption
MAX_PAGE_SIZE = 500         # the largest page any provider serves (Gmail's maxResults)


@dataclass(frozen=True)
class PublicId:
    """A parsed public id. `store_key` is the `<connection_id>:<provider id>` key of MESSAGES,
    THREADS and THREAD_CONTEXTS."""
    prefix: str
    connection_id: str
    provider_id: str

    @property
    def provider(self) -> str:
        return PROVIDERS[self.prefix]

    @property
    def store_key(self) -> str:
        return f"{self.connection_id}:{self.provider_id}"

    def __str__(self) -> str:
        return f"{self.prefix}:{self.connection_id}:{self.provider_id}"


def build_id(provider: str, connection_id: str, provider_id: str) -> str:
    """The public id of a provider's message or thread; ValueError for an unknown provider."""
    if provider not in PREFIXES:
        raise ValueError(f"unknown provider {provider!r}")
    return f"{PREFIXES[provider]}:{connection_id}:{provider_id}"


def parse_id(value: Any, *, what: str = "message", field: str | None = None) -> PublicId:
    """Parse a public id (already URL-decoded). Malformed: NotFoundError when `field` is None (a path
    segment), else InvalidRequestError naming `field`. The message never echoes a long value."""
    parts = value.split(":", 2) if isinstance(value, str) else []
    if (len(parts) == 3 and parts[0] in PROVIDERS and _CONNECTION.fullmatch(parts[1])
            and _PROVIDER_ID[parts[0]].fullmatch(parts[2])):
        return PublicId(parts[0], parts[1], parts[2])
    if field is None:
        shown = value if isinstance(value, str) and len(value) <= 200 else "(malformed id)"
        raise NotFoundError(f"{what} {shown} not found")
    raise InvalidRequestError(f"{field}: not a {what} id (google:<connection_id>:<id> or "
                              f"m365:<connection_id>:<id>)", field=field)


# --- page tokens ------------------------------------------------------------------------------------

Cursor = tuple[str | None, int, int]      # (provider page token, page size, items taken from it)


def filters_hash(filters: dict) -> str:
    """A short, stable digest of a listing's filters (the page size excluded: it may change per page)."""
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _scope(tenant_id: str, kind: str, filters: dict) -> str:
    return f"page_token:{kind}:{tenant_id}:{filters_hash(filters)}"


def encode_page_token(cipher: "TokenCipher", cursors: dict[str, Cursor], *, tenant_id: str, kind: str,
                      filters: dict) -> str:
    """Seal per-connection cursors into an opaque token (URL-safe characters only)."""
    payload = {"v": 1, "c": {conn: [token, size, skip] for conn, (token, size, skip) in cursors.items()}}
    text = json.dumps(payload, separators=(",", ":"))
    return cipher.encrypt(text, _scope(tenant_id, kind, filters))


def decode_page_token(cipher: "TokenCipher", token: str, *, tenant_id: str, kind: str,
                      filters: dict) -> dict[str, Cursor]:
    """The cursors sealed in `token`. InvalidRequestError (422, field `page_token`) for anything
    that is not a token this deployment issued for this tenant, listing and filters."""
    invalid = InvalidRequestError("page_token: not a page token of this query (pass next_page_token "
                                  "unchanged, with the same filters)", field="page_token")
    if not isinstance(token, str) or not token or len(token) > MAX_PAGE_TOKEN:
        raise invalid
    try:
        payload = json.loads(cipher.decrypt(token, _scope(tenant_id, kind, filters)))
    except (DecryptionError, ValueError):
        raise invalid from None
    cursors = payload.get("c") if isinstance(payload, dict) and payload.get("v") == 1 else None
    if not isinstance(cursors, dict):
        raise invalid
    result: dict[str, Cursor] = {}
    for conn, cursor in cursors.items():
        # Sealed by us, so malformed content means a bug or an old format: still refuse it cleanly.
        if not (isinstance(cursor, list) and len(cursor) == 3 and (cursor[0] is None or isinstance(cursor[0], str))
                and all(type(n) is int for n in cursor[1:]) and 1 <= cursor[1] <= MAX_PAGE_SIZE
                and 0 <= cursor[2] < cursor[1] and _CONNECTION.fullmatch(conn)):
            raise invalid
        result[conn] = (cursor[0], cursor[1], cursor[2])
    return result
