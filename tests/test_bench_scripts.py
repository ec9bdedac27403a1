"""The bench times some pieces in a subprocess of its own, from a script held in a string: no
import checks it, so a change to the code it calls could break `make bench` a quarter of an
hour in (Kinds did: the drift timing built its kinds as a plain list). Run here on a real model."""

from __future__ import annotations

from pathlib import Path

from bench.run import monitor_cost


def test_the_drift_timing_script_runs(penguins_store: Path) -> None:
    costs = monitor_cost(penguins_store / "penguins" / "1", [1, 100])
    print(f"drift monitoring, microseconds a request: {costs}")
    assert set(costs) == {1, 100}
    assert all(0 < cost < 100_000 for cost in costs.values())
