"""Blueprint of the `gmail_push` Cloud Function (API.md section 1); its routes arrive with their issue."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("gmail_push", __name__)
