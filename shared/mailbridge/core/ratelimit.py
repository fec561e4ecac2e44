"""Per-key rate limiting in fixed minute and hour windows, counted in the store so that the limit holds
across every function instance (API.md section 2)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from mailbridge import clock
from mailbridge.core.permissions import RateLimit
from mailbridge.store.base import RATE_LIMITS, Store

_WINDOWS = (("m", 60), ("h", 3600))


@dataclass(frozen=True)
class RateState:
    """The window closest to its limit: what the RateLimit-* headers report."""
    limit: int
    remaining: int
    reset: int          # whole seconds until that window resets
    exceeded: bool

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset)}


def count_request(store: Store, key_id: str, limits: RateLimit) -> RateState:
    """Count one request against both windows and say whether it is over either limit.
    Rejected requests count too (a client hammering past its limit stays limited)."""
    now = clock.now()
    states = []
    for (suffix, length), limit in zip(_WINDOWS, (limits.per_minute, limits.per_hour)):
        window = int(now // length)
        end = (window + 1) * length
        used = store.increment(RATE_LIMITS, f"{key_id}:{suffix}:{window}", "count", 1,
                               expires_at=end + 60)
        states.append(RateState(limit=limit, remaining=max(0, limit - used),
                                reset=max(1, math.ceil(end - now)), exceeded=used > limit))
    exceeded = [s for s in states if s.exceeded]
    if exceeded:
        # The caller may retry once every exceeded window has reset.
        worst = max(exceeded, key=lambda s: s.reset)
        return worst
    return min(states, key=lambda s: (s.remaining / s.limit, s.reset))
