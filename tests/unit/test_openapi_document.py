"""openapi.yaml is a valid OpenAPI 3.0 document that describes exactly the routes and shapes of API.md."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import OpenAPIV30SpecValidator

DOCUMENT = Path(__file__).resolve().parents[2] / "openapi.yaml"

# API.md section 1, expanded with the routes sections 2, 4, 5, 6 and 7 give each function, plus the
# two unauthenticated utility routes. Hard-coded on purpose: API.md is the fixed contract.
EXPECTED_ROUTES = {
    ("POST", "/v1/connect"): "oauth",
    ("GET", "/oauth/callback/google"): "oauth",
    ("GET", "/oauth/callback/microsoft"): "oauth",
    ("POST", "/v1/send"): "send",
    ("POST", "/v1/messages/{id}/reply"): "send",
    ("POST", "/v1/messages/{id}/forward"): "send",
    ("POST", "/resend/emails"): "send",
    ("POST", "/resend/emails/batch"): "send",
    ("GET", "/resend/emails/{id}"): "send",
    ("GET", "/v1/messages"): "read",
    ("GET", "/v1/messages/{id}"): "read",
    ("GET", "/v1/messages/{id}/raw"): "read",
    ("GET", "/v1/messages/{id}/attachments/{attachment_id}"): "read",
    ("PATCH", "/v1/messages/{id}"): "read",
    ("DELETE", "/v1/messages/{id}"): "read",
    ("GET", "/v1/threads"): "read",
    ("GET", "/v1/threads/{id}"): "read",
    ("GET", "/v1/threads/{id}/context"): "read",
    ("PUT", "/v1/threads/{id}/context"): "read",
    ("POST", "/v1/connections"): "manage",
    ("GET", "/v1/connections"): "manage",
    ("GET", "/v1/connections/{id}"): "manage",
    ("DELETE", "/v1/connections/{id}"): "manage",
    ("POST", "/v1/connections/{id}/refresh"): "manage",
    ("POST", "/v1/connections/{id}/sync"): "manage",
    ("POST", "/v1/connections/{id}/backfill"): "manage",
    ("GET", "/v1/connections/{id}/backfill"): "manage",
    ("POST", "/v1/connections/{id}/backfill/pause"): "manage",
    ("POST", "/v1/connections/{id}/backfill/resume"): "manage",
    ("POST", "/v1/connections/{id}/backfill/cancel"): "manage",
    ("POST", "/v1/webhooks"): "manage",
    ("GET", "/v1/webhooks"): "manage",
    ("GET", "/v1/webhooks/{id}"): "manage",
    ("PATCH", "/v1/webhooks/{id}"): "manage",
    ("DELETE", "/v1/webhooks/{id}"): "manage",
    ("POST", "/v1/webhooks/{id}/rotate-secret"): "manage",
    ("GET", "/v1/webhooks/{id}/deliveries"): "manage",
    ("POST", "/v1/webhooks/{id}/deliveries/{delivery_id}/retry"): "manage",
    ("POST", "/v1/api-keys"): "manage",
    ("GET", "/v1/api-keys"): "manage",
    ("DELETE", "/v1/api-keys/{id}"): "manage",
    ("POST", "/push/gmail"): "gmail_push",
    ("POST", "/push/microsoft"): "graph_push",
    ("POST", "/push/microsoft/lifecycle"): "graph_push",
    ("POST", "/internal/deliver"): "deliver",
    ("POST", "/internal/renew"): "renew",
    ("GET", "/healthz"): "manage",
    ("GET", "/openapi.yaml"): "manage",
}
FUNCTIONS = {"oauth", "send", "read", "manage", "gmail_push", "graph_push", "deliver", "renew"}
UNAUTHENTICATED = {"/healthz", "/openapi.yaml", "/oauth/callback/google", "/oauth/callback/microsoft",
                   "/push/microsoft", "/push/microsoft/lifecycle"}
OIDC = {"/push/gmail", "/internal/deliver", "/internal/renew"}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ENVELOPE = "#/components/schemas/ErrorEnvelope"
RESEND_ERROR = "#/components/schemas/ResendError"
RATE_LIMIT_HEADERS = {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}

# API.md section 4's connection object and section 5's email object, with real timestamps.
EMAIL = {
    "id": "google:conn_1:19485a3b2c1d", "thread_id": "google:conn_1:19485a3b2c1d", "connection_id": "conn_1",
    "provider": "google", "message_id": "<CAF123@mail.gmail.com>", "subject": "Q1 update",
    "from": {"email": "boss@example.com", "name": "Jane Smith"},
    "to": [{"email": "you@example.com", "name": None}], "cc": [], "bcc": [], "reply_to": [],
    "snippet": "Hi team", "text": None, "html": None, "sent_at": "2026-02-07T14:30:00Z",
    "received_at": "2026-02-07T14:30:02Z", "is_read": False, "labels": ["INBOX"], "importance": "normal",
    "has_attachments": True,
    "attachments": [{"id": "att_1", "filename": "report.pdf", "content_type": "application/pdf",
                     "size": 245760, "is_inline": False, "content_id": None}],
    "in_reply_to": None, "references": [],
}
CONNECTION = {
    "id": "conn_1", "provider": "google", "email": "user@gmail.com", "user_id": "u_42", "status": "healthy",
    "error": None, "last_sync_at": "2026-02-07T14:30:00Z", "created_at": "2026-02-01T09:00:00Z",
    "watch": {"expires_at": "2026-02-14T09:00:00Z"},
    "backfill": {"state": "running", "range": "30d", "processed": 120, "total": 800},
}
SEND = {
    "connection_id": "conn_1", "from": "Me <me@gmail.com>", "to": ["a@example.com"], "cc": [], "bcc": [],
    "reply_to": [], "subject": "Hello", "html": "<p>World</p>", "text": "World", "headers": {"X-Campaign": "7"},
    "attachments": [{"filename": "a.pdf", "content": "JVBERi0=", "content_type": "application/pdf"}],
    "thread_id": "google:conn_1:abc", "in_reply_to": "google:conn_1:abd",
}
RESEND_SEND = {"from": "Acme <me@gmail.com>", "to": ["delivered@example.com"], "subject": "hello world",
               "html": "<p>it works!</p>", "tags": [{"name": "category", "value": "confirm_email"}],
               "attachments": [{"filename": "logo.png", "content": "iVBORw0=", "content_id": "logo"}]}


@pytest.fixture(scope="module")
def doc() -> dict:
    return yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))


def operations(doc: dict):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def schema_errors(doc: dict, name: str, instance) -> list[str]:
    """Validate `instance` against components.schemas[name] with OAS 3.0 semantics (nullable, formats)."""
    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    validator = OAS30Validator(root, format_checker=oas30_format_checker)
    return [e.message for e in validator.iter_errors(instance)]


def test_document_is_valid_openapi_3_0(doc):
    assert doc["openapi"] == "3.0.3"
    errors = [e.message for e in OpenAPIV30SpecValidator(doc).iter_errors()]
    assert errors == []


def test_routes_are_exactly_those_of_api_md(doc):
    found = {(method, path) for method, path, _ in operations(doc)}
    assert sorted(found - EXPECTED_ROUTES.keys()) == []
    assert sorted(EXPECTED_ROUTES.keys() - found) == []


def test_every_operation_names_its_function_by_tag_and_extension(doc):
    for method, path, op in operations(doc):
        function = EXPECTED_ROUTES[(method, path)]
        assert op.get("x-mailbridge-function") == function, (method, path)
        assert op.get("tags") == [function], (method, path)
    assert {tag["name"] for tag in doc["tags"]} == FUNCTIONS


def test_operation_ids_are_unique_snake_case_verb_phrases(doc):
    ids = [op.get("operationId") for _, _, op in operations(doc)]
    assert all(isinstance(i, str) and re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)+", i) for i in ids), ids
    assert len(ids) == len(set(ids))


def test_every_error_response_uses_the_envelope_of_its_api(doc):
    responses = doc["components"]["responses"]
    for method, path, op in operations(doc):
        expected = RESEND_ERROR if path.startswith("/resend/") else ENVELOPE
        error_statuses = [s for s in op["responses"] if s[0] in "45"]
        assert error_statuses, (method, path)
        for status in error_statuses:
            response = op["responses"][status]
            if "$ref" in response:
                response = responses[response["$ref"].rsplit("/", 1)[1]]
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": expected}, (method, path, status)


def test_security_follows_the_kind_of_caller(doc):
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}
    assert schemes["oidc"] == {**schemes["oidc"], "type": "http", "scheme": "bearer"}
    for method, path, op in operations(doc):
        if path in UNAUTHENTICATED:
            assert op["security"] == [], (method, path)
        elif path in OIDC:
            assert op["security"] == [{"oidc": []}], (method, path)
        else:
            assert op["security"] == [{"apiKey": []}], (method, path)


def test_api_key_operations_document_rate_limits(doc):
    components = doc["components"]
    for method, path, op in operations(doc):
        if op["security"] != [{"apiKey": []}]:
            continue
        for status in ("401", "403", "429"):
            assert status in op["responses"], (method, path, status)
        limited = components["responses"][op["responses"]["429"]["$ref"].rsplit("/", 1)[1]]
        assert set(limited["headers"]) == RATE_LIMIT_HEADERS | {"Retry-After"}
        for status, response in op["responses"].items():
            if status.startswith("2"):
                assert RATE_LIMIT_HEADERS <= set(response.get("headers", {})), (method, path, status)
    for name in RATE_LIMIT_HEADERS | {"Retry-After"}:
        assert components["headers"][name]["schema"]["type"] == "integer"


def test_query_parameters_of_search(doc):
    params = {}
    for p in doc["paths"]["/v1/messages"]["get"]["parameters"]:
        if "$ref" in p:
            p = doc["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]
        params[p["name"]] = p
    assert set(params) == {"connection_id", "user_id", "q", "from", "to", "subject", "label", "unread", "after",
                           "before", "has_attachment", "limit", "include_body", "page_token"}
    assert params["connection_id"]["schema"]["type"] == "array" and params["connection_id"]["explode"] is True
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 50, "default": 20}
    assert params["include_body"]["schema"] == {"type": "boolean", "default": False}
    assert params["after"]["schema"]["format"] == "date-time"


def test_api_md_samples_match_their_schemas(doc):
    assert schema_errors(doc, "Email", EMAIL) == []
    assert schema_errors(doc, "Connection", CONNECTION) == []
    assert schema_errors(doc, "SendRequest", SEND) == []
    assert schema_errors(doc, "ResendSendEmailRequest", RESEND_SEND) == []
    assert schema_errors(doc, "ResendBatchRequest", [RESEND_SEND, RESEND_SEND]) == []
    envelope = {"error": {"code": "invalid_request", "message": "to: at least one recipient is required",
                          "details": {"field": "to"}}}
    assert schema_errors(doc, "ErrorEnvelope", envelope) == []
    assert schema_errors(doc, "ResendError", {"statusCode": 422, "name": "validation_error", "message": "x"}) == []
    event = {"type": "email.received", "id": "evt_1", "timestamp": "2026-02-07T14:30:03Z",
             "data": {**EMAIL, "text": "Hi team", "html": "<p>Hi team</p>", "user_id": "u_42"}}
    assert schema_errors(doc, "Event", event) == []


def test_hidden_fields_may_be_null(doc):
    hidden = {k: None for k in EMAIL} | {k: EMAIL[k] for k in ("id", "thread_id", "connection_id", "provider")}
    assert schema_errors(doc, "Email", hidden) == []
    assert schema_errors(doc, "Email", {**EMAIL, "id": None}) != []


@pytest.mark.parametrize("name, change", [
    ("SendRequest", lambda b: b.pop("to")),
    ("SendRequest", lambda b: (b.pop("connection_id"), b.pop("from"))),
    ("SendRequest", lambda b: b.update(to=[f"r{i}@example.com" for i in range(101)])),
    ("SendRequest", lambda b: b.update(subject="Hello\r\nBcc: victim@example.com")),
    ("SendRequest", lambda b: b["headers"].update({"X-Evil": "a\nb"})),
    ("SendRequest", lambda b: b.update(unknown_field=1)),
    ("SendRequest", lambda b: b.update(to="no address here")),
    ("SendRequest", lambda b: b.update(to=[])),
    ("ResendSendEmailRequest", lambda b: b["attachments"].append({"path": "https://example.com/a.pdf"})),
    ("ResendSendEmailRequest", lambda b: b.update(scheduled_at="in 1 min")),
    ("ResendSendEmailRequest", lambda b: b.update(template={"id": "t"})),
    ("Email", lambda b: b.update(sent_at="yesterday")),
    ("Connection", lambda b: b.update(status="fine")),
])
def test_invalid_bodies_are_refused_by_the_schema(doc, name, change):
    body = copy.deepcopy({"SendRequest": SEND, "ResendSendEmailRequest": RESEND_SEND,
                          "Email": EMAIL, "Connection": CONNECTION}[name])
    change(body)
    assert schema_errors(doc, name, body) != []


@pytest.mark.parametrize("url, ok", [
    ("https://app.example.com/connected?x=1", True),
    ("http://localhost:3000/cb", True),
    ("http://127.0.0.1/cb", True),
    ("http://app.example.com/cb", False),
    ("ftp://app.example.com/cb", False),
])
def test_connect_redirect_url_is_https_or_loopback(doc, url, ok):
    body = {"provider": "google", "user_id": "u_42", "redirect_url": url}
    assert (schema_errors(doc, "ConnectRequest", body) == []) is ok


def test_batch_is_limited_to_100(doc):
    assert schema_errors(doc, "ResendBatchRequest", [RESEND_SEND] * 100) == []
    assert schema_errors(doc, "ResendBatchRequest", [RESEND_SEND] * 101) != []
    assert schema_errors(doc, "ResendBatchRequest", []) != []
