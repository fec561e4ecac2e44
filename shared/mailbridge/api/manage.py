"""Blueprint of the `manage` Cloud Function: /v1/api-keys, /v1/connections, /v1/webhooks — one
module of routes each, mounted under this blueprint."""
from __future__ import annotations

from flask import Blueprint

from mailbridge.api import api_keys, connections, webhooks

bp = Blueprint("manage", __name__)
bp.register_blueprint(api_keys.bp)
bp.register_blueprint(connections.bp)
bp.register_blueprint(webhooks.bp)
