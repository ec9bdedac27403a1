"""Container fixtures: real images built once per session, run with host networking.

Without a reachable Docker engine these tests skip, so `make test` passes on a laptop. In CI
(CI=true) or with CONTAINER_TESTS=1 a missing engine is a failure instead: there they must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

IMAGE = "sklearn-serve-test"
TRAIN_IMAGE = "sklearn-serve-test-train"


def docker_reachable() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


def required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("CONTAINER_TESTS") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [i for i in items if "tests/containers" in str(i.path)]
    if not ours or docker_reachable():
        return
    if required():
        raise pytest.UsageError(
            "container tests are required here (CI=true or CONTAINER_TESTS=1) but no Docker "
            "engine answers `docker info`: run `bash ../shared/docker/engine-up` first"
        )
    skip = pytest.mark.skip(reason="no Docker engine reachable (`docker info` failed)")
    for item in ours:
        item.add_marker(skip)


def run(
    *args: str, timeout: float = 600, cwd: Path = ROOT, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COMPOSE_BAKE": "false", **env},
    )


def must(*args: str, timeout: float = 600, cwd: Path = ROOT, **env: str) -> str:
    result = run(*args, timeout=timeout, cwd=cwd, **env)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def project_copy(destination: Path) -> Path:
    """The committed tree (plus uncommitted edits), as a fresh clone would see it."""
    files = must("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@dataclass(frozen=True)
class Images:
    serve: str
    serve_sklearn: str
    serve_grpc: str
    train: str
    build_seconds: float


@pytest.fixture(scope="session")
def images() -> Images:
    started = time.monotonic()
    must("make", "build", f"IMAGE={IMAGE}", f"TRAIN_IMAGE={TRAIN_IMAGE}", timeout=1200)
    return Images(
        f"{IMAGE}:latest",
        f"{IMAGE}:latest-sklearn",
        f"{IMAGE}:latest-grpc",
        f"{TRAIN_IMAGE}:latest",
        time.monotonic() - started,
    )


def world_readable(source: Path, destination: Path) -> Path:
    """A copy the image's non-root user can read (pytest's temporary folders are 0700)."""
    shutil.copytree(source, destination)
    for path in [destination, *destination.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return destination


@pytest.fixture
def store(penguins_store: Path, tmp_path: Path) -> Path:
    return world_readable(penguins_store, tmp_path / "models")


@pytest.fixture
def container_names() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        run("docker", "rm", "-f", name, timeout=60)
