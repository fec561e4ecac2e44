"""Policy tests of the deployment: OIDC everywhere, dead letters, invokers, secrets, entry points."""
from __future__ import annotations

import pytest

from conftest import SECRET_VALUES, Deployment, run_program
from mailbridge_infra.routes import FUNCTIONS, PRIVATE, PUBLIC, deployed_name
from mailbridge_infra.secrets import SECRET_READERS

FUNCTION = "gcp:cloudfunctionsv2/function:Function"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC = "gcp:pubsub/topic:Topic"
TOPIC_MEMBER = "gcp:pubsub/topicIAMMember:TopicIAMMember"
SUBSCRIPTION_MEMBER = "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember"
JOB = "gcp:cloudscheduler/job:Job"
RUN_INVOKER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
PUBLIC_MEMBERS = {"allUsers", "allAuthenticatedUsers"}
AGENT = "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"


def functions_by_name(d: Deployment) -> dict[str, dict]:
    return {r.inputs["name"]: r.inputs for r in d.of_type(FUNCTION)}


def env_of(d: Deployment, function: str) -> dict[str, str]:
    return functions_by_name(d)[deployed_name(function)]["serviceConfig"]["environmentVariables"]


def invokers_of(d: Deployment, function: str) -> set[str]:
    return {r.inputs["member"] for r in d.of_type(RUN_INVOKER)
            if r.inputs["name"] == deployed_name(function) and r.inputs["role"] == "roles/run.invoker"}


def push_subscriptions(d: Deployment) -> list[dict]:
    return [r.inputs for r in d.of_type(SUBSCRIPTION) if r.inputs.get("pushConfig")]


def test_every_function_of_api_md_is_deployed_with_entry_point_handle(deployment):
    deployed = functions_by_name(deployment)
    assert set(deployed) == {deployed_name(f) for f in FUNCTIONS}
    for inputs in deployed.values():
        assert inputs["buildConfig"]["entryPoint"] == "handle"
        assert inputs["buildConfig"]["runtime"] == "python311"


def test_push_subscriptions_carry_oidc_for_the_function_they_call(deployment):
    subs = push_subscriptions(deployment)
    assert {s["name"] for s in subs} == {"gmail-notifications-push", "mailbridge-deliveries-push",
                                         "mailbridge-renewals-push"}
    targets = {"gmail-notifications-push": ("gmail_push", "/push/gmail"),
               "mailbridge-deliveries-push": ("deliver", "/internal/deliver"),
               "mailbridge-renewals-push": ("renew", "/internal/renew")}
    for sub in subs:
        function, path = targets[sub["name"]]
        env = env_of(deployment, function)
        oidc = sub["pushConfig"]["oidcToken"]
        # The function checks exactly what Pub/Sub puts in the token, and Cloud Run accepts it.
        assert oidc["audience"] == env["PUSH_AUDIENCE"]
        assert oidc["serviceAccountEmail"] == env["PUSH_SERVICE_ACCOUNT"]
        assert sub["pushConfig"]["pushEndpoint"] == env["PUSH_AUDIENCE"] + path
        assert f"serviceAccount:{oidc['serviceAccountEmail']}" in invokers_of(deployment, function)


def test_push_subscriptions_retry_dead_letter_and_never_expire(deployment):
    timeouts = {name: f["serviceConfig"]["timeoutSeconds"] for name, f in functions_by_name(deployment).items()}
    for sub in push_subscriptions(deployment):
        assert sub["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
        assert sub["expirationPolicy"] == {"ttl": ""}
        assert 5 <= sub["deadLetterPolicy"]["maxDeliveryAttempts"] <= 100
        assert 10 <= sub["ackDeadlineSeconds"] <= 600
        endpoint_function = sub["pushConfig"]["pushEndpoint"].split("/")[3]
        assert timeouts[endpoint_function] <= sub["ackDeadlineSeconds"]


def test_each_dead_letter_topic_has_a_subscription_and_the_agent_can_move_messages(deployment):
    topics = {f"projects/acme-mail/topics/{r.inputs['name']}" for r in deployment.of_type(TOPIC)}
    subs = push_subscriptions(deployment)
    assert subs
    for sub in subs:
        dead = sub["deadLetterPolicy"]["deadLetterTopic"]
        assert dead in topics and dead != sub["topic"]
        readers = [s for s in deployment.of_type(SUBSCRIPTION) if s.inputs["topic"] == dead]
        assert len(readers) == 1 and readers[0].inputs["expirationPolicy"] == {"ttl": ""}
        dead_name = dead.rsplit("/", 1)[1]
        assert any(m.inputs["topic"] == dead_name and m.inputs["role"] == "roles/pubsub.publisher"
                   and m.inputs["member"] == AGENT for m in deployment.of_type(TOPIC_MEMBER))
        assert any(m.inputs["subscription"] == sub["name"] and m.inputs["role"] == "roles/pubsub.subscriber"
                   and m.inputs["member"] == AGENT for m in deployment.of_type(SUBSCRIPTION_MEMBER))


def test_gmail_may_publish_to_the_notification_topic(deployment):
    binding = deployment.named(TOPIC_MEMBER, topic="gmail-notifications", role="roles/pubsub.publisher",
                               member="serviceAccount:gmail-api-push@system.gserviceaccount.com")
    assert binding is not None
    assert deployment.outputs["gmail_topic"] == "projects/acme-mail/topics/gmail-notifications"
    assert env_of(deployment, "oauth")["GMAIL_PUBSUB_TOPIC"] == deployment.outputs["gmail_topic"]


def test_scheduler_jobs_post_renew_with_oidc_the_function_verifies(deployment):
    jobs = deployment.of_type(JOB)
    assert sorted(j.inputs["schedule"] for j in jobs) == ["0 */6 * * *", "0 3 * * *"]
    env = env_of(deployment, "renew")
    for job in jobs:
        target = job.inputs["httpTarget"]
        assert target["httpMethod"] == "POST"
        assert target["uri"] == env["PUSH_AUDIENCE"] + "/internal/renew"
        assert target["oidcToken"] == {"audience": env["PUSH_AUDIENCE"],
                                       "serviceAccountEmail": env["PUSH_SERVICE_ACCOUNT"]}
    assert invokers_of(deployment, "renew") == {f"serviceAccount:{env['PUSH_SERVICE_ACCOUNT']}"}


@pytest.mark.parametrize("function", PRIVATE)
def test_private_functions_have_no_public_invoker(deployment, function):
    invokers = invokers_of(deployment, function)
    assert invokers and not invokers & PUBLIC_MEMBERS
    assert invokers == {f"serviceAccount:{env_of(deployment, function)['PUSH_SERVICE_ACCOUNT']}"}
    # ... and no binding of any other IAM resource type opens them either.
    for r in deployment.resources:
        if r.inputs.get("name") == deployed_name(function) or r.inputs.get("cloudFunction") == deployed_name(function):
            assert r.inputs.get("member") not in PUBLIC_MEMBERS
            assert not PUBLIC_MEMBERS & set(r.inputs.get("members") or ())


def test_public_functions_are_invoked_only_by_the_gateway_account(deployment):
    gateway_account = deployment.of_type("gcp:apigateway/apiConfig:ApiConfig")[0].inputs[
        "gatewayConfig"]["backendConfig"]["googleServiceAccount"]
    for function in PUBLIC:
        assert invokers_of(deployment, function) == {f"serviceAccount:{gateway_account}"}


def test_no_secret_value_in_any_plain_environment(deployment):
    values = set(SECRET_VALUES.values())
    # The secrets do reach Secret Manager: the search below looks for values that exist.
    stored = {repr(v.inputs["secretData"]) for v in deployment.of_type("gcp:secretmanager/secretVersion:SecretVersion")}
    assert all(any(value in s for s in stored) for value in values)
    for function in deployment.of_type(FUNCTION):
        plain = repr(function.inputs)
        assert not [v for v in values if v in plain], function.name
        assert not function.inputs["serviceConfig"].get("secretEnvironmentVariables")
    assert env_of(deployment, "manage")["MAILBRIDGE_SECRETS"] == "secretmanager"


def test_secret_readers_are_exactly_the_functions_that_need_each_secret(deployment):
    email = {f: f"serviceAccount:mailbridge-{f.replace('_', '-')}@acme-mail.iam.gserviceaccount.com"
             for f in FUNCTIONS}
    for secret, readers in SECRET_READERS.items():
        granted = {m.inputs["member"] for m in deployment.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
                   if m.inputs["secretId"] == secret}
        assert granted == {email[f] for f in readers}, secret
    assert SECRET_READERS["admin-api-key"] == ("manage",)
    assert "deliver" not in SECRET_READERS["google-client-secret"]


def test_function_environment_names_api_md_section_9(deployment):
    for function in FUNCTIONS:
        env = env_of(deployment, function)
        assert env["MAILBRIDGE_STORE"] == "firestore" and env["MAILBRIDGE_BUS"] == "pubsub"
        assert env["GOOGLE_CLOUD_PROJECT"] == "acme-mail"
        assert env["PUBLIC_BASE_URL"] == deployment.outputs["gateway_url"]
        assert ("PUSH_AUDIENCE" in env) == (function in PRIVATE)


def test_outputs_give_the_redirect_uris_to_register():
    d = run_program({"mailbridge:publicBaseUrl": "https://mail.example.com/"})
    assert d.outputs["google_redirect_uri"] == "https://mail.example.com/oauth/callback/google"
    assert d.outputs["microsoft_redirect_uri"] == "https://mail.example.com/oauth/callback/microsoft"
    assert d.outputs["gateway_url"].startswith("https://") and d.outputs["gateway_url"].endswith(".gateway.dev")
    assert env_of(d, "oauth")["PUBLIC_BASE_URL"] == "https://mail.example.com"


def test_a_malformed_encryption_key_fails_without_showing_it():
    bad = "not-a-32-byte-key-SHOULD-NOT-LEAK"
    with pytest.raises(Exception) as raised:
        run_program({"mailbridge:tokenEncryptionKey": bad})
    assert "tokenEncryptionKey" in str(raised.value) and bad not in str(raised.value)
