"""The renewals topic: renew may publish its pages, and a push subscription brings them back to /internal/renew."""
from __future__ import annotations

import pulumi
import pulumi_gcp as gcp
import pytest

from conftest import PROJECT, Deployment, RecordingMocks
from mailbridge_infra.pubsub import (RENEWALS_ATTEMPTS, RENEWALS_TOPIC, PushArgs, PushSubscriptions,
                                     Topics, renewals_push)

SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC_MEMBER = "gcp:pubsub/topicIAMMember:TopicIAMMember"
ACCOUNT_MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"
RENEW_URL = f"https://europe-west1-{PROJECT}.cloudfunctions.net/mailbridge-renew"
SCHEDULER = f"mailbridge-scheduler@{PROJECT}.iam.gserviceaccount.com"
PUSH = f"mailbridge-push-invoker@{PROJECT}.iam.gserviceaccount.com"
RENEW_RUNTIME = f"serviceAccount:mailbridge-renew@{PROJECT}.iam.gserviceaccount.com"
AGENT = "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"


def _account(key: str, account_id: str) -> gcp.serviceaccount.Account:
    return gcp.serviceaccount.Account(key, project=PROJECT, account_id=account_id, display_name=key)


@pytest.fixture(scope="module")
def renewals() -> Deployment:
    """Topics and the push subscriptions wired as the stack wires them, the renewals one included."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="mailbridge", stack="renewals-test", preview=False)

    def program():
        scheduler = _account("scheduler", "mailbridge-scheduler")
        push = _account("push", "mailbridge-push-invoker")
        functions = ("oauth", "send", "manage", "gmail_push", "graph_push", "renew", "deliver")
        publishers = {fn: f"serviceAccount:mailbridge-{fn.replace('_', '-')}@{PROJECT}.iam.gserviceaccount.com"
                      for fn in functions}
        topics = Topics("topics", PROJECT, publishers)
        deliveries = PushArgs("mailbridge-deliveries", topics.topics["mailbridge-deliveries"],
                              "https://deliver.example/internal/deliver", "https://deliver.example", 30, 100)
        PushSubscriptions("push", PROJECT, [deliveries, renewals_push(topics, RENEW_URL, scheduler)], push)

    pulumi.runtime.test(program)()
    return Deployment(mocks.resources)


def test_renewals_topic_exists_and_only_renew_may_publish(renewals):
    topics = {r.inputs["name"] for r in renewals.of_type("gcp:pubsub/topic:Topic")}
    assert RENEWALS_TOPIC in topics
    publishers = {m.inputs["member"] for m in renewals.of_type(TOPIC_MEMBER)
                  if m.inputs["topic"] == RENEWALS_TOPIC and m.inputs["role"] == "roles/pubsub.publisher"}
    assert publishers == {RENEW_RUNTIME}


def test_renewals_push_calls_internal_renew_with_the_renew_functions_caller(renewals):
    sub = renewals.named(SUBSCRIPTION, name="mailbridge-renewals-push").inputs
    assert sub["pushConfig"]["pushEndpoint"] == RENEW_URL + "/internal/renew"
    # The renew function checks one PUSH_SERVICE_ACCOUNT (the scheduler's) and audience (its URL).
    assert sub["pushConfig"]["oidcToken"] == {"audience": RENEW_URL, "serviceAccountEmail": SCHEDULER}
    assert sub["ackDeadlineSeconds"] >= 540          # the renew function's timeout
    assert sub["deadLetterPolicy"]["maxDeliveryAttempts"] == RENEWALS_ATTEMPTS
    assert sub["deadLetterPolicy"]["deadLetterTopic"] == f"projects/{PROJECT}/topics/mailbridge-renewals-dead-letter"
    assert sub["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
    assert sub["expirationPolicy"] == {"ttl": ""}


def test_other_pushes_keep_the_push_account(renewals):
    sub = renewals.named(SUBSCRIPTION, name="mailbridge-deliveries-push").inputs
    assert sub["pushConfig"]["oidcToken"]["serviceAccountEmail"] == PUSH


def test_pubsub_agent_may_mint_tokens_for_the_scheduler_account(renewals):
    grants = [m.inputs for m in renewals.of_type(ACCOUNT_MEMBER)
              if m.inputs["role"] == "roles/iam.serviceAccountTokenCreator" and m.inputs["member"] == AGENT]
    assert sorted(g["serviceAccountId"].rsplit("/", 1)[1] for g in grants) == sorted([PUSH, SCHEDULER])


def test_the_deployment_declares_the_renewals_topic_for_renew(deployment):
    assert any(r.inputs["name"] == RENEWALS_TOPIC for r in deployment.of_type("gcp:pubsub/topic:Topic"))
    assert deployment.named(TOPIC_MEMBER, topic=RENEWALS_TOPIC, role="roles/pubsub.publisher",
                            member=RENEW_RUNTIME) is not None
