"""`make push` pushes every image it documents, the baked-model ones included, with the same
tag scheme: checked against a stand-in `docker` that records what it is asked to do."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tests.conftest import ROOT

STUB = """#!/bin/sh
echo "$*" >> "$DOCKER_CALLS"
if [ "$1" = images ]; then
  echo sklearn-serve:penguins-1; echo sklearn-serve:penguins-1-abc1234
  echo sklearn-serve:mass-2-sklearn
fi
"""


def test_make_push_pushes_the_baked_model_images_too(tmp_path: Path) -> None:
    docker = tmp_path / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text(STUB)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "calls"
    result = subprocess.run(
        ["make", "--no-print-directory", "push", "REGISTRY=registry.example/team"],
        cwd=ROOT,
        env={
            **os.environ,
            "PATH": f"{docker.parent}:{os.environ['PATH']}",
            "DOCKER_CALLS": str(calls),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    pushed = [
        line.split()[1] for line in calls.read_text().splitlines() if line.startswith("push ")
    ]
    for baked in (
        "sklearn-serve:penguins-1",
        "sklearn-serve:penguins-1-abc1234",
        "sklearn-serve:mass-2-sklearn",
    ):
        assert f"registry.example/team/{baked}" in pushed
    for tag in ("latest", "latest-sklearn", "latest-grpc"):
        assert f"registry.example/team/sklearn-serve:{tag}" in pushed
    images = next(line for line in calls.read_text().splitlines() if line.startswith("images"))
    assert "label=org.sklearn-serve.model.name" in images
