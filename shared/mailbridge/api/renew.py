"""Blueprint of the `renew` Cloud Function (API.md section 1); its routes arrive with their issue."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("renew", __name__)
