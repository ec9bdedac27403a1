"""`make train` with data from anywhere, and `make up` that fails loudly when the api does."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.conftest import mixed_rows, write_csv
from tests.containers.conftest import IMAGE, TRAIN_IMAGE, Images, must, project_copy, run
from tests.e2e.test_process import free_port

pytestmark = pytest.mark.docker


def open_to_all(folder: Path) -> Path:
    """pytest's folders are 0700 for root; the trainer runs as another user."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o644)
    return folder


def make_train(models: Path, *args: str) -> str:
    return must(
        "make",
        "train",
        f"TRAIN_IMAGE={TRAIN_IMAGE}",
        "TRAIN_USER=4321:4321",
        f"MODELS_PATH={models}",
        *args,
        timeout=300,
    )


def test_make_train_takes_data_and_configs_from_outside_the_checkout(
    images: Images, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    header = ["size", "colour", "flag", "age", "label"]
    data = write_csv(outside / "churn.csv", header, mixed_rows(120))
    (outside / "churn.toml").write_text(
        '[data]\npath = "churn.csv"\ntarget = "label"\n[model]\nestimator = "random_forest"\n'
    )
    models = tmp_path / "models"
    models.mkdir()
    open_to_all(tmp_path)
    make_train(models, f"DATA={data}", "TARGET=label", "NAME=churn")
    make_train(models, f"CONFIG={outside / 'churn.toml'}", "NAME=churn")
    first = json.loads((models / "churn" / "1" / "metadata.json").read_text())
    second = json.loads((models / "churn" / "2" / "metadata.json").read_text())
    assert first["estimator"].startswith("hist_gradient_boosting:")
    assert second["estimator"].startswith("random_forest:")
    assert first["data"]["sha256"] == second["data"]["sha256"]
    missing = run("make", "train", f"TRAIN_IMAGE={TRAIN_IMAGE}", "DATA=/nonexistent/x.csv")
    assert missing.returncode != 0
    assert "make train: /nonexistent/x.csv not found" in missing.stdout + missing.stderr


def test_make_up_fails_with_the_api_log_when_it_cannot_start(
    images: Images, penguins_store: Path, tmp_path: Path
) -> None:
    context = project_copy(tmp_path / "stack")
    for name in ("penguins", "herons"):  # two models, and MODEL_NAME names neither
        shutil.copytree(penguins_store / "penguins", context / "models" / name)
    project = f"ssvup{uuid.uuid4().hex[:6]}"
    compose = f"docker compose -p {project} -f compose.yaml -f tests/containers/compose.host.yaml"
    env = {
        "TEST_PORT": str(free_port()),
        "TEST_IMAGE": IMAGE,
        "TEST_TAG": "latest",
        "MODEL_NAME": "nothere",
    }
    os.chmod(context / "models", 0o777)
    try:
        up = run(
            "make",
            "up",
            f"IMAGE={IMAGE}",
            f"TRAIN_IMAGE={TRAIN_IMAGE}",
            f"COMPOSE={compose}",
            cwd=context,
            timeout=600,
            **env,
        )
    finally:
        down = run("make", "down", f"COMPOSE={compose}", cwd=context, timeout=300, **env)
    output = up.stdout + up.stderr
    assert up.returncode != 0, output
    assert "make up: the api is not healthy" in output
    assert "no model named 'nothere' in /models (available: herons, penguins)" in output
    assert down.returncode == 0, down.stderr
