"""The Google APIs mailbridge needs, enabled before anything that uses them."""
from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

SERVICES = (
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "storage.googleapis.com",
    "firestore.googleapis.com",
    "pubsub.googleapis.com",
    "secretmanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "apigateway.googleapis.com",
    "servicemanagement.googleapis.com",
    "servicecontrol.googleapis.com",
    "gmail.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
)


class Apis(pulumi.ComponentResource):
    """Enables SERVICES on the project. Never disables them on destroy: other workloads may use them."""

    def __init__(self, name: str, project: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailbridge:infra:Apis", name, None, opts)
        self.services: list[gcp.projects.Service] = [
            gcp.projects.Service(
                f"{name}-{service.split('.')[0]}",
                project=project,
                service=service,
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for service in SERVICES
        ]
        self.register_outputs({"services": [s.service for s in self.services]})
