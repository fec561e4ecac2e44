"""Time in one place: UTC now, RFC 3339 formatting and parsing (API.md's timestamp form)."""
from __future__ import annotations

import time
from datetime import datetime, timezone


def now() -> float:
    """Seconds since the epoch; the one clock every expiry and window is measured on."""
    return time.time()


def rfc3339(ts: float | None) -> str | None:
    """`2026-02-07T14:30:00Z` (whole seconds, UTC), or None for None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """Parse an RFC 3339 timestamp (`Z` or an offset) to epoch seconds; ValueError if it is not one."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("timestamp needs a time zone (Z or +hh:mm)")
    return value.timestamp()
