"""The lock files: hashed pins, and one set of versions shared by serving and training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

LOCKS = ROOT / "requirements"


def pins(lock: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """package -> (version, hashes) for every requirement in a `uv pip compile` lock."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for block in re.split(r"\n(?=[a-z0-9])", lock.read_text()):
        head = re.match(r"([a-z0-9._-]+)==([^\s\\;]+)", block)
        if head:
            found[head.group(1)] = (
                head.group(2),
                frozenset(re.findall(r"--hash=sha256:(\w+)", block)),
            )
    return found


def test_every_pin_is_hashed() -> None:
    for name in (
        "serve.txt",
        "serve-sklearn.txt",
        "serve-grpc.txt",
        "train.txt",
        "spark.txt",
        "dev.txt",
    ):
        locked = pins(LOCKS / name)
        assert locked, name
        assert all(hashes for _, hashes in locked.values()), name


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        ("serve.txt", "serve-sklearn.txt"),
        ("serve-sklearn.txt", "train.txt"),
        ("serve.txt", "serve-grpc.txt"),
        ("serve-grpc.txt", "dev.txt"),
        ("train.txt", "spark.txt"),
        ("spark.txt", "dev.txt"),
    ],
)
def test_every_lock_shares_the_versions_of_the_one_below(smaller: str, larger: str) -> None:
    """The scikit-learn (and numpy, ONNX Runtime, ...) that trains is the one that serves."""
    below, above = pins(LOCKS / smaller), pins(LOCKS / larger)
    for package, pinned in below.items():
        assert above.get(package) == pinned, package


def test_the_default_serving_lock_cannot_unpickle() -> None:
    serve = pins(LOCKS / "serve.txt")
    assert "onnxruntime" in serve
    for package in (
        "scikit-learn",
        "scipy",
        "joblib",
        "pandas",
        "skl2onnx",
        "onnx",
        "pyarrow",
        "pytest",
    ):
        assert package not in serve


def test_the_sklearn_lock_adds_scikit_learn_but_no_training_or_dev_packages() -> None:
    serve = pins(LOCKS / "serve-sklearn.txt")
    assert "scikit-learn" in serve
    for package in ("pandas", "skl2onnx", "onnx", "pyarrow", "pytest", "mypy", "ruff", "httpx2"):
        assert package not in serve
    train = pins(LOCKS / "train.txt")
    assert "onnx" in train
    assert "skl2onnx" not in train  # training writes its graphs itself (training/onnx_graph.py)
