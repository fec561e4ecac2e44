"""Blueprint of the `read` Cloud Function (API.md section 1); its routes arrive with their issue."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("read", __name__)
