"""The eight Cloud Functions (gen2): source archives named by content hash, environment, invokers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import pulumi
import pulumi_gcp as gcp

from archive import write_archive
from mailbridge_infra.accounts import ServiceAccounts
from mailbridge_infra.pubsub import DELIVERY_TOPIC, GMAIL_TOPIC, topic_path
from mailbridge_infra.routes import FUNCTIONS, PRIVATE, deployed_name, function_url

RUNTIME = "python311"
ENTRY_POINT = "handle"
# Function → (memory, timeout in seconds). Pushed functions answer within their subscription's
# ack deadline (gmail_push 60 s, deliver 30 s); renew walks every connection.
RESOURCES: dict[str, tuple[str, int]] = {
    "oauth": ("512Mi", 60), "send": ("512Mi", 60), "read": ("512Mi", 60), "manage": ("512Mi", 60),
    "gmail_push": ("512Mi", 60), "graph_push": ("512Mi", 60), "deliver": ("512Mi", 30),
    "renew": ("512Mi", 540),
}


def function_environment(function: str, *, project: str, region: str, public_base_url: pulumi.Input[str],
                         google_client_id: str, ms_client_id: str, google_scopes: str | None = None,
                         ms_scopes: str | None = None, caller: pulumi.Input[str] | None = None
                         ) -> dict[str, pulumi.Input[str]]:
    """The plain environment of `function` (API.md section 9). Never a secret: those are read from
    Secret Manager at runtime. `caller`: the email of the only account that may call a private
    function, verified as PUSH_SERVICE_ACCOUNT, with the function's own URL as PUSH_AUDIENCE."""
    env: dict[str, pulumi.Input[str]] = {
        "MAILBRIDGE_STORE": "firestore",
        "MAILBRIDGE_BUS": "pubsub",
        "MAILBRIDGE_SECRETS": "secretmanager",
        "MAILBRIDGE_PUSH_AUTH": "oidc",
        "GOOGLE_CLOUD_PROJECT": project,
        "PUBLIC_BASE_URL": public_base_url,
        "GOOGLE_CLIENT_ID": google_client_id,
        "MS_CLIENT_ID": ms_client_id,
        "GMAIL_PUBSUB_TOPIC": topic_path(project, GMAIL_TOPIC),
        "MAILBRIDGE_DELIVERY_TOPIC": topic_path(project, DELIVERY_TOPIC),
    }
    if google_scopes:
        env["GOOGLE_SCOPES"] = google_scopes
    if ms_scopes:
        env["MS_SCOPES"] = ms_scopes
    if function in PRIVATE:
        if caller is None:
            raise ValueError(f"private function {function} needs the email of its caller")
        env["PUSH_AUDIENCE"] = function_url(region, project, function)
        env["PUSH_SERVICE_ACCOUNT"] = caller
    return env


def _check_url(url: str, predicted: str) -> None:
    """Audiences, push endpoints and gateway backends were written with the predicted URL: say so
    loudly if Google ever answers another one."""
    if url != predicted:
        pulumi.log.warn(f"function URL {url} is not the predicted {predicted}: OIDC audiences will not match")


@dataclass
class FunctionsArgs:
    project: str
    region: str
    accounts: ServiceAccounts
    # function → its plain environment (function_environment)
    environment: Mapping[str, Mapping[str, pulumi.Input[str]]]
    # function → IAM members allowed to invoke it (roles/run.invoker on its Cloud Run service)
    invokers: Mapping[str, Sequence[pulumi.Input[str]]]
    source_root: Path
    build_dir: Path
    functions: Sequence[str] = field(default_factory=lambda: FUNCTIONS)


class Functions(pulumi.ComponentResource):
    """Uploads each function's archive as `<name>/<sha256>.zip` and deploys it (gen2, `handle`).

    The object name carries the archive's hash: changed sources give a new object and a redeploy,
    unchanged ones change nothing. `functions[name]` are the deployed functions.
    """

    def __init__(self, name: str, args: FunctionsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailbridge:infra:Functions", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = gcp.storage.Bucket(
            f"{name}-source", project=args.project, location=args.region.upper(),
            uniform_bucket_level_access=True, public_access_prevention="enforced",
            force_destroy=True, opts=child)
        self.objects: dict[str, gcp.storage.BucketObject] = {}
        self.functions: dict[str, gcp.cloudfunctionsv2.Function] = {}
        for fn in args.functions:
            path, digest = write_archive(fn, args.build_dir, args.source_root)
            obj = gcp.storage.BucketObject(
                f"{name}-{fn}-source", bucket=self.bucket.name, name=f"{deployed_name(fn)}/{digest}.zip",
                source=pulumi.FileAsset(str(path)), content_type="application/zip", opts=child)
            memory, timeout = RESOURCES[fn]
            function = gcp.cloudfunctionsv2.Function(
                f"{name}-{fn}", project=args.project, location=args.region, name=deployed_name(fn),
                description=f"mailbridge {fn} (functions/{fn}/main.py)",
                build_config={
                    "runtime": RUNTIME,
                    "entry_point": ENTRY_POINT,
                    "source": {"storage_source": {"bucket": self.bucket.name, "object": obj.name}},
                    "service_account": args.accounts.build.name,
                },
                service_config={
                    "available_memory": memory,
                    "timeout_seconds": timeout,
                    "max_instance_count": 20,
                    "service_account_email": args.accounts.functions[fn].email,
                    "environment_variables": dict(args.environment[fn]),
                    # Pub/Sub, Cloud Scheduler and API Gateway all call from outside any VPC;
                    # IAM (roles/run.invoker below) is what keeps the functions private.
                    "ingress_settings": "ALLOW_ALL",
                    "all_traffic_on_latest_revision": True,
                },
                opts=child)
            function.url.apply(lambda url, fn=fn: _check_url(url, function_url(args.region, args.project, fn)))
            for i, member in enumerate(args.invokers.get(fn, ())):
                gcp.cloudrunv2.ServiceIamMember(
                    f"{name}-{fn}-invoker-{i}", project=args.project, location=args.region,
                    name=function.name, role="roles/run.invoker", member=member, opts=child)
            self.objects[fn] = obj
            self.functions[fn] = function
        self.register_outputs({fn: f.url for fn, f in self.functions.items()})
