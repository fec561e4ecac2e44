"""Webhook delivery (API.md section 7): one signed POST per bus message, attempts recorded, retries, dead letters.

A record in DELIVERIES (id `dlv_…`, deterministic per (event, webhook): core/events.py creates it):
    tenant_id, webhook_id, event_id, event_type, status (pending|succeeded|failed|dead), attempts,
    last_status_code, last_error, next_attempt_ts, created_ts, updated_ts, queued_ts,
    attempts_at_publish (`attempts` when the current bus message was published), retried_ts

Retries belong to the bus: a failed attempt raises TransientError and the bus calls again after its
backoff (Pub/Sub's retry policy in the cloud, MAILBRIDGE_RETRY_BASE_SECONDS × 2^(n-1) ≤ 600 s inline);
`next_attempt_at` shows that delay. After 24 h of failures (counted from creation, or from the last
manual retry) the delivery is `dead`: logged, acknowledged, listed, retryable by hand. Pub/Sub stops a
message after 100 deliveries (≈ 16 h at ≤ 600 s apart), so when a message nears its bus's limit while
the delivery is younger than 24 h, a fresh message is published and the old one acknowledged: retries
go on for the full 24 h. A 410 answer disables the webhook and fails the delivery for good.

SSRF guard: the same `address_allowed` rule as at creation, checked on the socket actually connected
(`getpeername()` right after connect, before TLS or any byte is sent), so a name re-pointed at a private
address after creation is refused. Redirects are never followed (a 3xx is a failed attempt).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
from typing import Any

from mailbridge import clock
from mailbridge.bus.base import DELIVERIES_TOPIC
from mailbridge.core import webhooks
from mailbridge.crypto import DecryptionError
from mailbridge.errors import ConflictError, NotFoundError, TransientError
from mailbridge.runtime import Runtime
from mailbridge.store.base import DELIVERIES, EVENTS, WEBHOOKS

log = logging.getLogger("mailbridge.delivery")

TIMEOUT_SECONDS = 10.0
DEAD_AFTER_SECONDS = 24 * 3600
MAX_RETRY_DELAY_SECONDS = 600.0
PUBSUB_MAX_DELIVERY_ATTEMPTS = 100   # the delivery subscription's dead-letter limit (infra/, Pub/Sub's max)
REPUBLISH_MARGIN = 5                 # re-publish this many attempts before the bus would give up
USER_AGENT = "mailbridge-webhooks/1"
SETTLED = ("succeeded", "failed", "dead")


def public_view(record: dict) -> dict:
    """The API's delivery object."""
    return {"id": record["id"], "event_id": record["event_id"], "event_type": record["event_type"],
            "status": record["status"], "attempts": record.get("attempts", 0),
            "last_status_code": record.get("last_status_code"), "last_error": record.get("last_error"),
            "next_attempt_at": clock.rfc3339(record.get("next_attempt_ts")),
            "created_at": clock.rfc3339(record["created_ts"]), "updated_at": clock.rfc3339(record["updated_ts"])}


def retry_delay(runtime: Runtime, attempts: int) -> float:
    """Seconds until the retry after `attempts` failed attempts: base × 2^(attempts-1), at most 10 min."""
    return min(runtime.settings.retry_base_seconds * 2 ** max(attempts - 1, 0), MAX_RETRY_DELAY_SECONDS)


def handle_delivery(runtime: Runtime, message: dict, *, bus_attempt: int | None = None) -> None:
    """Bus handler of `mailbridge-deliveries`: POST the event to the webhook once, signed.

    Returns when the delivery is settled (succeeded, failed on 410, dead after 24 h, webhook gone or
    disabled, or the message can never succeed — logged). Raises TransientError to be called again
    after a failed attempt. `bus_attempt`: the bus's own count for this message when it tells it
    (Pub/Sub's deliveryAttempt); otherwise our count since the message was published stands in.
    Idempotent: a succeeded delivery is never sent again by a repeated message."""
    store = runtime.store
    delivery_id = message.get("delivery_id") if isinstance(message, dict) else None
    delivery = store.get(DELIVERIES, delivery_id) if isinstance(delivery_id, str) else None
    if delivery is None:
        log.warning("delivery message without a known delivery (%r): acknowledged", delivery_id)
        return
    if delivery["status"] in SETTLED:
        return
    webhook = store.get(WEBHOOKS, delivery["webhook_id"])
    if webhook is None or webhook.get("tenant_id") != delivery["tenant_id"]:
        _settle(runtime, delivery, "failed", "the webhook was deleted")
        return
    if not webhook.get("enabled"):
        _settle(runtime, delivery, "failed", "the webhook is disabled")
        return
    stored_event = store.get(EVENTS, delivery["event_id"])
    if stored_event is None or "event" not in stored_event:
        _settle(runtime, delivery, "failed", "the event is no longer stored")
        return
    attempt = store.increment(DELIVERIES, delivery_id, "attempts")
    status, error = _attempt(runtime, webhook, _payload(webhook, stored_event["event"]))
    now = clock.now()
    changes: dict[str, Any] = {"last_status_code": status, "last_error": error, "updated_ts": now}
    if error is None:
        store.update(DELIVERIES, delivery_id, {**changes, "status": "succeeded", "next_attempt_ts": None})
        return
    if status == 410:
        store.update(WEBHOOKS, webhook["id"], {"enabled": False, "disabled_reason": "gone", "updated_ts": now})
        store.update(DELIVERIES, delivery_id, {**changes, "status": "failed", "next_attempt_ts": None})
        log.warning("webhook %s answered 410 Gone: disabled", webhook["id"])
        return
    window_start = max(delivery["created_ts"], delivery.get("retried_ts") or 0)
    if now - window_start >= DEAD_AFTER_SECONDS:
        store.update(DELIVERIES, delivery_id, {**changes, "status": "dead", "next_attempt_ts": None})
        log.warning("delivery %s of event %s to webhook %s is dead after %d attempts (last: %s)",
                    delivery_id, delivery["event_id"], webhook["id"], attempt, error)
        return
    delay = retry_delay(runtime, attempt)
    changes.update(status="pending", next_attempt_ts=now + delay)
    if bus_attempt is not None:   # Pub/Sub's deliveryAttempt: its dead-letter limit applies
        used, limit = bus_attempt, PUBSUB_MAX_DELIVERY_ATTEMPTS
    else:
        used, limit = attempt - int(delivery.get("attempts_at_publish") or 0), _bus_limit(runtime)
    if used >= limit - REPUBLISH_MARGIN:
        # Hand over to a fresh bus message before this one is dead-lettered by the bus itself.
        runtime.bus.publish(DELIVERIES_TOPIC, _message(delivery))
        store.update(DELIVERIES, delivery_id, {**changes, "attempts_at_publish": attempt, "queued_ts": now})
        return
    store.update(DELIVERIES, delivery_id, changes)
    log.info("delivery %s to webhook %s: attempt %d failed (%s); next in %g s",
             delivery_id, webhook["id"], attempt, error, delay)
    raise TransientError(f"delivery {delivery_id} failed ({error}); retrying", retry_after=int(delay))


def retry_delivery(runtime: Runtime, webhook: dict, delivery_id: str) -> dict:
    """Manual retry: a failed, dead or succeeded delivery goes back to pending and is published again
    (same event id, so the receiver can deduplicate); its 24 h of retries start anew. Returns the
    delivery record. NotFoundError for another webhook's delivery; ConflictError while it is still
    pending or the webhook is disabled (it would fail at once)."""
    store = runtime.store
    delivery = store.get(DELIVERIES, delivery_id) if delivery_id.startswith("dlv_") else None
    if delivery is None or delivery.get("webhook_id") != webhook["id"]:
        raise NotFoundError(f"delivery {delivery_id} not found")
    if delivery["status"] == "pending":
        raise ConflictError(f"delivery {delivery_id} is still pending; it is retried automatically")
    if not webhook.get("enabled"):
        raise ConflictError(f"webhook {webhook['id']} is disabled; enable it before retrying")
    now = clock.now()
    updated = store.update(DELIVERIES, delivery_id, {
        "status": "pending", "retried_ts": now, "next_attempt_ts": now, "updated_ts": now,
        "attempts_at_publish": delivery.get("attempts", 0), "queued_ts": now})
    try:
        runtime.bus.publish(DELIVERIES_TOPIC, _message(delivery))
    except Exception:
        # Not queued: put the status back so that a later retry by hand is not refused as pending.
        store.update(DELIVERIES, delivery_id, {"status": delivery["status"], "updated_ts": clock.now()})
        raise
    return updated


def list_deliveries(runtime: Runtime, webhook: dict, *, limit: int = 20) -> list[dict]:
    """The webhook's deliveries, newest first (index: webhook_id ASC, created_ts DESC)."""
    return runtime.store.query(DELIVERIES, [("webhook_id", "==", webhook["id"])], order_by="created_ts",
                               descending=True, limit=limit)


def sign(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
    one per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
                    for key in keys)


def _message(delivery: dict) -> dict:
    return {"delivery_id": delivery["id"], "webhook_id": delivery["webhook_id"],
            "tenant_id": delivery["tenant_id"], "event_id": delivery["event_id"]}


def _bus_limit(runtime: Runtime) -> int:
    """How many calls the bus makes before giving a message up (InlineBus says; Pub/Sub: infra's 100)."""
    limit = getattr(runtime.bus, "max_attempts", None)
    return limit if isinstance(limit, int) and limit > 0 else PUBSUB_MAX_DELIVERY_ATTEMPTS


def _payload(webhook: dict, event: dict) -> dict:
    """The body: the event as recorded, email fields hidden as the creating key's visible_fields say."""
    visible = webhook.get("visible_fields")
    data = event.get("data")
    if visible is not None and event.get("type", "").startswith("email.") and isinstance(data, dict):
        from mailbridge.core.permissions import Permissions
        hidden = Permissions(visible_fields=visible).hide_fields(data)
        data = {**hidden, "user_id": data.get("user_id")} if "user_id" in data else hidden
    return {"type": event["type"], "id": event["id"], "timestamp": event["timestamp"], "data": data}


def _settle(runtime: Runtime, delivery: dict, status: str, reason: str) -> None:
    now = clock.now()
    runtime.store.update(DELIVERIES, delivery["id"], {"status": status, "last_error": reason,
                                                      "next_attempt_ts": None, "updated_ts": now})
    log.info("delivery %s settled as %s: %s", delivery["id"], status, reason)


def _attempt(runtime: Runtime, webhook: dict, payload: dict) -> tuple[int | None, str | None]:
    """POST once: (status code or None, None on a 2xx else an error text without URL or secret).
    The body is not read: only the status matters, and a slow body cannot hold the worker."""
    import requests

    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    timestamp = int(clock.now())   # per attempt: receivers refuse timestamps older than 5 minutes
    try:
        keys = webhooks.signing_keys(runtime, webhook)
    except DecryptionError:
        # The key it was sealed with is no longer configured: retried (an operator can restore it).
        return None, "the signing secret cannot be decrypted (is MAILBRIDGE_ENCRYPTION_KEY complete?)"
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "webhook-id": payload["id"],
               "webhook-timestamp": str(timestamp), "webhook-signature": sign(keys, payload["id"], timestamp, body)}
    guarded = not webhooks.private_webhooks_allowed()
    if guarded and not webhook["url"].startswith("https://"):
        return None, "refused: the URL is not https"
    try:
        with _session(guarded).post(webhook["url"], data=body, headers=headers, timeout=TIMEOUT_SECONDS,
                                    allow_redirects=False, stream=True) as response:
            status = response.status_code
    # Fixed texts: a library's message would carry the URL, whose query may hold the customer's token.
    except BlockedAddressError as exc:
        return None, f"refused: the host's address {exc.address} is private, loopback, link-local or metadata"
    except requests.Timeout:
        return None, f"no answer within {TIMEOUT_SECONDS:g} s"
    except requests.exceptions.SSLError:
        return None, "TLS handshake or certificate verification failed"
    except requests.ConnectionError:
        return None, "could not connect"
    except requests.RequestException:
        return None, "the request failed"
    if 200 <= status < 300:
        return status, None
    if 300 <= status < 400:
        return status, f"answered {status}; redirects are not followed"
    return status, f"answered {status}"


class BlockedAddressError(Exception):
    """The socket connected to an address webhooks may not reach (raised before any byte is sent)."""

    def __init__(self, address: str):
        super().__init__(f"address {address} is not allowed")
        self.address = address


_sessions: dict[bool, Any] = {}
_sessions_lock = threading.Lock()


def _session(guarded: bool):
    """One requests session per instance (connection reuse), with or without the SSRF guard."""
    with _sessions_lock:
        if guarded not in _sessions:
            _sessions[guarded] = _build_session(guarded)
        return _sessions[guarded]


def _build_session(guarded: bool):
    """A session that never uses the environment's proxies (the peer must be the webhook's host) and,
    when `guarded`, whose connections check `getpeername()` right after connecting — on every
    address urllib3 tries, so DNS answers that change between validation and delivery are covered.
    Built here, not at import: the `manage` function imports this module without sending anything."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    session = requests.Session()
    session.trust_env = False
    if not guarded:
        return session

    class PeerCheck:
        def _new_conn(self):
            sock = super()._new_conn()
            peer = sock.getpeername()[0]
            if not webhooks.address_allowed(peer):
                sock.close()
                raise BlockedAddressError(peer)
            return sock

    class GuardedHTTPConnection(PeerCheck, HTTPConnection):
        pass

    class GuardedHTTPSConnection(PeerCheck, HTTPSConnection):
        pass

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}

    adapter = GuardedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
