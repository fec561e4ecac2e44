"""Which blueprint serves which Cloud Function (API.md section 1)."""
from __future__ import annotations

import importlib

from flask import Blueprint

# function name -> module holding its blueprint `bp`
FUNCTIONS = {
    "oauth": "mailbridge.api.oauth",
    "send": "mailbridge.api.send",
    "read": "mailbridge.api.read",
    "manage": "mailbridge.api.manage",
    "gmail_push": "mailbridge.api.gmail_push",
    "graph_push": "mailbridge.api.graph_push",
    "deliver": "mailbridge.api.deliver",
    "renew": "mailbridge.api.renew",
}

# The largest request body each function accepts; /v1/send carries up to 25 MiB of mail as base64.
MAX_BODY_BYTES = {"send": 36 * 1024 * 1024}
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def blueprint(name: str) -> Blueprint:
    if name not in FUNCTIONS:
        raise ValueError(f"unknown function {name!r}; one of {', '.join(FUNCTIONS)}")
    return importlib.import_module(FUNCTIONS[name]).bp
