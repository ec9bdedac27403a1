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

from fastapi.testclient import TestClient

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
