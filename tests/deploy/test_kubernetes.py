"""deploy/kubernetes and deploy/kserve: valid for a pinned Kubernetes, and true to the image."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import ROOT
from tests.deploy.kube import (
    KUBERNETES_VERSION,
    by_kind,
    check_kserve,
    kustomize_command,
    render,
    render_with_tool,
)

KUSTOMIZATIONS = [ROOT / "deploy/kubernetes/base", ROOT / "deploy/kubernetes/overlays/example"]
INFERENCE_SERVICE = ROOT / "deploy/kserve/inferenceservice.yaml"
GRPC_INFERENCE_SERVICE = ROOT / "deploy/kserve/inferenceservice-grpc.yaml"
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def rendered(folder: Path) -> list[dict[str, Any]]:
    """The tool's rendering where it exists; in CI without one, ours (held equal below)."""
    if kustomize_command() is not None:
        return render_with_tool(folder)
    if not os.environ.get("CI"):
        pytest.skip("no kustomize binary (kustomize or kubectl) on PATH; CI renders without one")
    return render(folder)


def image_facts() -> dict[str, Any]:
    """What the serving image really is, read from its Dockerfile and the Makefile."""
    port = re.search(r"^EXPOSE (\d+)$", DOCKERFILE, re.M)
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE, re.M)
    image = re.search(r"^IMAGE \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    grpc = re.search(r"^FROM base AS grpc$.*?^EXPOSE (\d+)$", DOCKERFILE, re.M | re.S)
    assert port
    assert user
    assert image
    assert grpc
    assert int(grpc[1]) == Settings.model_fields["grpc_port"].default  # the -grpc image's
    return {
        "port": int(port[1]),
        "grpc_port": int(grpc[1]),
        "uid": int(user[1]),
        "gid": int(user[2]),
        "image": image[1],
    }


@pytest.fixture(scope="module")
def answers(penguins_store: Path) -> Iterator[Callable[[str], int]]:
    """The status the real app answers a GET with, once its model is loaded."""
    with TestClient(create_app(Settings(model_dir=penguins_store))) as client:
        yield lambda path: client.get(path).status_code


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_every_rendered_manifest_is_valid_kubernetes(folder: Path) -> None:
    documents = rendered(folder)
    assert {d["kind"] for d in documents} == {
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_strict_check_refuses_a_misspelt_field() -> None:
    deployment = copy.deepcopy(by_kind(render(KUSTOMIZATIONS[0]))["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(jsonschema.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_our_rendering_matches_the_tool(folder: Path) -> None:
    if kustomize_command() is None:
        pytest.skip("no kustomize binary (kustomize or kubectl) on PATH to compare with")
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(render(folder), key=key) == sorted(render_with_tool(folder), key=key)


def test_the_deployment_matches_the_image(answers: Callable[[str], int]) -> None:
    facts = image_facts()
    documents = by_kind(render(KUSTOMIZATIONS[0]))
    deployment = documents["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    name, _, tag = container["image"].partition(":")
    assert name == facts["image"]
    # make build-model's tag, RUNTIME=grpc
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9]+-grpc", tag)
    assert container["ports"] == [
        {"name": "http", "containerPort": facts["port"], "protocol": "TCP"},
        {"name": "grpc", "containerPort": facts["grpc_port"], "protocol": "TCP"},
    ]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        facts["uid"],
        facts["gid"],
    )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
        assert answers(container[probe]["httpGet"]["path"]) == 200
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert answers(annotations["prometheus.io/path"]) == 200
    assert int(annotations["prometheus.io/port"]) == facts["port"]
    # Settings the service really reads, and a key file inside the mounted secret.
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) <= {name.upper() for name in Settings.model_fields}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["API_KEY_FILE"].startswith(mounts["api-key"] + "/")
    assert mounts["tmp"] == "/tmp"  # the only path the service writes, on a read-only root
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Draining: the pause plus the service's own shutdown grace fit in the pod's grace period.
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "python"  # the image has no shell or sleep; its CMD is python
    assert re.search(r"^CMD \[\"python\"", DOCKERFILE, re.M)
    seconds = float(re.search(r"sleep\((\d+)\)", pause[-1])[1])  # type: ignore[index]
    assert seconds + float(env["SHUTDOWN_TIMEOUT"]) < pod["terminationGracePeriodSeconds"]
    assert pod["automountServiceAccountToken"] is False
    assert documents["ServiceAccount"]["automountServiceAccountToken"] is False


def test_the_other_objects_point_at_the_deployment() -> None:
    documents = by_kind(render(KUSTOMIZATIONS[1]))
    deployment = documents["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selected = [
        documents["Service"]["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"],
        documents["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        documents["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selected:
        assert selector.items() <= pod_labels.items()
    port_names = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert {p["targetPort"] for p in documents["Service"]["spec"]["ports"]} == port_names
    assert {p["port"] for p in documents["NetworkPolicy"]["spec"]["ingress"][0]["ports"]} == (
        port_names
    )
    # The overlay turns tracing on: its pods may reach the collector and DNS, nothing else.
    egress = documents["NetworkPolicy"]["spec"]["egress"]
    assert sorted(p["port"] for rule in egress for p in rule["ports"]) == [53, 53, 4318]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")
    assert "API_KEY_FILE" in env  # the base's entries stay
    assert by_kind(render(KUSTOMIZATIONS[0]))["NetworkPolicy"]["spec"]["egress"] == []
    target = documents["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert documents["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 3  # the overlay's
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/example/sklearn-serve:penguins-1-grpc"
    assert {d["metadata"]["namespace"] for d in documents.values()} == {"ml"}
    secret = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert secret["secret"]["secretName"] == "sklearn-serve-api-key"


def inference_service() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(INFERENCE_SERVICE.read_text())
    return document


def test_the_inference_service_has_only_fields_kserve_defines() -> None:
    document = inference_service()
    assert document["apiVersion"] == "serving.kserve.io/v1beta1"
    assert document["kind"] == "InferenceService"
    check_kserve(document, "V1beta1InferenceService", "InferenceService")


def test_the_kserve_walk_refuses_an_unknown_field() -> None:
    document = inference_service()
    document["spec"]["predictor"]["protocol"] = "v2"
    with pytest.raises(AssertionError, match=r"predictor\.protocol is not a field"):
        check_kserve(document, "V1beta1InferenceService", "InferenceService")
    document = inference_service()
    document["spec"]["predictor"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(jsonschema.ValidationError, match="readinesProbe"):
        check_kserve(document, "V1beta1InferenceService", "InferenceService")


def test_the_inference_service_matches_the_image_and_the_v2_routes(
    answers: Callable[[str], int],
) -> None:
    facts = image_facts()
    predictor = inference_service()["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["ports"][0]["containerPort"] == facts["port"]
    name, _, tag = container["image"].rpartition(":")
    assert name.endswith("/" + facts["image"])
    env = {e["name"]: e["value"] for e in container["env"]}
    assert tag.startswith(env["MODEL_NAME"] + "-")  # the baked model is the one named
    assert set(env) <= {name.upper() for name in Settings.model_fields}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe"):
        assert answers(container[probe]["httpGet"]["path"]) == 200
        assert container[probe]["httpGet"]["port"] == facts["port"]
    assert (
        predictor["securityContext"]["runAsUser"],
        predictor["securityContext"]["runAsGroup"],
    ) == (
        facts["uid"],
        facts["gid"],
    )


def test_the_grpc_inference_service_is_the_http_one_on_grpc_s_port() -> None:
    facts = image_facts()
    document: dict[str, Any] = yaml.safe_load(GRPC_INFERENCE_SERVICE.read_text())
    check_kserve(document, "V1beta1InferenceService", "InferenceService")
    (container,) = document["spec"]["predictor"]["containers"]
    assert container["ports"] == [
        {"name": "h2c", "containerPort": facts["grpc_port"], "protocol": "TCP"}
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["GRPC_PORT"]) == facts["grpc_port"]
    assert container["image"].endswith(f":{env['MODEL_NAME']}-1-grpc")
    http = inference_service()["spec"]["predictor"]["containers"][0]
    assert container["readinessProbe"] == http["readinessProbe"]


def test_the_render_blueprint_matches_the_image(answers: Callable[[str], int]) -> None:
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    (service,) = blueprint["services"]
    assert service["type"] == "web"
    assert service["runtime"] == "image"
    name, _, tag = service["image"]["url"].rpartition(":")
    assert name.endswith("/" + image_facts()["image"])
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9]+", tag)
    assert answers(service["healthCheckPath"]) == 200
    keys = {v["key"] for v in service["envVars"]}
    assert keys <= {name.upper() for name in Settings.model_fields}
    assert "PORT" not in keys  # Render chooses the port and the service reads it
    key = next(v for v in service["envVars"] if v["key"] == "API_KEY")
    assert key == {"key": "API_KEY", "generateValue": True}
