"""Drift: live inputs against the training profile, as Prometheus sees them on /metrics."""

from __future__ import annotations

import csv
import json
import math
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import service.drift
from modelstore import ModelStore
from service.drift import DriftMonitor
from service.metrics import Metrics
from service.runtimes.base import Table, kinds_of
from tests.conftest import PENGUINS_CSV
from tests.service.conftest import ClientFactory

FEATURES = {
    "island": str,
    "bill_length_mm": float,
    "bill_depth_mm": float,
    "flipper_length_mm": float,
    "body_mass_g": float,
    "sex": str,
    "year": int,
}


def penguin_rows() -> list[dict[str, Any]]:
    with PENGUINS_CSV.open(newline="") as handle:
        return [
            {
                name: kind(row[name]) if row[name] not in ("", "NA") else None
                for name, kind in FEATURES.items()
            }
            for row in csv.DictReader(handle)
        ]


def stream(client: TestClient, rows: list[dict[str, Any]], batch: int = 50) -> None:
    for start in range(0, len(rows), batch):
        response = client.post("/predict", json={"instances": rows[start : start + batch]})
        assert response.status_code == 200, response.text


def samples(client: TestClient, name: str) -> dict[str, float]:
    """One metric's samples by their `feature` label."""
    found = {}
    for line in client.get("/metrics").text.splitlines():
        match = re.fullmatch(name + r'\{feature="([^"]+)"\} (\S+)', line)
        if match:
            found[match[1]] = float(match[2])
    return found


def sampled(count: int, seed: int) -> list[dict[str, Any]]:
    rows = penguin_rows()
    rng = random.Random(seed)
    return [dict(rng.choice(rows)) for _ in range(count)]


def test_training_like_inputs_keep_every_psi_low(client: TestClient) -> None:
    assert all(math.isnan(v) for v in samples(client, "model_feature_psi").values())
    rows = sampled(3000, seed=1)
    stream(client, rows)
    psi = samples(client, "model_feature_psi")
    assert set(psi) == set(FEATURES)
    assert max(psi.values()) < 0.1, psi
    missing = samples(client, "model_feature_missing_total")
    assert missing.get("sex", 0) == sum(1 for r in rows if r["sex"] is None) > 0
    assert missing["island"] == 0
    window = re.search(r"^model_drift_window_rows (\S+)$", client.get("/metrics").text, re.M)
    assert window is not None
    assert float(window[1]) == 3000


def test_one_shifted_feature_stands_out(client: TestClient) -> None:
    rows = sampled(3000, seed=2)
    for row in rows:
        if row["bill_length_mm"] is not None:
            row["bill_length_mm"] += 6.0  # longer bills: most values move two or three bins up
    stream(client, rows)
    psi = samples(client, "model_feature_psi")
    assert psi["bill_length_mm"] > 0.2, psi
    others = {k: v for k, v in psi.items() if k != "bill_length_mm"}
    assert max(others.values()) < 0.1, psi


def test_a_new_category_fills_the_other_bin(make_client: ClientFactory) -> None:
    client = make_client(unknown_categories="accept")
    rows = sampled(600, seed=3)
    for row in rows[::2]:
        row["island"] = "Anvers"  # half the rows from an island training never saw
    stream(client, rows)
    text = client.get("/metrics").text
    other = re.search(
        r'^model_feature_values_total\{bin="\(other\)",feature="island"\} (\S+)$', text, re.M
    )
    assert other is not None
    assert float(other[1]) == 300
    assert samples(client, "model_feature_psi")["island"] > 0.2


def test_the_window_forgets_old_rows(make_client: ClientFactory) -> None:
    client = make_client(drift_window=1000)
    shifted = sampled(1000, seed=4)
    for row in shifted:
        row["year"] = 2015
    stream(client, shifted)
    assert samples(client, "model_feature_psi")["year"] > 0.2
    stream(client, sampled(1500, seed=5))  # more than a window of ordinary rows
    assert samples(client, "model_feature_psi")["year"] < 0.1


def test_drift_can_be_turned_off(make_client: ClientFactory) -> None:
    client = make_client(drift_window=0)
    stream(client, sampled(200, seed=6))
    text = client.get("/metrics").text
    assert "model_feature_psi{" not in text
    assert "model_feature_values_total{" not in text


def test_a_version_without_a_profile_serves_without_drift(
    tmp_path: Path, penguins_store: Path, make_client: ClientFactory
) -> None:
    """Versions written before profiles existed (format 2) keep serving."""
    store = tmp_path / "models"
    shutil.copytree(penguins_store, store)
    meta_path = store / "penguins" / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    for key in ("profile", "report"):
        del meta[key]
    meta["format_version"] = 2
    meta_path.write_text(json.dumps(meta))
    (store / "penguins" / "1" / "report.html").unlink()
    client = make_client(model_dir=store)
    stream(client, sampled(200, seed=7))
    assert "model_feature_psi{" not in client.get("/metrics").text


def test_every_kind_of_feature_is_counted_as_the_profile_bins_it(mixed_store: Path) -> None:
    """Numbers, an integer, a boolean and text with gaps, sent in requests of several sizes
    (each typed into one block of numbers, then binned many requests at once): each feature's
    live bin counters and missing counter equal the training profile's own Binner over the
    same values, one feature at a time."""
    from modelstore import Metadata
    from modelstore.profile import Binner
    from service.app import create_app
    from service.drift import bin_labels
    from service.settings import Settings

    rng = random.Random(11)
    names = ["size", "colour", "flag", "age"]
    rows: list[dict[str, Any]] = []
    for _ in range(700):
        row = {
            "size": round(rng.uniform(-2, 12), 2),
            "colour": rng.choice(["red", "green", "blue"]),
            "flag": rng.random() < 0.3,
            "age": rng.randint(0, 100),
        }
        if rng.random() < 0.2:
            row[rng.choice(["size", "colour", "flag"])] = None
        rows.append(row)
    settings = Settings(model_dir=mixed_store)
    with TestClient(create_app(settings)) as client:
        start = 0
        for size in [1, 1, 7, 50, 3, 200, 38, 400]:
            batch = rows[start : start + size]
            start += size
            response = client.post("/predict", json={"instances": batch})
            assert response.status_code == 200, response.text
        text = client.get("/metrics").text
    sent = rows[:start]
    meta = Metadata.model_validate_json((mixed_store / "mixed" / "1" / "metadata.json").read_text())
    assert meta.profile is not None
    print(f"{start} rows in 8 requests, {len(meta.profile)} features")
    for profile in meta.profile:
        counts, missing = Binner(profile).count([row[profile.name] for row in sent])
        live = {}
        for label in bin_labels(profile):
            series = f'model_feature_values_total{{bin="{label}",feature="{profile.name}"}}'
            found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
            live[label] = float(found[1]) if found else 0.0
        assert list(live.values()) == counts.tolist(), profile.name
        gaps = re.search(
            rf'^model_feature_missing_total\{{feature="{profile.name}"\}} (\S+)$', text, re.M
        )
        assert (float(gaps[1]) if gaps else 0.0) == missing, profile.name
    assert names == [p.name for p in meta.profile]


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def counted_rows(metrics: Metrics, feature: str) -> float:
    """Rows drift monitoring has counted for `feature`: its bins and its missing values."""
    total = 0.0
    for family in metrics.registry.collect():
        if family.name in ("model_feature_values", "model_feature_missing"):
            total += sum(
                s.value
                for s in family.samples
                if s.name.endswith("_total") and s.labels["feature"] == feature
            )
    return total


def test_past_its_rate_drift_counts_a_sample_of_whole_requests(penguins_store: Path) -> None:
    store = ModelStore(penguins_store)
    metadata = store.metadata(store.resolve())
    metrics = Metrics()
    clock = Clock()
    monitor = DriftMonitor(
        metadata, window=100_000, metrics=metrics, rows_per_second=1_000, clock=clock
    )
    table = Table.from_instances(sampled(100, seed=3), kinds_of(metadata))
    service.drift._chance.seed(7)

    def second(start: float, requests: int) -> tuple[float, float]:
        """`requests` of 100 rows spread over a second: the rows counted, and the share."""
        before = counted_rows(metrics, "bill_length_mm")
        for n in range(requests):
            clock.now = start + n / requests
            monitor.observe(table)
        share = gauge(metrics, "model_drift_sampled_share")
        clock.now = start + 1.0
        monitor.fold()
        return counted_rows(metrics, "bill_length_mm") - before, share

    quiet = second(0.0, 5)  # no rate known yet: every row
    calm = second(1.0, 5)  # 500 rows the second before: every row
    busy = second(2.0, 500)  # 500 rows the second before: every row, 50,000 of them
    sampled_second = second(3.0, 500)  # 50,000 the second before: a share of 0.02
    after = second(10.0, 5)  # a quiet spell: every row again
    print(
        f"\nrows counted (of those offered) and share: {quiet}, {calm}, {busy}, "
        f"{sampled_second} of 50,000, after a quiet spell {after}"
    )
    assert quiet == calm == (500, 1.0)
    assert busy == (50_000, 1.0)
    counted, share = sampled_second
    assert share == pytest.approx(1_000 / 50_000)
    assert 300 <= counted <= 2_000  # ~1,000 expected: ten requests of the 500
    assert counted % 100 == 0  # whole requests
    assert after == (500, 1.0)


def gauge(metrics: Metrics, name: str) -> float:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no {name}")


def test_rows_per_second_zero_counts_every_row(penguins_store: Path) -> None:
    store = ModelStore(penguins_store)
    metadata = store.metadata(store.resolve())
    metrics = Metrics()
    clock = Clock()
    monitor = DriftMonitor(metadata, window=100_000, metrics=metrics, clock=clock)
    table = Table.from_instances(sampled(100, seed=4), kinds_of(metadata))
    for second in range(3):
        for n in range(500):
            clock.now = second + n * 0.002
            monitor.observe(table)
    clock.now = 3.0
    monitor.fold()
    assert counted_rows(metrics, "bill_length_mm") == 150_000
    assert gauge(metrics, "model_drift_sampled_share") == 1.0
