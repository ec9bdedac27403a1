"""`make bench` runs bench/run.py as a script, so the bench folder comes first on the import path:
a bench module named like a package (bench/grpc.py once hid grpcio from tritonclient, and the
whole bench died at its gRPC table) must never happen again."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_no_bench_module_hides_an_installed_one() -> None:
    hidden = []
    for module in sorted(BENCH.glob("*.py")):
        found = importlib.util.find_spec(module.stem) if module.stem not in sys.modules else None
        origin = getattr(found, "origin", None) or ""
        if module.stem in sys.modules or (found is not None and Path(origin).parent != BENCH):
            hidden.append(module.name)
    print(f"{len(list(BENCH.glob('*.py')))} bench modules checked")
    assert hidden == [], f"rename these: they share a name with an importable module: {hidden}"
