"""Events out: one interface (`bus.base.Bus`), an inline backend locally and Pub/Sub in the cloud."""
from __future__ import annotations

from typing import TYPE_CHECKING

from mailbridge.bus.base import Bus

if TYPE_CHECKING:
    from mailbridge.runtime import Runtime


def open_bus(kind: str, *, project: str = "", runtime: "Runtime | None" = None) -> Bus:
    """`inline` (the embedded default: handlers of bus/handlers.py run in this process, given
    `runtime`) or `pubsub` (MAILBRIDGE_BUS; the handlers run behind the push routes). Lazy imports;
    ValueError for an unknown kind or a Pub/Sub bus without a project."""
    if kind == "inline":
        from mailbridge.bus.handlers import HANDLERS
        from mailbridge.bus.inline import InlineBus
        bus: Bus = InlineBus(HANDLERS)
    elif kind == "pubsub":
        from mailbridge.bus.pubsub import PubSubBus
        bus = PubSubBus(project=project)
    else:
        raise ValueError(f"MAILBRIDGE_BUS: unknown bus {kind!r} (inline or pubsub)")
    if runtime is not None:
        bus.bind(runtime)
    return bus
