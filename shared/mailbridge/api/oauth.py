"""Blueprint of the `oauth` Cloud Function (API.md section 1); its routes arrive with their issue."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("oauth", __name__)
