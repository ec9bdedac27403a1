"""The bench times some pieces in a subprocess of its own, from a script held in a string: no
import checks it, so a change to the code it calls could break `make bench` a quarter of an
hour in (Kinds did: the drift timing built its kinds as a plain list). Run here on a real model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import against_floor
from bench.run import monitor_cost


def test_the_drift_timing_script_runs(penguins_store: Path) -> None:
    costs = monitor_cost(penguins_store / "penguins" / "1", [1, 100])
    print(f"drift monitoring, microseconds a request: {costs}")
    assert set(costs) == {1, 100}
    assert all(0 < cost < 100_000 for cost in costs.values())


def test_a_floor_ratio_is_the_median_of_three_alternating_pairs(monkeypatch: Any) -> None:
    # The servers' figures as wrk would report them, in the order they are run: one slow run of
    # the service (the machine's dip) must not decide the ratio.
    reported = iter([100.0, 100.0, 100.0, 40.0, 100.0, 100.0])  # A B B A A B
    order: list[str] = []

    def drive(wrk: str, url: str, *args: Any) -> dict[str, float]:
        order.append(url.split("/")[2])
        return {"rps": next(reported), "p50": 1.0}

    monkeypatch.setattr(against_floor, "drive", drive)
    urls = {"service": "http://service", "floor": "http://floor"}
    mine, floor, ratio = against_floor._against_floor(
        "wrk", urls, "service", "/predict", Path("body"), 4, None, 1, "requests/s"
    )
    assert order == ["service", "floor", "floor", "service", "service", "floor"]
    assert (mine, floor) == (100.0, 100.0)  # each side's median
    assert ratio == 1.0  # pairs 1.0, 0.4, 1.0: the median, where the means would say 0.8
