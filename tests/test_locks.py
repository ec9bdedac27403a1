"""The lock files: hashed pins, and one set of versions shared by serving and training."""

from __future__ import annotations

import re
from pathlib import Path

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
    for name in ("serve.txt", "train.txt", "dev.txt"):
        locked = pins(LOCKS / name)
        assert locked, name
        assert all(hashes for _, hashes in locked.values()), name


def test_training_and_serving_share_every_serving_version() -> None:
    """The scikit-learn (and numpy, joblib, ...) that trains is the one that serves."""
    serve, train = pins(LOCKS / "serve.txt"), pins(LOCKS / "train.txt")
    for package, pinned in serve.items():
        assert train.get(package) == pinned, package
    assert "pandas" in train
    assert "pandas" not in serve


def test_serving_lock_has_no_training_or_dev_packages() -> None:
    serve = pins(LOCKS / "serve.txt")
    for package in ("pandas", "pytest", "mypy", "ruff", "httpx2"):
        assert package not in serve
    assert "scikit-learn" in serve
