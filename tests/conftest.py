"""Shared fixtures: real models trained by the real training CLI into temporary stores."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from training.cli import main as train_main

ROOT = Path(__file__).resolve().parent.parent
# Servers the tests start (in process and as processes, which inherit this) listen for gRPC
# only where a test asks for it with a port of its own: never on the shared default, 8001.
os.environ["GRPC_PORT"] = "0"
PENGUINS_CSV = ROOT / "training" / "data" / "penguins.csv"


def train(models_dir: Path, *args: str) -> int:
    return train_main(["--models-dir", str(models_dir), *args])


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def mixed_rows(count: int, seed: int = 0) -> list[list[object]]:
    """A table with every column kind, gaps in each feature, and a string label."""
    rng = random.Random(seed)
    rows: list[list[object]] = []
    for _ in range(count):
        size = rng.uniform(0, 10)
        colour = rng.choice(["red", "green", "blue"])
        flag = rng.random() < 0.5
        age = rng.randint(1, 90)
        label = "big" if size + (2 if colour == "red" else 0) > 6 else "small"
        row: list[object] = [round(size, 3), colour, flag, age, label]
        if rng.random() < 0.1:
            row[rng.choice([0, 1, 2])] = ""
        rows.append(row)
    return rows


def train_overflowing_ridge(folder: Path) -> Path:
    """A linear regressor whose answer overflows to infinity for inputs near 1e15 (the largest
    accepted): a feature spread of 1e-149 and a target near 1e151, which overflows in float64,
    in the pipeline and in its graph alike. Returns its store."""
    rows = [[i * 1e-150, (i % 7) / 100, i * 1e150] for i in range(60)]
    data = write_csv(folder / "small.csv", ["a", "b", "y"], rows)
    config = folder / "ridge.toml"
    config.write_text(
        f'[data]\npath = "{data}"\ntarget = "y"\n[model]\ntask = "regression"\n'
        'estimator = "linear"\n'
    )
    assert train(folder / "models", "--config", str(config)) == 0
    return folder / "models"


@pytest.fixture(scope="session")
def penguins_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model trained once per session; tests must not modify this store."""
    models = tmp_path_factory.mktemp("penguins-store")
    assert train(models) == 0
    return models


@pytest.fixture(scope="session")
def regression_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("regression-store")
    config = ROOT / "training" / "configs" / "hist_gradient_boosting.toml"
    assert train(models, "--config", str(config), "--name", "mass") == 0
    return models


@pytest.fixture(scope="session")
def mixed_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mixed-store")
    data = write_csv(
        folder / "mixed.csv", ["size", "colour", "flag", "age", "label"], mixed_rows(200)
    )
    assert (
        train(folder / "models", "--data", str(data), "--target", "label", "--name", "mixed") == 0
    )
    return folder / "models"


@pytest.fixture(scope="session")
def penguin_example(penguins_store: Path) -> dict[str, Any]:
    meta = json.loads((penguins_store / "penguins" / "1" / "metadata.json").read_text())
    example: dict[str, Any] = meta["example"]
    return example


@pytest.fixture(scope="session")
def numeric_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Penguins from numbers alone (four measures and the integer year): the model a single
    [rows, features] tensor can feed, as KServe's and MLServer's clients send."""
    folder = tmp_path_factory.mktemp("numeric-store")
    config = folder / "numeric.toml"
    config.write_text(
        f'name = "numeric"\n[data]\npath = "{PENGUINS_CSV}"\ntarget = "species"\n'
        'drop = ["island", "sex"]\n[model]\nestimator = "linear"\n'
    )
    assert train(folder / "models", "--config", str(config)) == 0
    return folder / "models"
