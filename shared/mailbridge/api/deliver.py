"""Blueprint of the `deliver` Cloud Function (API.md section 1); its routes arrive with their issue."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("deliver", __name__)
