"""One service account per function, and one per caller (push, scheduler, gateway, build): least privilege."""
from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from mailbridge_infra.routes import FUNCTIONS

# Every function reads and writes the Firestore store (tenants, keys, connections, ...).
STORE_USERS = FUNCTIONS


def member(account: gcp.serviceaccount.Account) -> pulumi.Output[str]:
    """The IAM member string of a service account."""
    return account.email.apply(lambda email: f"serviceAccount:{email}")


class ServiceAccounts(pulumi.ComponentResource):
    """Runtime identities of the functions and of their callers.

    `functions[name]`: the runtime account of function `name` (roles/datastore.user on the project;
    secret and topic grants are given where those resources are made). `push`: the identity of
    the Pub/Sub push subscriptions' OIDC tokens; `scheduler`: of the Cloud Scheduler jobs;
    `gateway`: of API Gateway's calls to the public functions; `build`: of Cloud Build.
    """

    def __init__(self, name: str, project: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailbridge:infra:ServiceAccounts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def account(key: str, account_id: str, what: str) -> gcp.serviceaccount.Account:
            return gcp.serviceaccount.Account(
                f"{name}-{key}", project=project, account_id=account_id,
                display_name=f"mailbridge {what}", opts=child)

        self.functions = {
            fn: account(fn, "mailbridge-" + fn.replace("_", "-"), f"function {fn}") for fn in FUNCTIONS
        }
        self.push = account("push", "mailbridge-push-invoker", "Pub/Sub push (OIDC) invoker")
        self.scheduler = account("scheduler", "mailbridge-scheduler", "Cloud Scheduler (OIDC) invoker")
        self.gateway = account("gateway", "mailbridge-gateway", "API Gateway backend invoker")
        self.build = account("build", "mailbridge-build", "Cloud Build of the functions")

        for fn in STORE_USERS:
            gcp.projects.IAMMember(
                f"{name}-{fn}-datastore-user", project=project, role="roles/datastore.user",
                member=member(self.functions[fn]), opts=child)
        # Builds of gen2 functions run as this account: new projects no longer let the default
        # compute account build, and this role is what Cloud Functions documents for a build account.
        gcp.projects.IAMMember(
            f"{name}-build-builder", project=project, role="roles/cloudbuild.builds.builder",
            member=member(self.build), opts=child)
        self.register_outputs({"functions": {fn: a.email for fn, a in self.functions.items()}})
