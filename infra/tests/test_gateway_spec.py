"""The API Gateway document: every documented public route → its function, private routes never exposed."""
from __future__ import annotations

import base64

import pytest
import yaml

from conftest import REPO, SAMPLE_OPENAPI
from gateway_spec import build_spec, documented_routes, render
from mailbridge_infra.routes import PRIVATE, PUBLIC, ROUTES, function_for, function_url

URLS = {fn: function_url("europe-west1", "acme-mail", fn) for fn in PUBLIC}


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def test_sample_document_routes_each_operation_to_its_function():
    routes, source = documented_routes(SAMPLE_OPENAPI)
    assert source == str(SAMPLE_OPENAPI)
    spec = build_spec(URLS, routes)
    assert spec["swagger"] == "2.0"
    ops = {(m, p): op for m, p, op in operations(spec)}
    assert ops[("PATCH", "/v1/messages/{message_id}")]["x-google-backend"]["address"] == URLS["read"]
    assert ops[("POST", "/v1/connections/{connection_id}/backfill/pause")]["x-google-backend"]["address"] == URLS["manage"]
    assert ops[("POST", "/push/microsoft")]["x-google-backend"]["address"] == URLS["graph_push"]
    assert ops[("POST", "/v1/send")]["x-google-backend"]["address"] == URLS["send"]
    assert ops[("POST", "/v1/connect")]["summary"] == "Start connecting a mailbox"
    for method, path, op in operations(spec):
        backend = op["x-google-backend"]
        assert backend["address"] == URLS[function_for(method, path)]
        assert backend["path_translation"] == "APPEND_PATH_TO_ADDRESS"
        assert backend["jwt_audience"] == backend["address"]
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids)) == len(routes) - 2  # /push/gmail and /internal/renew left out


def test_private_routes_are_never_exposed_through_the_gateway():
    spec = build_spec(URLS, [(m, p, {}) for _, m, p in ROUTES])
    paths = set(spec["paths"])
    assert not paths & {"/push/gmail", "/internal/deliver", "/internal/renew"}
    with pytest.raises(KeyError):  # a private function has no URL to give the gateway
        build_spec({}, [("POST", "/v1/send", {})])
    assert all(function_for(m, p) not in PRIVATE for m, p, _ in operations(spec))


def test_path_parameters_are_declared_as_swagger_2_requires():
    routes, _ = documented_routes(SAMPLE_OPENAPI)
    ops = {(m, p): op for m, p, op in operations(build_spec(URLS, routes))}
    params = ops[("GET", "/v1/messages/{message_id}/attachments/{attachment_id}")]["parameters"]
    assert [(p["name"], p["in"], p["required"], p["type"]) for p in params] == [
        ("message_id", "path", True, "string"), ("attachment_id", "path", True, "string")]
    assert "parameters" not in ops[("POST", "/v1/send")]


def test_without_openapi_yaml_the_route_table_is_used(tmp_path):
    routes, source = documented_routes(tmp_path / "openapi.yaml")
    assert source.startswith("built-in")
    spec = build_spec(URLS, routes)
    public = {(m, p) for fn, m, p in ROUTES if fn in PUBLIC}
    assert {(m, p) for m, p, _ in operations(spec)} == public


def test_a_route_no_function_serves_is_refused(tmp_path):
    with pytest.raises(LookupError):
        build_spec(URLS, [("GET", "/v2/unknown", {})])
    broken = tmp_path / "openapi.yaml"
    broken.write_text("openapi: 3.0.3\npaths:\n  /x:\n    description: a: b\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        documented_routes(broken)


def test_deployed_api_config_is_the_generated_document(deployment):
    config = deployment.of_type("gcp:apigateway/apiConfig:ApiConfig")[0].inputs
    document = config["openapiDocuments"][0]["document"]
    deployed = yaml.safe_load(base64.b64decode(document["contents"]))
    routes, _ = documented_routes(SAMPLE_OPENAPI)
    assert deployed == build_spec(URLS | {fn: deployment.outputs["function_urls"][fn] for fn in PUBLIC}, routes)
    assert render(deployed) == base64.b64decode(document["contents"]).decode()


@pytest.mark.skipif(not (REPO / "openapi.yaml").is_file(), reason="the repository has no openapi.yaml yet")
def test_repository_openapi_yaml_maps_every_operation_to_a_function():
    routes, _ = documented_routes(REPO / "openapi.yaml")
    assert routes
    spec = build_spec(URLS, routes)  # raises LookupError naming any route no function serves
    assert spec["paths"]


def test_a_document_naming_another_function_than_the_table_is_refused():
    with pytest.raises(ValueError, match="route table says read"):
        build_spec(URLS, [("GET", "/v1/messages", {"x-mailbridge-function": "send"})])
    assert build_spec(URLS, [("GET", "/v1/messages", {"x-mailbridge-function": "read"})])["paths"]
