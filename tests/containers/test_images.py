"""The real images: built, inspected, run with mounted and baked models, composed, linted."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import train
from tests.containers.conftest import (
    IMAGE,
    TRAIN_IMAGE,
    Images,
    must,
    project_copy,
    run,
    world_readable,
)
from tests.e2e.test_process import free_port, graphless

pytestmark = pytest.mark.docker
BASE_IMAGE = "python:3.11-slim"


def start_container(image: str, names: list[str], port: int, *args: str) -> str:
    name = f"ssv-test-{uuid.uuid4().hex[:8]}"
    names.append(name)
    must(
        "docker",
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "-e",
        "HOST=127.0.0.1",
        "-e",
        f"PORT={port}",
        *args,
        image,
    )
    return name


def wait_ready(name: str, port: int, timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx2.TransportError:
            pass
        state = must("docker", "inspect", "-f", "{{.State.Running}}", name).strip()
        assert state == "true", run("docker", "logs", name).stdout
        time.sleep(0.05)
    raise AssertionError(f"{name} never became ready")


def predict(port: int, example: dict[str, Any]) -> dict[str, Any]:
    response = httpx2.post(
        f"http://127.0.0.1:{port}/predict", json={"instances": [example]}, timeout=10
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def protocol_labels(port: int, example: dict[str, Any]) -> list[Any]:
    """The same instance through OIP v2 (binary, with tritonclient) and KServe v1."""
    import numpy as np
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = []
    for name, value in example.items():
        datatype = {str: "BYTES", int: "INT64"}.get(type(value), "FP64")
        tensor = triton.InferInput(name, [1], datatype)
        tensor.set_data_from_numpy(np.array([value], dtype=object if datatype == "BYTES" else None))
        inputs.append(tensor)
    label = client.infer("penguins", inputs).as_numpy("label")[0].decode()  # type: ignore[index]
    client.close()
    v1 = httpx2.post(
        f"http://127.0.0.1:{port}/v1/models/penguins:predict",
        json={"instances": [example]},
        timeout=10,
    )
    return [label, *v1.json()["predictions"]]


def image_bytes(image: str) -> int:
    return int(must("docker", "image", "inspect", "-f", "{{.Size}}", image).strip())


def test_every_image_builds_with_labels(images: Images) -> None:
    for image in (images.serve, images.serve_sklearn, images.serve_grpc):
        labels = json.loads(
            must("docker", "image", "inspect", "-f", "{{json .Config.Labels}}", image)
        )
        for key in ("version", "revision", "created", "source"):
            assert labels[f"org.opencontainers.image.{key}"] not in ("", "unknown"), key
        assert labels["org.opencontainers.image.version"] == "0.1.0"
    train_labels = must("docker", "image", "inspect", "-f", "{{json .Config.Labels}}", images.train)
    assert "sklearn-serve-train" in train_labels
    added_mb = (image_bytes(images.serve) - image_bytes(BASE_IMAGE)) / 1e6
    sklearn_mb = (image_bytes(images.serve_sklearn) - image_bytes(BASE_IMAGE)) / 1e6
    grpc_mb = (image_bytes(images.serve_grpc) - image_bytes(BASE_IMAGE)) / 1e6
    print(
        f"\nserving image adds {added_mb:.0f} MB over {BASE_IMAGE}, -sklearn {sklearn_mb:.0f} MB, "
        f"-grpc {grpc_mb:.0f} MB"
    )
    print(f"all images built in {images.build_seconds:.0f}s")
    assert added_mb <= 130
    assert sklearn_mb < 300
    assert grpc_mb <= added_mb + 40  # grpcio, protobuf, OpenTelemetry's SDK and exporters


def test_serving_image_is_lean_and_unprivileged(images: Images) -> None:
    config = json.loads(must("docker", "image", "inspect", "-f", "{{json .Config}}", images.serve))
    assert config["User"] == "10001:10001"
    assert config["ExposedPorts"] == {"8000/tcp": {}}
    assert config["Cmd"] == ["python", "-m", "service"]
    assert "/health/ready" not in str(
        config["Healthcheck"]
    )  # the check lives in service.healthcheck
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "-m", "service.healthcheck"]
    assert config["Healthcheck"]["Interval"] == 2_000_000_000  # healthy soon after ready
    assert (
        must(
            "docker", "run", "--rm", "--network", "none", "--entrypoint", "id", images.serve, "-u"
        ).strip()
        == "10001"
    )
    # As root, to see everything: no compiler, no training or test code, no pandas, no pip cache.
    script = (
        "set -e; for tool in gcc cc g++ make; do ! command -v $tool; done; "
        "test ! -e /app/training; test ! -e /app/tests; test ! -e /root/.cache/pip; "
        "test -z \"$(find / -xdev -type d -path '*/pip/http*' -print -quit)\"; "
        "! python -c 'import pandas'; ! /opt/venv/bin/python -m pip --version; "
        # Nothing in the default image can unpickle a model.
        "! python -c 'import sklearn'; ! python -c 'import joblib'; ! python -c 'import scipy'; "
        "python -c 'import onnxruntime'; echo clean"
    )
    result = run(
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "0",
        "--entrypoint",
        "sh",
        images.serve,
        "-c",
        script,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("clean")


def test_serves_a_mounted_model_and_turns_healthy(
    images: Images,
    store: Path,
    penguin_example: dict[str, Any],
    container_names: list[str],
) -> None:
    port = free_port()
    started = time.monotonic()
    name = start_container(images.serve, container_names, port, "-v", f"{store}:/models:ro")
    wait_ready(name, port)
    print(f"\ncold start, docker run to ready: {time.monotonic() - started:.2f}s")
    answer = predict(port, penguin_example)
    assert answer["model"] == {"name": "penguins", "version": 1}
    ready = httpx2.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).json()
    assert ready["runtime"] == "onnx"
    assert answer["predictions"][0]["label"] == "Adelie"
    assert protocol_labels(port, penguin_example) == ["Adelie", "Adelie"]
    # The docs' script comes from the image itself, with the security headers and no Server.
    script = httpx2.get(f"http://127.0.0.1:{port}/docs/swagger-ui-bundle.js", timeout=5)
    assert script.status_code == 200
    assert script.text.startswith("/*! For license information please see swagger-ui-bundle")
    assert script.headers["x-content-type-options"] == "nosniff"
    assert script.headers["content-security-policy"].startswith("default-src 'none'")
    assert "server" not in script.headers
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline and status != "healthy":
        status = must("docker", "inspect", "-f", "{{.State.Health.Status}}", name).strip()
        time.sleep(0.5)
    assert status == "healthy"
    print(f"docker run to healthy: {time.monotonic() - started:.2f}s")
    logs = must("docker", "logs", name)
    assert any(
        json.loads(line).get("event") == "model ready"
        for line in logs.splitlines()
        if line.startswith("{")
    )
    must("docker", "stop", "-t", "20", name)
    assert must("docker", "inspect", "-f", "{{.State.ExitCode}}", name).strip() == "0"


@pytest.mark.parametrize("file", ["model.onnx", "model.joblib"])
def test_tampered_mounted_model_stops_the_container(images: Images, store: Path, file: str) -> None:
    models = store
    # Each image checks the file it would run: the graph, or the pickle in the -sklearn image.
    image = images.serve if file == "model.onnx" else images.serve_sklearn
    with (models / "penguins" / "1" / file).open("r+b") as handle:
        handle.seek(100)
        handle.write(b"tampered")
    result = run(
        "docker",
        "run",
        "--rm",
        "--network",
        "host",
        "-e",
        f"PORT={free_port()}",
        "-e",
        "HOST=127.0.0.1",
        "-v",
        f"{models}:/models:ro",
        *(["-e", "RUNTIME=sklearn"] if file == "model.joblib" else []),
        image,
        timeout=60,
    )
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    assert lines[0]["level"] == "error"
    assert lines[0]["model_dir"] == "/models"
    assert f"sha256 mismatch for /models/penguins/1/{file}" in lines[0]["reason"]


def test_baked_model_image_needs_no_volume(
    images: Images,
    penguins_store: Path,
    penguin_example: dict[str, Any],
    tmp_path: Path,
    container_names: list[str],
) -> None:
    context = project_copy(tmp_path / "context")
    shutil.copytree(penguins_store / "penguins", context / "models" / "penguins")
    must(
        "make",
        "build-model",
        "NAME=penguins",
        "VERSION=1",
        f"IMAGE={IMAGE}",
        cwd=context,
        timeout=900,
    )
    baked = f"{IMAGE}:penguins-1"
    labels = json.loads(must("docker", "inspect", baked))[0]["Config"]["Labels"]
    assert labels["org.sklearn-serve.model.name"] == "penguins"
    assert labels["org.sklearn-serve.model.version"] == "1"
    assert (
        labels["org.sklearn-serve.model.metadata-sha256"]
        == hashlib.sha256(
            (penguins_store / "penguins" / "1" / "metadata.json").read_bytes()
        ).hexdigest()
    )
    port = free_port()
    name = start_container(baked, container_names, port)
    wait_ready(name, port)
    assert predict(port, penguin_example)["predictions"][0]["label"] == "Adelie"
    bad = run("make", "build-model", "NAME=herons", "VERSION=1", f"IMAGE={IMAGE}", cwd=context)
    assert bad.returncode != 0
    assert "no model at models/herons/1" in bad.stdout + bad.stderr


def test_code_only_change_reuses_the_dependency_layers(images: Images, tmp_path: Path) -> None:
    context = project_copy(tmp_path / "context")
    init = context / "service" / "__init__.py"
    init.write_text(init.read_text() + f"# a code-only change {uuid.uuid4().hex}\n")
    started = time.monotonic()
    output = must(
        "docker", "build", "--network", "host", "-t", f"{IMAGE}:rebuild", str(context), timeout=600
    )
    seconds = time.monotonic() - started
    print(f"\nrebuild after a code-only change: {seconds:.1f}s")
    steps = output.split("\nStep ")
    install = next(step for step in steps if "RUN install-venv" in step)
    assert "Using cache" in install
    code = next(step for step in steps if "COPY service/" in step)
    assert "Using cache" not in code
    assert venv_layer(f"{IMAGE}:rebuild") == venv_layer(images.serve)


def venv_layer(image: str) -> str:
    """The id of the layer that copies the virtualenv into the runtime stage."""
    history = must("docker", "history", "--no-trunc", "--format", "{{.ID}} {{.CreatedBy}}", image)
    return next(line.split()[0] for line in history.splitlines() if "in /opt/venv" in line)


def make_train(models: Path, uid: int, gid: int) -> None:
    must(
        "make",
        "train",
        f"TRAIN_IMAGE={TRAIN_IMAGE}",
        f"TRAIN_USER={uid}:{gid}",
        f"MODELS_PATH={models}",
        timeout=300,
    )


def test_make_train_writes_a_version_owned_by_the_caller(
    images: Images, tmp_path: Path, penguins_store: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    uid, gid = (4321, 4321) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(models, uid, gid)
    make_train(models, uid, gid)
    version = models / "penguins" / "1"
    assert (version / "metadata.json").exists()
    for path in (version, version / "model.joblib", version / "metadata.json"):
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid)
    meta = json.loads((version / "metadata.json").read_text())
    # Passed in (the image has no .git), recorded as local training records it.
    assert re.fullmatch(r"[0-9a-f]{40}", meta["git"]["commit"]), meta["git"]
    assert isinstance(meta["git"]["dirty"], bool), meta["git"]
    assert meta["onnx"]["verified"]  # the training image compiles and checks the graph too
    assert (version / "model.onnx").stat().st_uid == uid
    make_train(models, uid, gid)
    assert sorted(
        p.name for p in (models / "penguins").iterdir() if not p.name.startswith(".")
    ) == ["1", "2"]
    # The same data, config and seed: the same bytes, in the image as on the host. (Each
    # version's report shows its version number, so reports compare between version 1s.)
    again = tmp_path / "again"
    again.mkdir()
    os.chown(again, uid, gid)
    make_train(again, uid, gid)

    def hashes(folder: Path, files: tuple[str, ...]) -> dict[str, str]:
        return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in files}

    every = ("model.joblib", "model.onnx", "report.html")
    first, second = hashes(version, every), hashes(again / "penguins" / "1", every)
    later = hashes(models / "penguins" / "2", every[:2])
    here = hashes(penguins_store / "penguins" / "1", every[:2])
    print(f"\ntrained in the image: {first}; again: {second}; on the host: {here}")
    assert first == second
    assert {f: first[f] for f in every[:2]} == later == here


def test_compose_up_waits_healthy_serves_and_cleans_up(
    images: Images, penguin_example: dict[str, Any], tmp_path: Path
) -> None:
    context = project_copy(tmp_path / "stack")
    project = f"ssvtest{uuid.uuid4().hex[:6]}"
    port = free_port()
    compose = [
        "docker",
        "compose",
        "-p",
        project,
        "-f",
        "compose.yaml",
        "-f",
        "tests/containers/compose.host.yaml",
    ]
    env = {"TEST_PORT": str(port), "TEST_IMAGE": IMAGE}
    try:
        up = run(*compose, "up", "-d", "--build", "--wait", cwd=context, timeout=900, **env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert (context / "models" / "penguins" / "1" / "metadata.json").exists()
        assert predict(port, penguin_example)["model"]["name"] == "penguins"
        inspect = json.loads(must("docker", "inspect", f"{project}-api-1"))[0]["HostConfig"]
        assert inspect["ReadonlyRootfs"] is True
        assert inspect["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in inspect["SecurityOpt"]
        assert inspect["Memory"] > 0
        assert inspect["RestartPolicy"]["Name"] == "unless-stopped"
        # A second `up` finds the model and does not train again.
        again = run(*compose, "up", "-d", "--wait", cwd=context, timeout=300, **env)
        assert again.returncode == 0, again.stderr
        assert sorted(
            p.name for p in (context / "models" / "penguins").iterdir() if p.name.isdigit()
        ) == ["1"]
        # Another model trained into ./models: the api still knows which one it serves.
        assert train(context / "models", "--name", "other") == 0
        world_readable_in_place(context / "models")
        restarted = run(*compose, "restart", "api", cwd=context, timeout=300, **env)
        assert restarted.returncode == 0, restarted.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, httpx2.HTTPError):
                if predict(port, penguin_example)["model"]["name"] == "penguins":
                    break
            time.sleep(0.5)
        else:
            logs = run(*compose, "logs", "--no-color", "--tail", "20", "api", cwd=context, **env)
            raise AssertionError(f"the api did not come back: {logs.stdout}")
    finally:
        down = run(*compose, "down", "--remove-orphans", cwd=context, timeout=300, **env)
    assert down.returncode == 0, down.stderr
    left = must(
        "docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}"
    )
    assert left.strip() == ""


def world_readable_in_place(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize(
    ("env", "published"),
    [
        ({}, "8000-8009"),
        ({"PORT": "18111"}, "18111"),
        ({"PORT": "18111", "PORT_LAST": "18113"}, "18111-18113"),
    ],
)
def test_compose_publishes_whatever_port_is_asked_for(env: dict[str, str], published: str) -> None:
    config = json.loads(
        must("docker", "compose", "-f", "compose.yaml", "config", "--format", "json", **env)
    )
    (port,) = config["services"]["api"]["ports"]
    assert str(port["published"]) == published
    assert port["host_ip"] == "127.0.0.1"
    assert config["services"]["api"]["environment"]["MODEL_NAME"] == "penguins"


def test_hadolint_passes_on_both_dockerfiles() -> None:
    if shutil.which("hadolint") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("hadolint is missing in CI (engine-up installs it)")
        pytest.skip("hadolint not installed")
    result = run("hadolint", "Dockerfile", "Dockerfile.train")
    assert result.returncode == 0, result.stdout


def test_the_default_image_refuses_a_version_without_a_graph_naming_the_other(
    images: Images, store: Path, tmp_path: Path
) -> None:
    models = world_readable(graphless(store, tmp_path / "old"), tmp_path / "readable")
    result = run(
        "docker", "run", "--rm", "--network", "none", "-v", f"{models}:/models:ro", images.serve
    )
    assert result.returncode == 1
    (line,) = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert "has no verified ONNX graph" in line["reason"]
    assert "this image has no scikit-learn" in line["reason"]
    assert "-sklearn suffix" in line["reason"]


def test_the_sklearn_image_serves_a_version_without_a_graph(
    images: Images,
    store: Path,
    tmp_path: Path,
    penguin_example: dict[str, Any],
    container_names: list[str],
) -> None:
    models = world_readable(graphless(store, tmp_path / "old"), tmp_path / "readable")
    port = free_port()
    name = start_container(
        images.serve_sklearn, container_names, port, "-v", f"{models}:/models:ro"
    )
    wait_ready(name, port)
    ready = httpx2.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).json()
    assert ready["runtime"] == "sklearn"
    assert predict(port, penguin_example)["predictions"][0]["label"] == "Adelie"


def test_the_grpc_image_answers_tritonclient_grpc(
    images: Images, store: Path, container_names: list[str]
) -> None:
    """The -grpc image, as an operator runs it: tritonclient[grpc], unchanged, and the gRPC
    health check Kubernetes' probes make. Run in a child process: tritonclient's messages and
    ours register the same protocol names, and this process may hold ours."""
    port, grpc_port = free_port(), free_port()
    name = start_container(
        images.serve_grpc, container_names, port, "-e", f"GRPC_PORT={grpc_port}",
        "-v", f"{store}:/models:ro",
    )  # fmt: skip
    wait_ready(name, port)
    script = (
        "import sys, numpy as np, grpc, tritonclient.grpc as t\n"
        "from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as hg\n"
        "c = t.InferenceServerClient(sys.argv[1])\n"
        "assert c.is_server_ready() and c.is_model_ready('penguins')\n"
        "cols = {'island': np.array([b'Biscoe'], dtype=object), 'bill_length_mm': [46.1],\n"
        "        'bill_depth_mm': [13.2], 'flipper_length_mm': [211.0], 'body_mass_g': [4500.0],\n"
        "        'sex': np.array([b'female'], dtype=object), 'year': np.array([2007])}\n"
        "types = {'island': 'BYTES', 'sex': 'BYTES', 'year': 'INT64'}\n"
        "inputs = []\n"
        "for k, v in cols.items():\n"
        "    i = t.InferInput(k, [1], types.get(k, 'FP64'))\n"
        "    i.set_data_from_numpy(np.asarray(v, dtype=None if k in types else float))\n"
        "    inputs.append(i)\n"
        "print(c.infer('penguins', inputs).as_numpy('label')[0].decode())\n"
        "with grpc.insecure_channel(sys.argv[1]) as ch:\n"
        "    print(hg.HealthStub(ch).Check(h.HealthCheckRequest()).status)\n"
    )
    done = run(sys.executable, "-c", script, f"127.0.0.1:{grpc_port}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["Gentoo", "1"]  # the label, then SERVING
    # Tracing's SDK and both OTLP exporters are there too, for OTEL_* to turn on.
    modules = (
        "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http.trace_exporter, "
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
    )
    imported = run(
        "docker", "run", "--rm", "--network", "none", "--entrypoint", "python",
        images.serve_grpc, "-c", modules,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    config = json.loads(
        must("docker", "image", "inspect", "-f", "{{json .Config}}", images.serve_grpc)
    )
    assert config["ExposedPorts"] == {"8000/tcp": {}, "8001/tcp": {}}
    assert config["User"] == "10001:10001"
