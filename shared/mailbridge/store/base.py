"""The one interface for every piece of state mailbridge keeps.

A small document store: named collections of JSON-like documents (dict, list, str, int,
float, bool, None), each under a string id. Typed access (tenants, keys, connections, …)
lives in `mailbridge.core`, built on these primitives; both backends pass one contract
suite (tests/integration/test_store_contract.py).

Rules every backend keeps:
- A stored document always carries its own id under "id".
- `expires_at` (epoch seconds) makes a document expire: once it has passed, every read
  treats the document as absent, even if the backend has not deleted it yet (Firestore's
  TTL deletes within ~24 h). The backend keeps the expiry outside the document's fields.
- Single-document operations are atomic: `create`, `take`, `compare_and_set`,
  `increment` and `update` are safe under concurrent callers and across processes.
- Errors of the database underneath are raised as `StoreUnavailableError` (transient).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterable, Sequence

Document = dict[str, Any]
# A filter: (field, op, value), op one of "==", "!=", "<", "<=", ">", ">=", "in".
# Fields are top-level document fields, or dotted paths into nested dicts ("watch.expires_at"),
# each part an identifier ([A-Za-z_][A-Za-z0-9_]*). Values are None, bool, int, float or str.
# Both backends keep Firestore's semantics (tests/integration/test_store_contract.py):
# - a document without the field matches no filter on it (not even "!=") and is left out
#   when ordering by that field;
# - "== None" matches a present null; "!= v" matches present, non-null values other than v,
#   of any type; ranges compare only values of the same type (numbers with numbers, int and
#   float alike; strings by code point; False < True) and refuse None;
# - True and 1 are different values; "in" takes a list of at most 30 non-None values
#   ([] matches nothing);
# - order_by sorts null < booleans < numbers < strings < lists < maps, ties by id in the same
#   direction. ValueError for anything else.
Filter = tuple[str, str, Any]

# The collections mailbridge uses. Backends accept any name; these are the ones in use,
# and infra/ declares Firestore TTL policies and indexes for them.
TENANTS = "tenants"
API_KEYS = "api_keys"
CONNECTIONS = "connections"
OAUTH_STATES = "oauth_states"          # TTL: 10 minutes, single use (take)
WEBHOOKS = "webhooks"
DELIVERIES = "deliveries"
AUDIT_LOG = "audit_log"
MESSAGES = "messages"                  # stored emails, id "<connection_id>:<provider id>"
THREADS = "threads"                    # thread snapshots
THREAD_CONTEXTS = "thread_contexts"
SYNC_CURSORS = "sync_cursors"          # compare-and-set
IDEMPOTENCY = "idempotency"            # TTL: 24 h
DEDUPE = "dedupe"                      # TTL, create-if-absent
RATE_LIMITS = "rate_limits"            # TTL, increment
LEASES = "leases"                      # TTL, create-if-absent (e.g. one token refresh at a time)
EVENTS = "events"                      # emitted events, for redelivery by hand

COLLECTIONS = (TENANTS, API_KEYS, CONNECTIONS, OAUTH_STATES, WEBHOOKS, DELIVERIES, AUDIT_LOG,
               MESSAGES, THREADS, THREAD_CONTEXTS, SYNC_CURSORS, IDEMPOTENCY, DEDUPE,
               RATE_LIMITS, LEASES, EVENTS)


class Store(ABC):
    """Document store. Every method may raise StoreUnavailableError; none raises anything else
    for a missing document except `update` (NotFoundError)."""

    @abstractmethod
    def get(self, collection: str, doc_id: str) -> Document | None:
        """The document, or None if absent or expired."""

    @abstractmethod
    def get_many(self, collection: str, doc_ids: Sequence[str]) -> dict[str, Document]:
        """The documents that exist (and have not expired), keyed by id; one round trip."""

    @abstractmethod
    def put(self, collection: str, doc_id: str, data: Document, *, expires_at: float | None = None) -> Document:
        """Create or replace the whole document; returns it as stored (with "id")."""

    @abstractmethod
    def create(self, collection: str, doc_id: str, data: Document, *, expires_at: float | None = None) -> bool:
        """Create-if-absent: True if this call created it; False if a live document already
        exists (an expired one counts as absent and is replaced). Idempotency and dedupe keys."""

    @abstractmethod
    def update(self, collection: str, doc_id: str, changes: Document) -> Document:
        """Set the given top-level fields (others kept) and return the new document.
        Raises NotFoundError if the document is absent or expired."""

    @abstractmethod
    def delete(self, collection: str, doc_id: str) -> bool:
        """Delete; True if a live document was there."""

    @abstractmethod
    def take(self, collection: str, doc_id: str) -> Document | None:
        """Atomically read and delete: exactly one of many concurrent callers gets the document
        (single-use OAuth states). None if absent or expired."""

    @abstractmethod
    def compare_and_set(self, collection: str, doc_id: str, field: str, expected: Any,
                        data: Document, *, expires_at: float | None = None) -> bool:
        """Replace the document with `data` only if its `field` currently equals `expected`
        (`expected=None` also matches an absent document, or one without the field).
        True if written. Sync cursors only ever move through this."""

    @abstractmethod
    def increment(self, collection: str, doc_id: str, field: str, amount: int = 1, *,
                  expires_at: float | None = None) -> int:
        """Atomically add `amount` to an integer field (creating the document, with `expires_at`,
        if absent or expired) and return the new value. Rate-limit counters."""

    @abstractmethod
    def query(self, collection: str, where: Iterable[Filter] = (), *, order_by: str | None = None,
              descending: bool = False, limit: int | None = None,
              start_after: tuple[Any, str] | None = None) -> list[Document]:
        """Live documents matching every filter, ordered by `order_by` then by id (ties), at most
        `limit`. `start_after=(order value, id)` of the last document of the previous page
        continues after it. Without `order_by`, ordered by id."""

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
