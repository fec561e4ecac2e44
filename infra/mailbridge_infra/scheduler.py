"""Cloud Scheduler jobs that POST /internal/renew with an OIDC token (API.md sections 1 and 8)."""
from __future__ import annotations

import base64

import pulumi
import pulumi_gcp as gcp

from mailbridge_infra.routes import RENEW_PATH

# Job suffix → cron (UTC). Gmail watches die at 7 days and are renewed daily; Graph
# subscriptions (≤ 3 days) and stale connections are looked at every 6 hours.
SCHEDULES = {"daily": "0 3 * * *", "every-6h": "0 */6 * * *"}
ATTEMPT_DEADLINE = "540s"  # the renew function's own timeout


class RenewSchedule(pulumi.ComponentResource):
    """One job per SCHEDULES entry. `url`: the renew function's URL, which is also the token's
    audience (the function checks it as PUSH_AUDIENCE); `account`: the token's identity."""

    def __init__(self, name: str, project: str, region: str, url: str,
                 account: gcp.serviceaccount.Account, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailbridge:infra:RenewSchedule", name, None, opts)
        self.jobs = [
            gcp.cloudscheduler.Job(
                f"{name}-{suffix}", project=project, region=region, name=f"mailbridge-renew-{suffix}",
                description=f"mailbridge: POST {RENEW_PATH} ({cron} UTC)",
                schedule=cron, time_zone="Etc/UTC", attempt_deadline=ATTEMPT_DEADLINE,
                retry_config={"retry_count": 2, "min_backoff_duration": "60s"},
                http_target={
                    "uri": url + RENEW_PATH,
                    "http_method": "POST",
                    "headers": {"Content-Type": "application/json"},
                    "body": base64.b64encode(b"{}").decode(),
                    "oidc_token": {"service_account_email": account.email, "audience": url},
                },
                opts=pulumi.ResourceOptions(parent=self))
            for suffix, cron in SCHEDULES.items()
        ]
        self.register_outputs({"jobs": [j.name for j in self.jobs]})
