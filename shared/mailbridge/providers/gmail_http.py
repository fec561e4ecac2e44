"""The Gmail adapter's transport: a discovery service per endpoint, per-call tokens, retries, batches, uploads."""
from __future__ import annotations

import io
import json
import math
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Callable, Sequence

import httplib2
from googleapiclient.errors import BatchError, HttpError
from googleapiclient.http import BatchHttpRequest, HttpRequest, MediaIoBaseUpload
from tenacity import Retrying, retry_if_exception_type, wait_exponential_jitter

from mailbridge.config import Settings
from mailbridge.errors import MailbridgeError, ProviderUnavailableError
from mailbridge.providers.base import AccessToken, CallStats
from mailbridge.providers.gmail_errors import Transient, classify, transport_error

HTTP_TIMEOUT = 60.0                   # seconds per upstream request (a 25 MiB upload must fit)
BATCH_SIZE = 50                       # Gmail allows 100 per batch but recommends at most 50
# Gmail quota units per method (FACTS.md); the rest cost 5; a batch costs only its calls.
QUOTA_UNITS = {"batch": 0, "gmail.users.getProfile": 1, "gmail.users.history.list": 2,
               "gmail.users.messages.send": 100, "gmail.users.watch": 100, "gmail.users.stop": 50,
               "gmail.users.threads.get": 10, "gmail.users.threads.list": 10, "gmail.users.messages.delete": 10}
# Transport failures worth a retry (httplib2 raises the socket's and http.client's own errors).
_TRANSPORT = (OSError, HTTPException, httplib2.HttpLib2Error, BatchError)

_lock = threading.Lock()
_services: dict[str, "_Resources"] = {}  # endpoint → the discovery service's resources, once per process
_local = threading.local()            # httplib2.Http is not thread-safe: one per thread


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of 429/5xx/timeouts: exponential backoff with jitter, at least any Retry-After asked for.

    A Retry-After above `max_delay` is not waited for: the call fails at once with that retry_after.
    """
    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 4.0
    max_total_sleep: float = 8.0
    sleep: Callable[[float], None] = time.sleep


class _Resources:
    """The service's resources, made once: googleapiclient builds every method of a resource each
    time `service.users().messages()` is called (~3 ms), and they hold no per-call state."""

    def __init__(self, service):
        self.users = service.users()
        self.messages = self.users.messages()
        self.attachments = self.messages.attachments()
        self.threads = self.users.threads()
        self.history = self.users.history()


def _service(endpoint: str) -> _Resources:
    """The discovery-based Gmail service for `endpoint` (offline, bundled document), built once."""
    resources = _services.get(endpoint)
    if resources is None:
        from googleapiclient.discovery import build
        with _lock:
            resources = _services.get(endpoint) or _Resources(build(
                "gmail", "v1", static_discovery=True, client_options={"api_endpoint": endpoint},
                http=httplib2.Http()))  # never used: each call passes this thread's Http and its own token
            _services[endpoint] = resources
    return resources


def _combined_bundle(extra: str) -> str:
    """The system roots plus `extra` in one file (httplib2 takes one), made once per instance."""
    from mailbridge import upstream
    try:
        return upstream.combined_ca_bundle(extra)
    except OSError as exc:
        raise MailbridgeError("MAILBRIDGE_CA_BUNDLE cannot be read") from exc


def _http(ca_bundle: str | None) -> httplib2.Http:
    """This thread's Http (kept-alive connections) for the CA configuration."""
    pool = _local.__dict__.setdefault("http", {})
    if ca_bundle not in pool:
        pool[ca_bundle] = httplib2.Http(timeout=HTTP_TIMEOUT,
                                        ca_certs=_combined_bundle(ca_bundle) if ca_bundle else None)
    return pool[ca_bundle]


class _Batch(BatchHttpRequest):
    """A batch that re-authorizes 401 sub-requests through the connection's token callable.

    googleapiclient re-sends 401 sub-requests once after refreshing the credentials of the Http;
    ours live outside the Http (per-connection tokens on a shared service), so we apply them here.
    """

    def __init__(self, batch_uri: str, bearer: "_Bearer"):
        super().__init__(batch_uri=batch_uri)
        self._bearer = bearer
        self.reauthorized: list[str] = []

    def _refresh_and_apply_credentials(self, request, http) -> None:
        request.headers["authorization"] = self._bearer.refreshed()
        self.reauthorized.append(request.methodId)


class _Bearer:
    """The connection's token for one logical operation: fetched once, force-refreshed at most once."""

    def __init__(self, access_token: AccessToken):
        self._access_token = access_token
        self._value: str | None = None
        self.forced = False

    def current(self) -> str:
        if self._value is None:
            self._value = "Bearer " + self._access_token()
        return self._value

    def refreshed(self) -> str:
        if not self.forced:
            self.forced = True
            self._value = "Bearer " + self._access_token(force=True)
        return self.current()


class GmailTransport:
    """Runs googleapiclient requests for one connection against the configured endpoint.

    Every request carries the connection's bearer token (the service is shared by all connections);
    a 401 forces one token refresh and a retry; 429/5xx/timeouts are retried per `retry`, then raise
    ProviderUnavailableError(retry_after); other refusals are mapped by `classify`, raised `from` the
    HttpError. ReauthRequiredError from the token callable passes through. `stats` counts round trips,
    quota units and calls per method id ("batch" for the batch round trip itself).
    """

    def __init__(self, access_token: AccessToken, settings: Settings, retry: RetryPolicy | None = None):
        self.endpoint = settings.gmail_api_endpoint.rstrip("/")
        self._ca_bundle = settings.ca_bundle
        self._access_token = access_token
        self.retry = retry or RetryPolicy()
        self.stats = CallStats()
        self._stats_lock = threading.Lock()

    @property
    def api(self) -> _Resources:
        """The shared service's resources (`.users`, `.messages`, `.attachments`, `.threads`): build
        requests from them, run them with `call`/`batch`."""
        return _service(self.endpoint)

    def call(self, make: Callable[[], HttpRequest], *, what: str = "", idempotent: bool = True) -> Any:
        """Execute the request `make()` builds (rebuilt per attempt) and return its parsed JSON."""
        bearer = _Bearer(self._access_token)

        def attempt() -> Any:
            while True:
                request = make()
                request.headers["authorization"] = bearer.current()
                self._count([request.methodId])
                try:
                    return request.execute(http=_http(self._ca_bundle))
                except HttpError as exc:
                    if exc.resp.status == 401 and not bearer.forced:
                        bearer.refreshed()
                        continue
                    raise classify(exc, what=what, idempotent=idempotent) from exc
                except _TRANSPORT as exc:
                    raise transport_error(exc, idempotent) from exc

        return self._retrying(attempt)

    def batch(self, makes: dict[str, Callable[[], HttpRequest]], *, what: str = "") -> dict[str, Any]:
        """Run independent reads in ONE batch round trip (per BATCH_SIZE) → key → JSON or mailbridge error.

        Only sub-requests that failed with 429/5xx are sent again (a new batch per retry); a 401 is
        re-sent once with a refreshed token; other failures come back as the error of that key.
        """
        results: dict[str, Any] = {}
        bearer = _Bearer(self._access_token)
        keys = list(dict.fromkeys(makes))
        for start in range(0, len(keys), BATCH_SIZE):
            chunk = keys[start:start + BATCH_SIZE]
            self._retrying(lambda: self._batch_once(chunk, makes, results, bearer, what))
        return results

    def _batch_once(self, keys, makes, results: dict, bearer: _Bearer, what: str) -> None:
        failures: list[Transient] = []

        def done(key: str, response: Any, exc: Exception | None) -> None:
            if exc is None:
                results[key] = response
                return
            error = classify(exc, what=f"{what} {key}".strip()) if isinstance(exc, HttpError) \
                else Transient(None, None)
            if isinstance(error, Transient):
                failures.append(error)
            else:
                error.__cause__ = exc
                results[key] = error

        batch = _Batch(self.endpoint + "/batch/gmail/v1", bearer)
        methods = []
        for key in (k for k in keys if k not in results):
            request = makes[key]()
            request.headers["authorization"] = bearer.current()
            batch.add(request, callback=done, request_id=key)
            methods.append(request.methodId)
        self._count(["batch", *methods])
        try:
            batch.execute(http=_http(self._ca_bundle))
        except HttpError as exc:
            raise classify(exc, what="batch") from exc
        except _TRANSPORT as exc:
            raise transport_error(exc, True) from exc
        finally:
            if batch.reauthorized:
                self._count(["batch", *batch.reauthorized])
        if failures:
            asked = [f.retry_after for f in failures if f.retry_after is not None]
            raise Transient(failures[0].status, max(asked) if asked else None)

    def upload_request(self, raw: bytes, metadata: dict) -> HttpRequest:
        """messages.send through the upload endpoint of the CONFIGURED endpoint (scheme, host and path).

        Without metadata: uploadType=media. With it (threadId): uploadType=multipart, whose body we
        write ourselves — googleapiclient's generator re-encodes a message/rfc822 part as ASCII text
        and fails on 8-bit bytes, and the message must reach Gmail byte for byte.
        """
        media = MediaIoBaseUpload(io.BytesIO(raw), mimetype="message/rfc822", resumable=False)
        request = self.api.messages.send(userId="me", media_body=media)
        parts = urllib.parse.urlsplit(request.uri)  # googleapiclient swaps only the host of upload URIs
        query = dict(urllib.parse.parse_qsl(parts.query))
        if metadata:
            boundary = "mailbridge_" + secrets.token_hex(16)
            request.body = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                            f"{json.dumps(metadata)}\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
                            ).encode() + raw + f"\r\n--{boundary}--\r\n".encode()
            request.body_size = len(request.body)  # execute() sends Content-Length from this
            request.headers["content-type"] = f'multipart/related; boundary="{boundary}"'
            query["uploadType"] = "multipart"
        request.uri = f"{self.endpoint}{parts.path}?{urllib.parse.urlencode(query)}"
        return request

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        policy = self.retry
        backoff = wait_exponential_jitter(multiplier=policy.base_delay, max=policy.max_delay,
                                          jitter=policy.base_delay)

        def wait(rs) -> float:
            return max(backoff(rs), rs.outcome.exception().retry_after or 0.0)

        def stop(rs) -> bool:
            asked = rs.outcome.exception().retry_after or 0.0
            return (rs.attempt_number >= policy.attempts or asked > policy.max_delay
                    or rs.idle_for + rs.upcoming_sleep > policy.max_total_sleep)

        try:
            return Retrying(retry=retry_if_exception_type(Transient), wait=wait, stop=stop,
                            sleep=policy.sleep, reraise=True)(fn)
        except Transient as exc:
            retry_after = exc.retry_after if exc.retry_after is not None else policy.max_delay
            details = {"provider_status": exc.status} if exc.status else {}
            raise ProviderUnavailableError("Gmail is unavailable or throttling; try again later",
                                           retry_after=max(1, math.ceil(retry_after)),
                                           details=details) from exc.__cause__

    def _count(self, methods: Sequence[str]) -> None:
        with self._stats_lock:
            self.stats.calls += 1
            for method in methods:
                self.stats.quota_units += QUOTA_UNITS.get(method, 5)
                self.stats.by_method[method] = self.stats.by_method.get(method, 0) + 1
