"""EmulatorState: accounts, OAuth clients and grants, faults, latency, call counts and quota, in memory."""
from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from mailbridge.errors import InvalidRequestError, MailbridgeError

from .mailbox import Mailbox, StoredMessage
from .notify import Notifier, Publisher

# Gmail quota units per method (FACTS.md); methods not listed cost 5, like most of Gmail.
QUOTA_UNITS = {
    "gmail.users.getProfile": 1, "gmail.users.labels.list": 1, "gmail.users.labels.get": 1,
    "gmail.users.history.list": 2, "gmail.users.messages.send": 100, "gmail.users.watch": 100,
    "gmail.users.stop": 50, "gmail.users.threads.get": 10, "gmail.users.threads.list": 10,
    "gmail.users.messages.delete": 10,
}
FULL_SCOPE = "https://mail.google.com/"


@dataclass
class Grant:
    """One consent: a refresh token, its scopes and account; revoking it kills its access tokens."""
    account: str
    client_id: str
    scopes: list[str]
    refresh_token: str | None
    revoked: bool = False


@dataclass
class AccessToken:
    grant: Grant
    expires_at: float


@dataclass
class AuthCode:
    grant_params: dict
    issued_at: float
    used: bool = False
    grant: Grant | None = None


@dataclass
class Fault:
    method: str
    status: int
    count: int
    retry_after: int | None = None


@dataclass
class EmulatorState:
    """Everything the emulator knows; thread-safe (one lock for auth/faults/counters, one per mailbox).

    Knobs tests set directly: `oauth_decision` ("ask" | "approve" | "deny"), `oauth_account`,
    `latency_ms`, `access_token_lifetime`, `rotate_refresh_tokens`, `max_json_body`,
    `max_upload_body`, `history_retention`, `publisher` (a callable(topic, payload)), `clock`.
    """
    oauth_decision: str = "approve"
    oauth_account: str | None = None
    latency_ms: int = 0
    access_token_lifetime: int = 3600
    code_lifetime: int = 600
    rotate_refresh_tokens: bool = False
    max_json_body: int = 5 * 1024 * 1024
    max_upload_body: int = 35 * 1024 * 1024
    history_retention: int = 1000
    notify_interval: float = 1.0
    publisher: Publisher | None = None
    clock: Callable[[], float] = time.time
    clients: dict[str, dict] = field(default_factory=dict)
    accounts: dict[str, Mailbox] = field(default_factory=dict)
    default_account: str | None = None

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self.codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, Grant] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.faults: list[Fault] = []
        self.calls: Counter = Counter()
        self.quota: Counter = Counter()
        self.pending_consents: dict[str, dict] = {}
        self.uploads: dict[str, dict] = {}
        self.notifier = Notifier(lambda: self.publisher, self.notify_interval)

    # ---- setup ---------------------------------------------------------------------------
    def add_client(self, client_id: str, client_secret: str, redirect_uris: list[str] | None = None) -> None:
        """Register an OAuth client; with `redirect_uris`, only those exact URIs are accepted."""
        with self.lock:
            self.clients[client_id] = {"secret": client_secret, "redirect_uris": list(redirect_uris or [])}

    def add_account(self, address: str) -> Mailbox:
        """Create (or return) the mailbox of `address`; the first account becomes the default."""
        key = address.lower()
        with self.lock:
            if key not in self.accounts:
                box = Mailbox(address, new_id=self.new_message_id, retention=self.history_retention,
                              now=lambda: self.clock())
                box.on_change = self._changed
                self.accounts[key] = box
                self.default_account = self.default_account or key
            return self.accounts[key]

    def mailbox(self, address: str) -> Mailbox:
        box = self.accounts.get(address.lower())
        if box is None:
            raise InvalidRequestError(f"unknown account {address}", status=404)
        return box

    def new_message_id(self) -> str:
        """16 hex chars that grow with time, like Gmail's message and thread ids."""
        return f"{(int(self.clock() * 1000) << 20) + next(self._ids) % (1 << 20):016x}"

    # ---- mailbox controls ----------------------------------------------------------------
    def deliver(self, address: str, raw: bytes, *, labels: list[str] | None = None,
                delay_visible_ms: int = 0, internal_ms: int | None = None) -> StoredMessage:
        """Inbound mail: labels INBOX+UNREAD by default; hidden from get/list for `delay_visible_ms`."""
        return self.mailbox(address).add(raw, labels or ["INBOX", "UNREAD"],
                                         visible_after_ms=delay_visible_ms, internal_ms=internal_ms)

    def _changed(self, box: Mailbox, history_id: int, labels: set[str]) -> None:
        watch = box.watch
        if not watch or watch["expiration_ms"] < self.clock() * 1000:
            return
        filter_ids = set(watch.get("labelIds") or [])
        if filter_ids:
            hit = bool(filter_ids & labels)
            if hit != (watch.get("labelFilterBehavior", "include").lower() == "include"):
                return
        self.notifier.notify(box.address, watch["topicName"], history_id)

    # ---- grants --------------------------------------------------------------------------
    def issue_tokens(self, grant: Grant) -> str:
        token = "ya29." + secrets.token_urlsafe(32)
        with self.lock:
            self.access_tokens[token] = AccessToken(grant, self.clock() + self.access_token_lifetime)
        return token

    def revoke_grant(self, grant: Grant) -> None:
        with self.lock:
            grant.revoked = True
            for tok in [t for t, a in self.access_tokens.items() if a.grant is grant]:
                del self.access_tokens[tok]

    def revoke_account(self, address: str) -> int:
        """Revoke every grant of an account (as if the user removed access); returns how many."""
        with self.lock:
            grants = {id(a.grant): a.grant for a in self.access_tokens.values()
                      if a.grant.account == address.lower()}
            grants.update({id(g): g for g in self.refresh_tokens.values() if g.account == address.lower()})
            for grant in grants.values():
                self.revoke_grant(grant)
            return len(grants)

    def expire_access_tokens(self, address: str | None = None) -> int:
        """Make current access tokens expired now (refresh tests); returns how many."""
        with self.lock:
            hit = [a for a in self.access_tokens.values()
                   if address is None or a.grant.account == address.lower()]
            for token in hit:
                token.expires_at = self.clock() - 1
            return len(hit)

    def grant_for(self, access_token: str) -> Grant | None:
        with self.lock:
            entry = self.access_tokens.get(access_token)
            if entry is None or entry.grant.revoked or entry.expires_at <= self.clock():
                return None
            return entry.grant

    # ---- faults, latency, counting -------------------------------------------------------
    def add_fault(self, method: str, status: int, count: int = 1, retry_after: int | None = None) -> None:
        """Make the next `count` calls of `method` ("*" for any) fail with `status`."""
        with self.lock:
            self.faults.append(Fault(method, int(status), int(count), retry_after))

    def take_fault(self, method: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and fault.method in ("*", method):
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                    return fault
            return None

    def count_call(self, method: str) -> None:
        with self.lock:
            self.calls[method] += 1

    def charge(self, account: str, method: str) -> None:
        with self.lock:
            self.quota[account] += QUOTA_UNITS.get(method, 5)

    def snapshot(self) -> dict:
        """`{"calls": {method: n}, "quota": {account: units}}`, what GET /emulator/calls answers."""
        with self.lock:
            return {"calls": dict(self.calls), "quota": dict(self.quota)}

    def reset(self) -> None:
        """Empty every mailbox and forget grants, codes, counts, faults and latency (clients stay)."""
        with self.lock:
            addresses = [b.address for b in self.accounts.values()]
            default = self.default_account
            for box in self.accounts.values():
                box.on_change = None
            self.accounts.clear()
            self.default_account = default
            for address in addresses:
                self.add_account(address)
            self.codes.clear()
            self.refresh_tokens.clear()
            self.access_tokens.clear()
            self.faults.clear()
            self.calls.clear()
            self.quota.clear()
            self.pending_consents.clear()
            self.uploads.clear()
            self.latency_ms = 0
            self.notifier.clear()

    def close(self) -> None:
        self.notifier.stop()


def fault_error(fault: Fault) -> MailbridgeError:
    """The shared-tree error a fault answers with (rendered in Google's shape by errors.py)."""
    messages = {429: "Too many concurrent requests for user.", 500: "Backend Error",
                503: "The service is currently unavailable."}
    return MailbridgeError(messages.get(fault.status, "Injected fault"), status=fault.status,
                           retry_after=fault.retry_after)
