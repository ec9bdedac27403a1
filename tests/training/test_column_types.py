"""Column typing traps: codes, missing markers, constants, dates, and the config's overrides."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from modelstore import Metadata, ModelStore
from tests.conftest import train, write_csv


def trained(models: Path) -> Metadata:
    store = ModelStore(models)
    return store.load(store.resolve()).metadata


def features(meta: Metadata) -> dict[str, str]:
    return {f.name: f.type for f in meta.features}


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """zip codes with leading zeros, a number with '?' gaps, a constant, dates, a label."""
    rng = random.Random(3)
    rows = []
    for i in range(300):
        amount = round(rng.uniform(0, 100), 2)
        rows.append(
            [
                f"0{rng.randint(1000, 1009)}",
                "?" if i % 10 == 0 else amount,
                "US",
                f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
                f"cust-{i}",
                "high" if amount > 50 else "low",
            ]
        )
    header = ["zip", "amount", "country", "signup", "customer", "label"]
    return write_csv(tmp_path / "customers.csv", header, rows)


def test_inference_keeps_codes_and_leaves_out_what_cannot_help(
    tmp_path: Path, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    assert train(models, "--data", str(table), "--target", "label") == 0
    err = capsys.readouterr().err
    meta = trained(models)
    assert features(meta) == {"zip": "string"}
    zip_feature = meta.features[0]
    assert zip_feature.categories is not None
    assert "01000" in zip_feature.categories
    assert meta.ignored_columns == ["amount", "country", "signup", "customer"]
    assert "ignored column 'amount': numbers except for '?' in 30 rows" in err
    assert "ignored column 'country': its only value is 'US'" in err
    assert "ignored column 'signup': it holds dates" in err
    assert "ignored column 'customer': every value is different" in err


def test_config_missing_values_and_types_override_inference(tmp_path: Path, table: Path) -> None:
    config = tmp_path / "customers.toml"
    config.write_text(
        f'[data]\npath = "{table}"\ntarget = "label"\nmissing_values = ["?"]\n'
        '[data.types]\nsignup = "string"\n'
    )
    models = tmp_path / "models"
    assert train(models, "--config", str(config)) == 0
    meta = trained(models)
    assert features(meta) == {"zip": "string", "amount": "number", "signup": "string"}
    assert next(f for f in meta.features if f.name == "amount").nullable
    assert meta.ignored_columns == ["country", "customer"]


def test_a_declared_type_that_does_not_fit_names_the_row(
    tmp_path: Path, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        f'[data]\npath = "{table}"\ntarget = "label"\n[data.types]\namount = "number"\n'
    )
    assert train(tmp_path / "models", "--config", str(config)) == 2
    err = capsys.readouterr().err
    assert "error: column 'amount' is read as number but row 1 holds '?'" in err
    assert not (tmp_path / "models").exists()


def test_types_naming_an_unknown_column_is_an_error(
    tmp_path: Path, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[data]\npath = "{table}"\ntarget = "label"\n[data.types]\nzap = "string"\n')
    assert train(tmp_path / "models", "--config", str(config)) == 2
    assert "error: cannot set the type of unknown column(s) zap" in capsys.readouterr().err


def test_the_docs_example_is_typical_values_not_a_training_row(tmp_path: Path) -> None:
    rows = [[float(i), "b" if i % 3 == 2 else "a", i % 2 == 0, i < 20] for i in range(41)]
    data = write_csv(tmp_path / "t.csv", ["n", "c", "flag", "label"], rows)
    assert train(tmp_path / "models", "--data", str(data), "--target", "label") == 0
    meta = trained(tmp_path / "models")
    assert meta.format_version == 3
    assert meta.example == {"n": 20.0, "c": "a", "flag": True}
    assert [20.0, "a", True] not in [row[:3] for row in rows]
