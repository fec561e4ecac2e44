"""Pub/Sub: the Gmail notification, delivery and renewal topics, their push subscriptions and dead letters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pulumi
import pulumi_gcp as gcp

from mailbridge_infra.routes import RENEW_PATH

GMAIL_TOPIC = "gmail-notifications"
DELIVERY_TOPIC = "mailbridge-deliveries"
RENEWALS_TOPIC = "mailbridge-renewals"      # renew's fan-out: {"connection_ids": [...]} pages → /internal/renew
# The renew function runs up to 540 s (functions.py); the ack deadline is the push's timeout, so it
# must not be shorter. A page that keeps failing stops after a few attempts: the next tick redoes it.
RENEWALS_ACK_SECONDS, RENEWALS_ATTEMPTS = 600, 5
# Gmail's own publisher: `users.watch` fails unless it may publish to the topic.
GMAIL_PUBLISHER = "serviceAccount:gmail-api-push@system.gserviceaccount.com"
# Topic → functions that publish to it (roles/pubsub.publisher on that topic only).
PUBLISHERS: dict[str, tuple[str, ...]] = {
    # deliver re-publishes a delivery before Pub/Sub's attempt cap so retries last 24 h.
    DELIVERY_TOPIC: ("oauth", "send", "manage", "gmail_push", "graph_push", "renew", "deliver"),
    RENEWALS_TOPIC: ("renew",),
}
NEVER_EXPIRE = {"ttl": ""}          # an idle subscription otherwise dies after 31 days
RETRY = {"minimum_backoff": "10s", "maximum_backoff": "600s"}
DEAD_LETTER_RETENTION = "604800s"   # 7 days to look at (and replay) what was dead-lettered


def topic_path(project: str, topic: str) -> str:
    """`projects/P/topics/T`, the form GMAIL_PUBSUB_TOPIC and the bus use."""
    return f"projects/{project}/topics/{topic}"


class Topics(pulumi.ComponentResource):
    """The topics, Gmail's publisher grant, and each function's publisher grant (PUBLISHERS)."""

    def __init__(self, name: str, project: str, publishers: Mapping[str, pulumi.Input[str]],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailbridge:infra:Topics", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topics = {
            topic: gcp.pubsub.Topic(f"{name}-{topic}", project=project, name=topic, opts=child)
            for topic in (GMAIL_TOPIC, DELIVERY_TOPIC, RENEWALS_TOPIC)
        }
        # Blocked by the org policy iam.allowedPolicyMemberDomains in some organisations
        # (infra/README.md says what to do then).
        gcp.pubsub.TopicIAMMember(
            f"{name}-gmail-api-push", project=project, topic=self.topics[GMAIL_TOPIC].name,
            role="roles/pubsub.publisher", member=GMAIL_PUBLISHER, opts=child)
        for topic, functions in PUBLISHERS.items():
            for function in functions:
                gcp.pubsub.TopicIAMMember(
                    f"{name}-{topic}-{function}", project=project, topic=self.topics[topic].name,
                    role="roles/pubsub.publisher", member=publishers[function], opts=child)
        self.register_outputs({t: topic.id for t, topic in self.topics.items()})


@dataclass(frozen=True)
class PushArgs:
    """One push subscription: `topic` → POST `endpoint`, with an OIDC token for `audience` minted
    for `account` (default: PushSubscriptions' push account)."""
    key: str
    topic: gcp.pubsub.Topic
    endpoint: str
    audience: str
    ack_deadline_seconds: int
    max_delivery_attempts: int
    account: gcp.serviceaccount.Account | None = None


def renewals_push(topics: "Topics", renew_url: pulumi.Input[str],
                  caller: gcp.serviceaccount.Account) -> PushArgs:
    """The renewals subscription: pages of the renew tick → the renew function's /internal/renew.
    `caller` is the renew function's one PUSH_SERVICE_ACCOUNT (the scheduler's account), so the
    function accepts the scheduler's calls and these pushes alike; the audience is its URL."""
    endpoint = pulumi.Output.concat(renew_url, RENEW_PATH)
    return PushArgs(RENEWALS_TOPIC, topics.topics[RENEWALS_TOPIC], endpoint, renew_url,
                    RENEWALS_ACK_SECONDS, RENEWALS_ATTEMPTS, account=caller)


class PushSubscriptions(pulumi.ComponentResource):
    """Push subscriptions with OIDC tokens, retry backoff and a dead-letter topic each.

    Every dead-letter topic gets its own pull subscription (else dead letters are dropped), and the
    Pub/Sub service agent gets publisher on it and subscriber on the source subscription (it moves
    the messages) plus token creator on every account it mints OIDC tokens for.
    """

    def __init__(self, name: str, project: str, pushes: list[PushArgs], push_account: gcp.serviceaccount.Account,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailbridge:infra:PushSubscriptions", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        agent = gcp.projects.ServiceIdentity(
            f"{name}-pubsub-agent", project=project, service="pubsub.googleapis.com", opts=child)
        gcp.serviceaccount.IAMMember(
            f"{name}-agent-token-creator", service_account_id=push_account.name,
            role="roles/iam.serviceAccountTokenCreator", member=agent.member, opts=child)
        self.subscriptions: dict[str, gcp.pubsub.Subscription] = {}
        self.dead_letter_topics: dict[str, gcp.pubsub.Topic] = {}
        self.dead_letter_subscriptions: dict[str, gcp.pubsub.Subscription] = {}
        for push in pushes:
            account = push.account or push_account
            if push.account is not None and push.account is not push_account:
                gcp.serviceaccount.IAMMember(
                    f"{name}-{push.key}-agent-token-creator", service_account_id=push.account.name,
                    role="roles/iam.serviceAccountTokenCreator", member=agent.member, opts=child)
            dead = gcp.pubsub.Topic(f"{name}-{push.key}-dead-letter", project=project,
                                    name=f"{push.key}-dead-letter", opts=child)
            dead_sub = gcp.pubsub.Subscription(
                f"{name}-{push.key}-dead-letter", project=project, name=f"{push.key}-dead-letter",
                topic=dead.id, ack_deadline_seconds=60, expiration_policy=NEVER_EXPIRE,
                message_retention_duration=DEAD_LETTER_RETENTION, opts=child)
            publisher = gcp.pubsub.TopicIAMMember(
                f"{name}-{push.key}-dead-letter-agent", project=project, topic=dead.name,
                role="roles/pubsub.publisher", member=agent.member, opts=child)
            subscription = gcp.pubsub.Subscription(
                f"{name}-{push.key}", project=project, name=f"{push.key}-push", topic=push.topic.id,
                ack_deadline_seconds=push.ack_deadline_seconds,
                push_config={
                    "push_endpoint": push.endpoint,
                    "oidc_token": {"service_account_email": account.email, "audience": push.audience},
                },
                retry_policy=RETRY,
                dead_letter_policy={"dead_letter_topic": dead.id,
                                    "max_delivery_attempts": push.max_delivery_attempts},
                expiration_policy=NEVER_EXPIRE,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[publisher]))
            gcp.pubsub.SubscriptionIAMMember(
                f"{name}-{push.key}-agent", project=project, subscription=subscription.name,
                role="roles/pubsub.subscriber", member=agent.member, opts=child)
            self.subscriptions[push.key] = subscription
            self.dead_letter_topics[push.key] = dead
            self.dead_letter_subscriptions[push.key] = dead_sub
        self.register_outputs({k: s.name for k, s in self.subscriptions.items()})
