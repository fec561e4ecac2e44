"""Webhook endpoints (API.md section 7): records, URL and address rules, secrets encrypted at rest, rotation.

A record in WEBHOOKS:
    tenant_id, url, events (None = every type, present and future), connection_id (None = all),
    description, enabled, visible_fields (the creating key's restriction, applied to email payloads)
    secret            ciphertext of runtime.cipher, AAD = the webhook id ("whsec_" + base64 of 32 bytes)
    previous_secret   the secret before the last rotation (same AAD), signing beside the new one
    secret_rotated_ts until secret_rotated_ts + 24 h; secret_version: +1 per rotation (compare-and-set)
    created_ts, updated_ts, disabled_reason ("gone": the endpoint answered 410)

The SSRF rule lives here too (`address_allowed`): https only, and every address the host resolves
to must be public. core/delivery.py applies the same predicate to the address actually connected to,
so a host whose DNS changes after creation is still refused. MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS=1
(local development only) lifts both rules.
"""
from __future__ import annotations

import base64
import ipaddress
import os
import secrets as pysecrets
import socket
from urllib.parse import urlsplit

from mailbridge import clock
from mailbridge.core.events import EVENT_TYPES
from mailbridge.errors import ConflictError, InvalidRequestError, NotFoundError
from mailbridge.runtime import Runtime
from mailbridge.store.base import WEBHOOKS

SECRET_PREFIX = "whsec_"
ROTATION_OVERLAP_SECONDS = 24 * 3600
MAX_URL_LENGTH = 2048
# Names that reach a cloud metadata server whatever they resolve to from here.
_METADATA_HOSTS = {"metadata.google.internal", "metadata.goog", "metadata"}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def private_webhooks_allowed() -> bool:
    """MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS=1: http and private addresses allowed (local development)."""
    return os.environ.get("MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS", "").strip() == "1"


def address_allowed(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for a globally routable unicast address: private, loopback, link-local (the metadata
    server 169.254.169.254 included), CGNAT 100.64/10, reserved, multicast and unspecified are refused,
    also when wrapped in IPv6 (v4-mapped, 6to4, NAT64)."""
    try:
        ip = ipaddress.ip_address(str(address).split("%", 1)[0])   # drop an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None and not address_allowed(inner):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def validate_url(url: str, *, allow_private: bool | None = None) -> str:
    """The URL if webhooks may be sent to it; InvalidRequestError (422, field `url`) otherwise.

    Resolves the host now (a name that resolves to nothing is refused too); the delivery checks the
    connected address again. The message names the offending address, never the URL's query."""
    allow_private = private_webhooks_allowed() if allow_private is None else allow_private
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidRequestError(f"url: an absolute https URL of at most {MAX_URL_LENGTH} characters",
                                  field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequestError("url: not a valid URL", field="url") from None
    allowed_schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed_schemes or not parts.hostname:
        raise InvalidRequestError("url: must be an absolute https URL", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequestError("url: credentials in the URL are not allowed", field="url")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise InvalidRequestError("url: must not contain spaces or control characters", field="url")
    if allow_private:
        return url
    host = parts.hostname.rstrip(".").lower()
    if host in _METADATA_HOSTS:
        raise InvalidRequestError(f"url: {host} is a metadata address", field="url")
    for address in _resolve(host, port or 443):
        if not address_allowed(address):
            raise InvalidRequestError(f"url: {host} resolves to {address}, a private, loopback, link-local "
                                      "or metadata address", field="url")
    return url


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise InvalidRequestError(f"url: the host {host} does not resolve", field="url") from None
    return sorted({info[4][0] for info in infos})


def new_secret() -> str:
    """`whsec_` + standard base64 of 32 random bytes; those bytes are the HMAC key."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret."""
    return base64.b64decode(secret[len(SECRET_PREFIX):])


def public_view(record: dict) -> dict:
    """The API's webhook object: never a secret or ciphertext."""
    events = record.get("events")
    return {"id": record["id"], "url": record["url"],
            "events": list(events) if events is not None else list(EVENT_TYPES),
            "connection_id": record.get("connection_id"), "enabled": bool(record.get("enabled")),
            "description": record.get("description"), "created_at": clock.rfc3339(record["created_ts"])}


def create_webhook(runtime: Runtime, *, tenant_id: str, url: str, events: list[str] | None = None,
                   connection_id: str | None = None, description: str | None = None,
                   visible_fields: list[str] | None = None) -> dict:
    """Create an enabled webhook; returns its public view plus `secret` (shown this once).
    The caller has checked that `connection_id` is the tenant's and visible to the key."""
    url = validate_url(url)
    webhook_id = "wh_" + pysecrets.token_hex(12)
    secret = new_secret()
    now = clock.now()
    record = {"tenant_id": tenant_id, "url": url, "events": _events(events), "connection_id": connection_id,
              "description": description, "enabled": True, "visible_fields": visible_fields,
              "secret": runtime.cipher.encrypt(secret, webhook_id), "previous_secret": None,
              "secret_rotated_ts": None, "secret_version": 1, "disabled_reason": None,
              "created_ts": now, "updated_ts": now}
    stored = runtime.store.put(WEBHOOKS, webhook_id, record)
    return {**public_view(stored), "secret": secret}


def _events(events: list[str] | None) -> list[str] | None:
    if events is None:
        return None
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown or not events:
        raise InvalidRequestError(f"events: one or more of {', '.join(EVENT_TYPES)}", field="events")
    return list(dict.fromkeys(events))


def get_webhook(runtime: Runtime, tenant_id: str, webhook_id: str) -> dict:
    """The tenant's webhook record; another tenant's or a missing one is NotFoundError."""
    record = runtime.store.get(WEBHOOKS, webhook_id) if webhook_id.startswith("wh_") else None
    if record is None or record.get("tenant_id") != tenant_id:
        raise NotFoundError(f"webhook {webhook_id} not found")
    return record


def list_webhooks(runtime: Runtime, tenant_id: str) -> list[dict]:
    """The tenant's webhook records, oldest first."""
    found = runtime.store.query(WEBHOOKS, [("tenant_id", "==", tenant_id)])
    return sorted(found, key=lambda r: (r.get("created_ts", 0), r["id"]))


def update_webhook(runtime: Runtime, record: dict, changes: dict) -> dict:
    """Apply PATCH fields (url, events, connection_id, description, enabled) and return the record.
    The URL is validated as on create; re-enabling clears `disabled_reason`."""
    update: dict = {}
    if "url" in changes:
        update["url"] = validate_url(changes["url"])
    if "events" in changes:
        update["events"] = _events(changes["events"])
    for field in ("connection_id", "description"):
        if field in changes:
            update[field] = changes[field]
    if "enabled" in changes:
        update["enabled"] = bool(changes["enabled"])
        if update["enabled"]:
            update["disabled_reason"] = None
    if not update:
        return record
    update["updated_ts"] = clock.now()
    return runtime.store.update(WEBHOOKS, record["id"], update)


def delete_webhook(runtime: Runtime, record: dict) -> None:
    """Delete the webhook: its queued deliveries find it gone and settle as failed."""
    runtime.store.delete(WEBHOOKS, record["id"])


def rotate_secret(runtime: Runtime, record: dict) -> str:
    """A new secret (returned, shown once); the current one keeps signing beside it for 24 h. A second
    rotation within those 24 h drops the oldest. Compare-and-set on `secret_version`, so two racing
    rotations never both believe their secret is current (ConflictError if it keeps racing)."""
    store = runtime.store
    for _ in range(5):
        current = store.get(WEBHOOKS, record["id"])
        if current is None:
            raise NotFoundError(f"webhook {record['id']} not found")
        secret, now = new_secret(), clock.now()
        version = current.get("secret_version") or 1
        data = {k: v for k, v in current.items() if k != "id"}
        data.update({"previous_secret": current["secret"], "secret_rotated_ts": now,
                     "secret": runtime.cipher.encrypt(secret, record["id"]),
                     "secret_version": version + 1, "updated_ts": now})
        if store.compare_and_set(WEBHOOKS, record["id"], "secret_version", version, data):
            return secret
    raise ConflictError("the secret is being rotated by another request; try again")


def signing_keys(runtime: Runtime, record: dict, now: float | None = None) -> list[bytes]:
    """HMAC keys to sign with: the current secret's, then the previous one's while its 24 h last."""
    now = clock.now() if now is None else now
    keys = [secret_key(runtime.cipher.decrypt(record["secret"], record["id"]))]
    rotated = record.get("secret_rotated_ts")
    if record.get("previous_secret") and rotated is not None and now < rotated + ROTATION_OVERLAP_SECONDS:
        keys.append(secret_key(runtime.cipher.decrypt(record["previous_secret"], record["id"])))
    return keys
