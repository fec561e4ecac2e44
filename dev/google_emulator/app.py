"""The Flask app factory and an in-process threaded server for tests."""
from __future__ import annotations

import threading

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler, make_server

from mailbridge.errors import MailbridgeError

from .errors import error_body, google_error_response
from .state import EmulatorState


def create_app(state: EmulatorState) -> Flask:
    """One app for sign-in, Gmail, uploads, batch and /emulator controls, answering errors like Google."""
    from . import controls, gmail_batch, gmail_messages, gmail_upload, gmail_users, oauth

    app = Flask("google_emulator", static_folder=None)
    app.config["EMULATOR_STATE"] = state
    app.config["MAX_CONTENT_LENGTH"] = None  # size limits are Gmail's, checked per endpoint
    for module in (oauth, gmail_messages, gmail_users, gmail_upload, gmail_batch, controls):
        app.register_blueprint(module.bp)

    @app.errorhandler(MailbridgeError)
    def _mailbridge_error(exc: MailbridgeError):
        return google_error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        message = "Requested entity was not found." if exc.code == 404 else exc.description
        return error_body(exc.code or 500, message or exc.name), exc.code

    return app


class QuietRequestHandler(WSGIRequestHandler):
    """Access log without query strings: `/revoke?token=…` must never put a token in a log."""

    def log_request(self, code="-", size="-") -> None:
        path = self.path.split("?", 1)[0]
        self.log("info", '"%s %s" %s %s', self.command, path, getattr(code, "value", code), size)


class RunningServer:
    """`base_url, stop = run_in_thread(state)` or `with run_in_thread(state) as (base_url, stop):`."""

    def __init__(self, base_url: str, stop):
        self.base_url = base_url
        self.stop = stop

    def __iter__(self):
        return iter((self.base_url, self.stop))

    def __enter__(self):
        return self.base_url, self.stop

    def __exit__(self, *exc) -> None:
        self.stop()


def run_in_thread(state: EmulatorState, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve `create_app(state)` from a daemon thread (werkzeug, threaded); `stop()` is idempotent."""
    server = make_server(host, port, create_app(state), threaded=True,
                         request_handler=QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="google-emulator", daemon=True)
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            state.close()

    return RunningServer(f"http://{host}:{server.server_port}", stop)
