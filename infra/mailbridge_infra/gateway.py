"""API Gateway: the API, its config (the generated OpenAPI 2.0 document) and the gateway."""
from __future__ import annotations

import base64

import pulumi
import pulumi_gcp as gcp

API_ID = "mailbridge"


class Gateway(pulumi.ComponentResource):
    """Serves `spec` (gateway_spec.render) at `url`, calling the functions as `account`.

    An API config cannot change in place: a new spec makes a new config (named from a prefix),
    created before the old one is removed, so the gateway never points at nothing.
    """

    def __init__(self, name: str, project: str, region: str, spec: str,
                 account: gcp.serviceaccount.Account, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailbridge:infra:Gateway", name, None, opts)
        self.api = gcp.apigateway.Api(
            f"{name}-api", project=project, api_id=API_ID, display_name="mailbridge",
            opts=pulumi.ResourceOptions(parent=self))
        self.config = gcp.apigateway.ApiConfig(
            f"{name}-config", project=project, api=self.api.api_id, api_config_id_prefix=f"{API_ID}-",
            openapi_documents=[{"document": {
                "path": "openapi.yaml",
                "contents": base64.b64encode(spec.encode()).decode(),
            }}],
            gateway_config={"backend_config": {"google_service_account": account.email}},
            opts=pulumi.ResourceOptions(parent=self))  # replaced create-before-delete
        self.gateway = gcp.apigateway.Gateway(
            f"{name}-gateway", project=project, region=region, gateway_id=API_ID,
            api_config=self.config.id, display_name="mailbridge",
            opts=pulumi.ResourceOptions(parent=self))
        self.url: pulumi.Output[str] = self.gateway.default_hostname.apply(lambda host: f"https://{host}")
        self.register_outputs({"url": self.url})
