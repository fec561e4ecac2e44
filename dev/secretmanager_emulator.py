"""A tiny local Secret Manager speaking REST v1 `versions/*:access`, for tests and `make dev`.

Wire format (cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets.versions/access):

    GET /v1/projects/{project}/secrets/{secret}/versions/{version}:access
    200 {"name": "projects/{project}/secrets/{secret}/versions/2",
         "payload": {"data": "<standard base64>", "dataCrc32c": "<int64 as a decimal string>"}}
    404 {"error": {"code": 404, "message": "Secret [...] not found or has no versions.", "status": "NOT_FOUND"}}

`version` is `latest` or a version number (1, 2, ...). Any project is accepted; no authentication is checked.

In-process:  with running_emulator({"admin-api-key": "k"}) as emu: ... emu.endpoint, emu.access_count
Command line: python -m dev.secretmanager_emulator --port 8085 --secret admin-api-key=k [--secret ...]
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import threading
from typing import Iterator, Mapping

import google_crc32c

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

_ACCESS_RE = re.compile(r"^/v1/projects/([^/]+)/secrets/([^/]+)/versions/([^/:]+):access$")
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def crc32c(data: bytes) -> int:
    """CRC-32C as Secret Manager computes it (google-crc32c)."""
    return google_crc32c.value(data)


class SecretManagerEmulator:
    """The emulator's state and WSGI app: versions per secret, a log of access calls, injected failures."""

    def __init__(self, secrets: Mapping[str, str | bytes] | None = None):
        self._lock = threading.Lock()
        self._versions: dict[str, list[bytes]] = {}
        self._failures: list[tuple[int, str]] = []
        self._bad_crc = False
        self.accessed: list[str] = []  # resource names asked for, in order (tests read it)
        for name, value in (secrets or {}).items():
            self.add_version(name, value)

    @property
    def access_count(self) -> int:
        """How many `:access` calls arrived (failed and unknown ones included)."""
        with self._lock:
            return len(self.accessed)

    def add_version(self, name: str, value: str | bytes) -> int:
        """Add a version to secret `name` (creating it); returns the new version number."""
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        with self._lock:
            self._versions.setdefault(name, []).append(data)
            return len(self._versions[name])

    def fail_next(self, status: int = 500, message: str = "Internal error encountered.", times: int = 1) -> None:
        """Answer the next `times` access calls with `status` in Google's error shape."""
        with self._lock:
            self._failures.extend([(status, message)] * times)

    def corrupt_checksums(self, on: bool = True) -> None:
        """Send a wrong dataCrc32c from now on (to prove clients verify it)."""
        with self._lock:
            self._bad_crc = on

    def __call__(self, environ, start_response):
        return self._handle(Request(environ))(environ, start_response)

    def _handle(self, request: Request) -> Response:
        match = _ACCESS_RE.match(request.path)
        if not match:
            return _error(404, f"Method not found: {request.path}")
        if request.method != "GET":
            return _error(405, f"Method {request.method} not allowed.")
        project, secret, version = match.groups()
        with self._lock:
            self.accessed.append(f"projects/{project}/secrets/{secret}/versions/{version}")
            failure = self._failures.pop(0) if self._failures else None
            versions = list(self._versions.get(secret, ()))
            bad_crc = self._bad_crc
        if failure:
            return _error(*failure)
        if not versions:
            return _error(404, f"Secret [projects/{project}/secrets/{secret}] not found or has no versions.")
        if version == "latest":
            number = len(versions)
        elif version.isdigit() and 1 <= int(version) <= len(versions):
            number = int(version)
        else:
            return _error(404, f"Secret Version [projects/{project}/secrets/{secret}/versions/{version}] "
                               "not found.")
        data = versions[number - 1]
        checksum = crc32c(data) ^ (1 if bad_crc else 0)
        body = {"name": f"projects/{project}/secrets/{secret}/versions/{number}",
                # proto3 JSON: bytes as standard base64, int64 as a decimal string
                "payload": {"data": base64.b64encode(data).decode("ascii"), "dataCrc32c": str(checksum)}}
        return Response(json.dumps(body), status=200, mimetype="application/json")


def _error(status: int, message: str) -> Response:
    body = {"error": {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}}
    return Response(json.dumps(body), status=status, mimetype="application/json")


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # one line per request would drown test output
        pass


class RunningEmulator:
    """A SecretManagerEmulator served on 127.0.0.1 in a background thread."""

    def __init__(self, emulator: SecretManagerEmulator, port: int = 0):
        self.emulator = emulator
        self._server = make_server("127.0.0.1", port, emulator, threaded=True,
                                   request_handler=_QuietHandler)
        self.port = self._server.server_port
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="secretmanager-emulator", daemon=True)

    def __getattr__(self, item):  # emu.access_count, emu.fail_next(...) straight from the handle
        if item == "emulator":  # not set yet: fail plainly instead of recursing
            raise AttributeError(item)
        return getattr(self.emulator, item)

    def start(self) -> "RunningEmulator":
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the command line) until interrupted."""
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def running_emulator(secrets: Mapping[str, str | bytes] | None = None, port: int = 0) -> Iterator[RunningEmulator]:
    """Serve a fresh emulator holding `secrets` on a free port (or `port`) for the duration of the block."""
    running = RunningEmulator(SecretManagerEmulator(secrets), port).start()
    try:
        yield running
    finally:
        running.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--secret", action="append", default=[], metavar="NAME=VALUE",
                        help="a secret to serve (repeatable)")
    args = parser.parse_args(argv)
    secrets = {}
    for item in args.secret:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error("--secret wants NAME=VALUE")
        secrets[name] = value
    running = RunningEmulator(SecretManagerEmulator(secrets), args.port)
    # Names only: the values are secrets even here.
    print(f"Secret Manager emulator on {running.endpoint} serving {sorted(secrets)}", flush=True)
    running.serve_forever()


if __name__ == "__main__":
    main()
