"""`GET /openapi.yaml`: the API's own OpenAPI document, without auth (served with the `manage` function)."""
from __future__ import annotations

import functools
from pathlib import Path

from flask import Blueprint, Response

from mailbridge.errors import MailbridgeError

bp = Blueprint("docs", __name__)

_PACKAGE = Path(__file__).resolve().parents[1]
# Where the one document lives: a deployed function archive carries it inside the package
# (infra/archive.py adds the repository's file as mailbridge/openapi.yaml); a working copy or an
# editable install finds it at the repository root, two levels above the package (shared/mailbridge).
CANDIDATES = (_PACKAGE / "openapi.yaml", _PACKAGE.parents[1] / "openapi.yaml")


@functools.lru_cache(maxsize=1)
def document() -> bytes:
    """The document's bytes, read once per instance. A missing file raises MailbridgeError (500,
    internal_error) and is looked for again on the next call (lru_cache keeps no exceptions)."""
    for path in CANDIDATES:
        if path.is_file():
            return path.read_bytes()
    raise MailbridgeError("the OpenAPI document is not part of this deployment")


@bp.get("/openapi.yaml")
def openapi_document() -> Response:
    resp = Response(document(), mimetype="application/yaml")
    # The document changes only with a deployment; let browsers and tools keep it briefly.
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp
