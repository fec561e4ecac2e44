"""The one table of bus handlers: topic → "module:function", imported on first use."""
from __future__ import annotations

import importlib
import threading

from mailbridge.bus.base import DELIVERIES_TOPIC, RENEWALS_TOPIC, Handler

# Each handler is `handle(runtime, message) -> None` (see bus.base.Handler). In the cloud the same
# functions run behind the push routes (/internal/deliver, /internal/renew); locally the inline bus
# calls them. Gmail's own topic has no entry: its push route (/push/gmail) is the only consumer.
HANDLERS: dict[str, str] = {
    DELIVERIES_TOPIC: "mailbridge.core.delivery:handle_delivery",
    RENEWALS_TOPIC: "mailbridge.core.renewal:handle_renewal",
}

_resolved: dict[str, Handler] = {}
_lock = threading.Lock()


def resolve(target: str | Handler) -> Handler:
    """The function an import string ("package.module:function") names, imported once and cached;
    a callable is returned as it is. ImportError/AttributeError if the string names nothing."""
    if callable(target):
        return target
    with _lock:
        if target not in _resolved:
            module_name, _, attribute = target.partition(":")
            if not module_name or not attribute:
                raise ValueError(f"bus handler {target!r}: expected 'package.module:function'")
            _resolved[target] = getattr(importlib.import_module(module_name), attribute)
        return _resolved[target]
