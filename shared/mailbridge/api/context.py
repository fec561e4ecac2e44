"""Access to the current app's Runtime from inside a request."""
from __future__ import annotations

from flask import current_app

from mailbridge.runtime import Runtime, default_runtime

EXTENSION = "mailbridge"


def runtime() -> Runtime:
    """The Runtime given to create_app, or the instance-wide one built from the environment."""
    return current_app.extensions.get(EXTENSION) or default_runtime()
