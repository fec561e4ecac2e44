"""Events out: one interface (`bus.base.Bus`), an inline backend locally and Pub/Sub in the cloud."""
from __future__ import annotations

from mailbridge.bus.base import Bus


def open_bus(kind: str, *, project: str = "") -> Bus:
    """`inline` (the embedded default) or `pubsub` (MAILBRIDGE_BUS); lazy imports."""
    if kind == "inline":
        from mailbridge.bus.inline import InlineBus
        return InlineBus()
    if kind == "pubsub":
        from mailbridge.bus.pubsub import PubSubBus  # arrives with the real-time issue
        return PubSubBus(project=project)
    raise ValueError(f"MAILBRIDGE_BUS: unknown bus {kind!r} (inline or pubsub)")
