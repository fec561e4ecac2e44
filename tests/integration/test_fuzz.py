"""Fuzzing every served operation of openapi.yaml in-process (schemathesis): no undocumented 5xx, and every
error answer in the envelope of API.md section 3 (Resend's own shape under /resend).

The app is the real one (all functions, a real SQLite store, env secrets), and the schema is the one it
serves at GET /openapi.yaml. Every upstream address points at a closed loopback port and webhook URLs are
not resolved, so nothing leaves the machine. Operations that need a mailbox answer 404/409/422 (there is
no connection), which is fine: no 5xx is the point. Push authentication is off, so the push and internal
routes parse what they are given instead of stopping every request at the token check (OIDC
verification is tested elsewhere). Bounded and reproducible: MAX_EXAMPLES per operation and generation
mode, derandomized, no example database.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from mailbridge.api.app import create_app
from mailbridge.config import Settings
from mailbridge.core import keys
from mailbridge.core.permissions import Permissions, RateLimit
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore
from mailbridge.store.sqlite import SqliteStore
from tests.unit.test_openapi_routes import PENDING

DOCUMENT = Path(__file__).resolve().parents[2] / "openapi.yaml"
MAX_EXAMPLES = 25
DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens, every connection is refused at once
ADMIN_KEY = "mbk_" + "F" * 43

# API.md section 3: each code and the statuses it may come with.
CODES = {"invalid_request": {400, 422}, "unauthenticated": {401}, "forbidden": {403}, "not_found": {404},
         "method_not_allowed": {405}, "conflict": {409}, "payload_too_large": {413}, "rate_limited": {429},
         "provider_error": {502}, "provider_unavailable": {503}, "reauth_required": {409},
         "internal_error": {500}}
# How an apiKey-secured request authenticates: mostly with the tenant's key, so that the handlers
# themselves are fuzzed, and sometimes without a key, with an unknown one, or with the admin key.
AUTHS = ("tenant", "tenant", "tenant", "tenant", "missing", "unknown", "admin")
FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                         suppress_health_check=list(HealthCheck), print_blob=False)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    secured: bool       # security: [{apiKey: []}]
    statuses: frozenset  # the documented response statuses
    has_inputs: bool     # parameters or a body: something a negative example can break


def served_operations() -> list[Operation]:
    """The document's operations, less those no blueprint serves yet (PENDING)."""
    doc = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    found = []
    for path, item in doc["paths"].items():
        for method in ("get", "put", "post", "delete", "patch"):
            op = item.get(method)
            if op is None or (method.upper(), path) in PENDING:
                continue
            inputs = bool(item.get("parameters") or op.get("parameters") or op.get("requestBody"))
            found.append(Operation(method.upper(), path, op.get("security") == [{"apiKey": []}],
                                   frozenset(str(s) for s in op["responses"]), inputs))
    return found


OPERATIONS = served_operations()
# Every operation with valid examples; those with inputs also with invalid ones.
CASES = [pytest.param(op, mode, id=f"{op.method} {op.path} {mode.value}")
         for op in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE or op.has_inputs]


@dataclass(frozen=True)
class Fuzz:
    schema: schemathesis.BaseSchema
    keys: dict[str, str | None]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory) -> Fuzz:
    """The whole app on a fresh SQLite store, its schema read from its own GET /openapi.yaml."""
    settings_ = Settings(
        store="sqlite", push_auth="off", public_base_url="http://127.0.0.1:8080",
        google_client_id="fuzz-google-client", ms_client_id="fuzz-ms-client",
        google_auth_url=f"{DEAD}/o/oauth2/v2/auth", google_token_url=f"{DEAD}/token",
        google_revoke_url=f"{DEAD}/revoke", gmail_api_endpoint=DEAD, google_oidc_certs_url=f"{DEAD}/certs",
        gmail_pubsub_topic="projects/fuzz/topics/gmail-notifications",
        ms_authority="https://127.0.0.1:9/common", graph_api_endpoint=f"{DEAD}/v1.0")
    secrets = EnvSecretStore({"MAILBRIDGE_ADMIN_KEY": ADMIN_KEY,
                              "MAILBRIDGE_ENCRYPTION_KEY": base64.b64encode(b"f" * 32).decode(),
                              "GOOGLE_CLIENT_SECRET": "fuzz-google-secret", "MS_CLIENT_SECRET": "fuzz-ms-secret"})
    store = SqliteStore(tmp_path_factory.mktemp("fuzz") / "store.db")
    runtime = Runtime(settings_, store=store, secrets=secrets)
    # A limit the fuzzer cannot reach: a 429 after 300 requests would hide every handler behind it.
    unlimited = Permissions(rate_limit=RateLimit(per_minute=1_000_000, per_hour=100_000_000))
    tenant = keys.create_api_key(store, tenant_id="fuzz", name="fuzz", permissions=unlimited)["key"]
    schema = schemathesis.openapi.from_wsgi("/openapi.yaml", create_app(runtime=runtime))
    with pytest.MonkeyPatch.context() as env:
        # Webhook URLs are resolved (DNS) unless private webhooks are allowed: fuzzed host names must
        # not send a single query off the machine. The address rule has its own tests.
        env.setenv("MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS", "1")
        yield Fuzz(schema, {"tenant": tenant, "missing": None, "unknown": "mbk_" + "u" * 43, "admin": ADMIN_KEY})
    store.close()


def error_problems(op: Operation, status: int, body) -> list[str]:
    """What is wrong with an error answer: its shape (section 3, or Resend's), or an undocumented 5xx."""
    problems = []
    if status >= 500 and not (status == 503 and "503" in op.statuses):
        problems.append(f"server error {status} (only a documented 503 is allowed)")
    if op.path.startswith("/resend/"):
        if not (isinstance(body, dict) and set(body) == {"statusCode", "name", "message"}
                and body["statusCode"] == status and isinstance(body["name"], str) and body["name"]
                and isinstance(body["message"], str) and body["message"]):
            problems.append("not Resend's {statusCode, name, message} error shape")
        return problems
    error = body.get("error") if isinstance(body, dict) and set(body) == {"error"} else None
    if not (isinstance(error, dict) and set(error) == {"code", "message", "details"}
            and isinstance(error["message"], str) and error["message"] and isinstance(error["details"], dict)):
        problems.append('not the envelope {"error": {"code", "message", "details"}}')
    elif status not in CODES.get(error["code"], ()):
        problems.append(f"code {error['code']!r} does not go with status {status} (API.md section 3)")
    return problems


def report(case, response, problems: list[str]) -> str:
    """The exact request and answer, for the route's owner (the key is masked by schemathesis)."""
    content_type = ", ".join(response.headers.get("content-type", []))
    return (f"{'; '.join(problems)}\n  request: {case.as_curl_command()}\n"
            f"  response: {response.status_code} {content_type} {response.text[:500]}")


def parsed(response):
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def auth_header(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.mark.parametrize("op, mode", CASES)
def test_fuzzed_requests_get_no_server_error_and_enveloped_errors(fuzz, op, mode):
    operation = fuzz.schema[op.path][op.method]
    auths = st.sampled_from(AUTHS) if op.secured else st.just("missing")

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(mode), auth=auths)
    def check(case, auth):
        # Our key replaces whatever the generator put in Authorization (the document says bearer).
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = {**headers, **auth_header(fuzz.keys[auth])}
        response = case.call()
        if response.status_code >= 400:
            problems = error_problems(op, response.status_code, parsed(response))
            assert not problems, report(case, response, problems)

    check()


def test_the_checks_refuse_what_they_must():
    """The two rules above can fail: a bare 500, a 502, an envelope with a wrong code, Resend's shape."""
    native = Operation("GET", "/v1/messages", True, frozenset({"200", "503"}), True)
    resend = Operation("POST", "/resend/emails", True, frozenset({"200", "422"}), True)
    ok = {"error": {"code": "not_found", "message": "x not found", "details": {}}}
    assert error_problems(native, 404, ok) == []
    assert error_problems(native, 503, {"error": {**ok["error"], "code": "provider_unavailable"}}) == []
    assert error_problems(native, 500, {"error": {**ok["error"], "code": "internal_error"}}) != []
    assert error_problems(native, 502, {"error": {**ok["error"], "code": "provider_error"}}) != []
    assert error_problems(native, 409, ok) != []
    assert error_problems(native, 404, {"message": "not found"}) != []
    assert error_problems(native, 404, None) != []
    assert error_problems(resend, 422, {"statusCode": 422, "name": "validation_error", "message": "x"}) == []
    assert error_problems(resend, 422, ok) != []
    assert error_problems(resend, 503, {"statusCode": 503, "name": "application_error", "message": "x"}) != []
