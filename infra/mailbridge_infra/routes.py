"""The one route → function table of API.md section 1, and the functions' deployed names and URLs."""
from __future__ import annotations

import re

# Every function of API.md section 1: functions/<name>/main.py with `handle(request)`.
FUNCTIONS = ("oauth", "send", "read", "manage", "gmail_push", "graph_push", "deliver", "renew")
# Reached through the API Gateway (its service account is their only invoker).
PUBLIC = ("oauth", "send", "read", "manage", "graph_push")
# Reached only by Google's own callers with an OIDC token: Pub/Sub push, Cloud Scheduler.
PRIVATE = ("gmail_push", "deliver", "renew")

# The path each private function is called on, by whom (API.md section 8).
GMAIL_PUSH_PATH = "/push/gmail"
DELIVER_PATH = "/internal/deliver"
RENEW_PATH = "/internal/renew"

# (function, method, path) — API.md section 1 spelled out, sections 2, 4 and 7 for `manage`.
# This is also the route list the gateway is built from when openapi.yaml is absent.
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("oauth", "POST", "/v1/connect"),
    ("oauth", "GET", "/oauth/callback/google"),
    ("oauth", "GET", "/oauth/callback/microsoft"),
    ("send", "POST", "/v1/send"),
    ("send", "POST", "/v1/messages/{id}/reply"),
    ("send", "POST", "/v1/messages/{id}/forward"),
    ("send", "POST", "/resend/emails"),
    ("send", "POST", "/resend/emails/batch"),
    ("send", "GET", "/resend/emails/{id}"),
    ("read", "GET", "/v1/messages"),
    ("read", "GET", "/v1/messages/{id}"),
    ("read", "PATCH", "/v1/messages/{id}"),
    ("read", "DELETE", "/v1/messages/{id}"),
    ("read", "GET", "/v1/messages/{id}/raw"),
    ("read", "GET", "/v1/messages/{id}/attachments/{attachment_id}"),
    ("read", "GET", "/v1/threads"),
    ("read", "GET", "/v1/threads/{id}"),
    ("read", "GET", "/v1/threads/{id}/context"),
    ("read", "PUT", "/v1/threads/{id}/context"),
    ("manage", "GET", "/v1/connections"),
    ("manage", "POST", "/v1/connections"),
    ("manage", "GET", "/v1/connections/{id}"),
    ("manage", "DELETE", "/v1/connections/{id}"),
    ("manage", "POST", "/v1/connections/{id}/refresh"),
    ("manage", "POST", "/v1/connections/{id}/sync"),
    ("manage", "GET", "/v1/connections/{id}/backfill"),
    ("manage", "POST", "/v1/connections/{id}/backfill"),
    ("manage", "POST", "/v1/connections/{id}/backfill/pause"),
    ("manage", "POST", "/v1/connections/{id}/backfill/resume"),
    ("manage", "POST", "/v1/connections/{id}/backfill/cancel"),
    ("manage", "GET", "/v1/webhooks"),
    ("manage", "POST", "/v1/webhooks"),
    ("manage", "GET", "/v1/webhooks/{id}"),
    ("manage", "PATCH", "/v1/webhooks/{id}"),
    ("manage", "DELETE", "/v1/webhooks/{id}"),
    ("manage", "POST", "/v1/webhooks/{id}/rotate-secret"),
    ("manage", "GET", "/v1/webhooks/{id}/deliveries"),
    ("manage", "POST", "/v1/webhooks/{id}/deliveries/{delivery_id}/retry"),
    ("manage", "GET", "/v1/api-keys"),
    ("manage", "POST", "/v1/api-keys"),
    ("manage", "DELETE", "/v1/api-keys/{id}"),
    ("manage", "GET", "/healthz"),  # every function answers it; the gateway asks one
    ("manage", "GET", "/openapi.yaml"),
    ("graph_push", "POST", "/push/microsoft"),
    ("graph_push", "POST", "/push/microsoft/lifecycle"),
    ("gmail_push", "POST", GMAIL_PUSH_PATH),
    ("deliver", "POST", DELIVER_PATH),
    ("renew", "POST", RENEW_PATH),
)

# API.md writes manage's routes as prefixes ("/v1/connections…"): a documented path under one
# of these that the table above does not spell out still belongs to `manage`.
PREFIXES = (("/v1/connections", "manage"), ("/v1/webhooks", "manage"), ("/v1/api-keys", "manage"))

_PARAM = re.compile(r"\{[^}/]*\}")


def shape(path: str) -> str:
    """The path with every `{name}` replaced by `{}`, so `{id}` and `{message_id}` compare equal."""
    return _PARAM.sub("{}", path.rstrip("/") or "/")


def function_for(method: str, path: str) -> str:
    """The function serving `method path`. Raises LookupError for a route API.md does not place."""
    wanted = (method.upper(), shape(path))
    for function, m, p in ROUTES:
        if (m, shape(p)) == wanted:
            return function
    for prefix, function in PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return function
    raise LookupError(f"no function serves {method.upper()} {path} (API.md section 1)")


def deployed_name(function: str) -> str:
    """The Cloud Functions name: gen2 names allow lowercase letters, digits and hyphens only."""
    return "mailbridge-" + function.replace("_", "-")


def function_url(region: str, project: str, function: str) -> str:
    """The gen2 function's URL, known before it exists (`https://REGION-PROJECT.cloudfunctions.net/NAME`).

    Being predictable is what lets a function's own PUSH_AUDIENCE, the gateway's backends and
    the push subscriptions be written before the function is deployed, without a cycle.
    """
    return f"https://{region}-{project}.cloudfunctions.net/{deployed_name(function)}"
