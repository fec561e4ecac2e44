"""Runs the Pulumi program under pulumi.runtime.set_mocks: no CLI, no cloud, every resource recorded."""
from __future__ import annotations

import runpy
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest

INFRA = Path(__file__).resolve().parent.parent
REPO = INFRA.parent
if str(INFRA) not in sys.path:  # what `pulumi up` does: the program's directory is importable
    sys.path.insert(0, str(INFRA))

SAMPLE_OPENAPI = Path(__file__).resolve().parent / "fixtures" / "openapi_sample.yaml"
PROJECT, REGION, PROJECT_NUMBER = "acme-mail", "europe-west1", "123456789012"
# Recognizable secret values: no function's plain environment may contain any of them.
SECRET_VALUES = {
    "mailbridge:googleClientSecret": "GOCSPX-test-google-secret-4f1d",
    "mailbridge:msClientSecret": "ms~test-microsoft-secret-9a2c",
    "mailbridge:adminApiKey": "mbk_test-admin-key-7e5b-0000000000000000000000000000",
    "mailbridge:tokenEncryptionKey": "dGVzdC10b2tlbi1lbmNyeXB0aW9uLWtleS0zMmJ5dGU=",  # base64 of 32 bytes
}
CONFIG = {
    "gcp:project": PROJECT,
    "gcp:region": REGION,
    "mailbridge:googleClientId": "test-client.apps.example.com",
    "mailbridge:msClientId": "00000000-test-ms-client-id",
    # A fixed document: the repository's own openapi.yaml is checked by test_gateway_spec.py.
    "mailbridge:openapiPath": str(SAMPLE_OPENAPI),
    # Archives of test runs stay out of infra/.build.
    "mailbridge:buildDir": str(Path(tempfile.gettempdir()) / "mailbridge-infra-test-build"),
    **SECRET_VALUES,
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "archive: builds function archives into fresh virtualenvs (slow: pip installs)")


@dataclass
class Recorded:
    typ: str
    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers like GCP for the outputs the program reads (emails, URLs, ids) and records everything."""

    def __init__(self):
        self.resources: list[Recorded] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        rid = f"{args.name}-id"
        t = args.typ
        if t == "gcp:serviceaccount/account:Account":
            state["email"] = f"{args.inputs['accountId']}@{PROJECT}.iam.gserviceaccount.com"
            state["name"] = rid = f"projects/{PROJECT}/serviceAccounts/{state['email']}"
        elif t == "gcp:cloudfunctionsv2/function:Function":
            state["url"] = f"https://{args.inputs['location']}-{PROJECT}.cloudfunctions.net/{args.inputs['name']}"
        elif t == "gcp:pubsub/topic:Topic":
            rid = f"projects/{PROJECT}/topics/{args.inputs['name']}"
        elif t == "gcp:pubsub/subscription:Subscription":
            rid = f"projects/{PROJECT}/subscriptions/{args.inputs['name']}"
        elif t == "gcp:projects/serviceIdentity:ServiceIdentity":
            agent = args.inputs["service"].split(".")[0]
            state["email"] = f"service-{PROJECT_NUMBER}@gcp-sa-{agent}.iam.gserviceaccount.com"
            state["member"] = f"serviceAccount:{state['email']}"
        elif t == "gcp:apigateway/gateway:Gateway":
            state["defaultHostname"] = f"{args.inputs['gatewayId']}-3x4mpl3.ew.gateway.dev"
        elif t == "gcp:storage/bucket:Bucket":
            state.setdefault("name", f"{args.name}-b0c4e7")
        elif t == "gcp:secretmanager/secret:Secret":
            rid = f"projects/{PROJECT}/secrets/{args.inputs['secretId']}"
        self.resources.append(Recorded(t, args.name, dict(args.inputs), state))
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


@dataclass
class Deployment:
    resources: list[Recorded]
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def named(self, typ: str, **match: Any) -> Recorded:
        """The one resource of `typ` whose inputs hold every `match` item."""
        found = [r for r in self.of_type(typ) if all(r.inputs.get(k) == v for k, v in match.items())]
        assert len(found) == 1, f"{len(found)} {typ} match {match}"
        return found[0]


def run_program(overrides: dict[str, str] | None = None) -> Deployment:
    """Run infra/__main__.py as `pulumi up` would, against the mocks; returns resources and outputs."""
    mocks = RecordingMocks()
    values = {**CONFIG, **(overrides or {})}
    pulumi.runtime.set_all_config(values, [k for k in values if k in SECRET_VALUES])
    pulumi.runtime.set_mocks(mocks, project="mailbridge", stack="test", preview=False)
    outputs: dict[str, Any] = {}

    def program():
        exported = runpy.run_path(str(INFRA / "__main__.py"))["outputs"]
        return pulumi.Output.all(**exported).apply(outputs.update)

    pulumi.runtime.test(program)()
    return Deployment(mocks.resources, outputs)


@pytest.fixture(scope="session")
def deployment() -> Deployment:
    return run_program()
