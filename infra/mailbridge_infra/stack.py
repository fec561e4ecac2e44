"""Wires the components into one deployment and returns the stack outputs."""
from __future__ import annotations

import pulumi

from config import Settings
from gateway_spec import build_spec, documented_routes, render
from mailbridge_infra.accounts import ServiceAccounts, member
from mailbridge_infra.apis import Apis
from mailbridge_infra.firestore import Firestore
from mailbridge_infra.functions import Functions, FunctionsArgs, function_environment
from mailbridge_infra.gateway import Gateway
from mailbridge_infra.pubsub import (DELIVERY_TOPIC, GMAIL_TOPIC, PushArgs, PushSubscriptions, Topics,
                                     renewals_push)
from mailbridge_infra.routes import (DELIVER_PATH, FUNCTIONS, GMAIL_PUSH_PATH, PRIVATE, PUBLIC,
                                     function_url)
from mailbridge_infra.scheduler import RenewSchedule
from mailbridge_infra.secrets import Secrets

# Ack deadlines (= the push request's timeout) and dead-letter thresholds of the push subscriptions.
GMAIL_PUSH_ACK_SECONDS, GMAIL_PUSH_ATTEMPTS = 60, 10
DELIVER_ACK_SECONDS, DELIVER_ATTEMPTS = 30, 100


def deploy(settings: Settings) -> dict[str, pulumi.Input[str]]:
    """Declare every resource; returns the stack outputs (gateway_url, redirect URIs, gmail_topic)."""
    project, region = settings.project, settings.region
    apis = Apis("apis", project)
    after_apis = pulumi.ResourceOptions(depends_on=apis.services)
    accounts = ServiceAccounts("accounts", project, opts=after_apis)
    runtime_members = {fn: member(account) for fn, account in accounts.functions.items()}

    firestore = Firestore("firestore", project, settings.firestore_location or region,
                          create=not settings.firestore_exists, opts=after_apis)
    values = {
        "admin-api-key": settings.admin_api_key,
        "token-encryption-key": settings.token_encryption_key,
        "google-client-secret": settings.google_client_secret,
        "ms-client-secret": settings.ms_client_secret,
    }
    secrets = Secrets("secrets", project, values, runtime_members, opts=after_apis)
    topics = Topics("topics", project, runtime_members, opts=after_apis)

    urls = {fn: function_url(region, project, fn) for fn in FUNCTIONS}
    routes, source = documented_routes(settings.openapi_path or settings.source_root / "openapi.yaml")
    if source.startswith("built-in"):
        pulumi.log.warn(f"API Gateway routes come from the {source}")
    spec = render(build_spec({fn: urls[fn] for fn in PUBLIC}, routes))
    gateway = Gateway("gateway", project, settings.gateway_region or region, spec, accounts.gateway,
                      opts=after_apis)
    public_base_url = pulumi.Output.from_input(settings.public_base_url or gateway.url)

    # Who calls each private function: its OIDC token's email (PUSH_SERVICE_ACCOUNT).
    callers = {"gmail_push": accounts.push, "deliver": accounts.push, "renew": accounts.scheduler}
    if set(callers) != set(PRIVATE):
        raise ValueError("every private function needs exactly one caller account")
    environment = {
        fn: function_environment(
            fn, project=project, region=region, public_base_url=public_base_url,
            google_client_id=settings.google_client_id, ms_client_id=settings.ms_client_id,
            google_scopes=settings.google_scopes, ms_scopes=settings.ms_scopes,
            caller=callers[fn].email if fn in callers else None)
        for fn in FUNCTIONS
    }
    invokers = {fn: [member(accounts.gateway)] for fn in PUBLIC}
    invokers.update({fn: [member(callers[fn])] for fn in PRIVATE})
    functions = Functions(
        "functions",
        FunctionsArgs(project=project, region=region, accounts=accounts, environment=environment,
                      invokers=invokers, source_root=settings.source_root, build_dir=settings.build_dir),
        opts=pulumi.ResourceOptions(depends_on=[*apis.services, firestore, secrets, topics]))

    after_functions = pulumi.ResourceOptions(depends_on=[functions])
    PushSubscriptions("push", project, [
        PushArgs(GMAIL_TOPIC, topics.topics[GMAIL_TOPIC], urls["gmail_push"] + GMAIL_PUSH_PATH,
                 urls["gmail_push"], GMAIL_PUSH_ACK_SECONDS, GMAIL_PUSH_ATTEMPTS),
        PushArgs(DELIVERY_TOPIC, topics.topics[DELIVERY_TOPIC], urls["deliver"] + DELIVER_PATH,
                 urls["deliver"], DELIVER_ACK_SECONDS, DELIVER_ATTEMPTS),
        renewals_push(topics, urls["renew"], accounts.scheduler),
    ], accounts.push, opts=after_functions)
    RenewSchedule("renew", project, region, urls["renew"], accounts.scheduler, opts=after_functions)

    return {
        "gateway_url": gateway.url,
        "public_base_url": public_base_url,
        "google_redirect_uri": public_base_url.apply(lambda base: f"{base}/oauth/callback/google"),
        "microsoft_redirect_uri": public_base_url.apply(lambda base: f"{base}/oauth/callback/microsoft"),
        "gmail_topic": topics.topics[GMAIL_TOPIC].id,
        "function_urls": urls,
    }

