"""The app factory, shared by every Cloud Function entry point and by `mailbridge serve`."""
from __future__ import annotations

from typing import Callable, Iterable

import flask
from flask import Flask, jsonify, request

from mailbridge.api.auth import add_rate_headers
from mailbridge.api.context import EXTENSION
from mailbridge.api.docs import bp as docs
from mailbridge.api.errors import register_error_handlers
from mailbridge.api.functions import DEFAULT_MAX_BODY_BYTES, FUNCTIONS, MAX_BODY_BYTES, blueprint
from mailbridge.runtime import Runtime


def create_app(functions: Iterable[str] = tuple(FUNCTIONS), runtime: Runtime | None = None) -> Flask:
    """A Flask app serving the routes of the named functions (all of them by default), `/healthz`,
    and the error envelope for everything that goes wrong. `runtime` None: built from the environment."""
    names = list(functions)
    # No static folder: Flask would otherwise register an undocumented /static/<path:filename> route.
    app = Flask("mailbridge", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = DEFAULT_MAX_BODY_BYTES
    app.json.sort_keys = False
    if runtime is not None:
        app.extensions[EXTENSION] = runtime
    register_error_handlers(app)
    app.before_request(_limit_body_size)
    app.after_request(add_rate_headers)
    app.add_url_rule("/healthz", "healthz", lambda: jsonify({"ok": True}), methods=["GET"])
    for name in names:
        app.register_blueprint(blueprint(name))
    if "manage" in names:  # the document names `manage` as its server, as the gateway routes it
        app.register_blueprint(docs)
    return app


def _limit_body_size() -> None:
    """Each function's own body limit, also when `mailbridge serve` mounts them all on one app."""
    request.max_content_length = MAX_BODY_BYTES.get(request.blueprint or "", DEFAULT_MAX_BODY_BYTES)


def entry_point(name: str, runtime: Runtime | None = None) -> Callable[[flask.Request], flask.Response]:
    """The functions-framework HTTP handler of one function. The app is built on the first request.

    The framework's own request object is shared with our app (building a second one from the WSGI
    environ would re-read a body the framework has already consumed)."""
    app: Flask | None = None

    def handle(request: flask.Request) -> flask.Response:
        nonlocal app
        if app is None:
            app = create_app([name], runtime)
        with flask.ctx.RequestContext(app, request.environ, request=request):
            return app.full_dispatch_request()

    handle.__name__ = f"handle_{name}"
    return handle
