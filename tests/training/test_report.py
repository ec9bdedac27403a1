"""report.html: written with every version, self-contained, its plots real images."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

from PIL import Image

from modelstore import ModelStore, sha256_file
from tests.conftest import train, write_csv

IMAGE = re.compile(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def images(page: str) -> dict[str, tuple[int, int]]:
    """Each embedded image's caption and pixel size; fails unless every one decodes as a PNG."""
    found = {}
    for caption, data in IMAGE.findall(page):
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            image.load()
            assert image.format == "PNG"
            found[caption] = image.size
    return found


def report_of(store: Path, name: str) -> tuple[str, dict[str, object]]:
    version = store / name / "1"
    meta = json.loads((version / "metadata.json").read_text())
    page = (version / "report.html").read_text()
    assert meta["report"]["sha256"] == sha256_file(version / "report.html")
    return page, meta


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!doctype html>")
    # No external URL anywhere: no links, scripts, fonts or images fetched from elsewhere.
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", page)
    assert not re.search(r"(https?:)?//[a-z0-9]", text, re.IGNORECASE)
    assert re.findall(r'(?:src|href)="([^"]*)"', text) == ["data:image/png;base64,"] * 3
    assert "<script" not in page


def test_classifier_report_holds_its_plots_and_facts(penguins_store: Path) -> None:
    page, meta = report_of(penguins_store, "penguins")
    assert_self_contained(page)
    plots = images(page)
    assert set(plots) == {
        "Confusion matrix (held-out rows)",
        "ROC curves, one class against the rest",
        "Permutation importance (held-out rows)",
    }
    assert all(width > 200 and height > 150 for width, height in plots.values())
    assert "penguins version 1" in page
    for metric in ("accuracy", "f1_macro", "roc_auc"):
        assert f"<td>{metric}</td>" in page
    # The training data summary: each feature with its type and what it holds.
    assert "<td>island</td><td>string</td>" in page
    assert "Biscoe 49%" in page
    assert "<td>year</td><td>integer</td>" in page
    assert "min 2007, median 2008, max 2009" in page
    # The ONNX check and the metadata essentials.
    onnx = meta["onnx"]
    assert isinstance(onnx, dict)
    assert onnx["sha256"] in page
    assert "largest probability deviation" in page
    artifact = meta["artifact"]
    assert isinstance(artifact, dict)
    assert artifact["sha256"] in page
    assert "Adelie, Chinstrap, Gentoo" in page


def test_regressor_report_plots_predictions_and_residuals(regression_store: Path) -> None:
    page, _ = report_of(regression_store, "mass")
    assert_self_contained(page)
    assert set(images(page)) == {
        "Predicted against actual (held-out rows)",
        "Residuals against predicted",
        "Permutation importance (held-out rows)",
    }
    for metric in ("rmse", "mae", "r2"):
        assert f"<td>{metric}</td>" in page
    assert "drop in r2" in page or "how much r2 drops" in page.lower()


def test_report_escapes_what_the_data_names(tmp_path: Path) -> None:
    rows = [[i % 7, "<b>x</b>" if i % 2 else "y&z", "a" if i % 3 else "b"] for i in range(60)]
    data = write_csv(tmp_path / "odd.csv", ["size", "<i>kind</i>", "label"], rows)
    assert train(tmp_path / "models", "--data", str(data), "--target", "label") == 0
    page = (tmp_path / "models" / "odd" / "1" / "report.html").read_text()
    assert "<b>" not in page
    assert "<i>" not in page
    assert "&lt;i&gt;kind&lt;/i&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


def test_verify_catches_an_edited_report(tmp_path: Path, penguins_store: Path) -> None:
    store = ModelStore(penguins_store)
    ref = store.resolve("penguins", 1)
    assert store.verify(ref) == []
    copy = tmp_path / "models"
    (copy / "penguins").mkdir(parents=True)
    target = copy / "penguins" / "1"
    target.mkdir()
    for file in ref.path.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    report = target / "report.html"
    report.write_text(report.read_text().replace("penguins version 1", "penguins version 9"))
    problems = ModelStore(copy).verify(ModelStore(copy).resolve("penguins", 1))
    assert len(problems) == 1
    assert "report.html" in problems[0]


def test_a_feature_that_is_the_answer_in_disguise_is_flagged_as_a_likely_leak(
    tmp_path: Path,
) -> None:
    import random

    rng = random.Random(5)
    rows = []
    for _ in range(300):
        label = rng.choice(["yes", "no"])
        rows.append([1 if label == "yes" else 0, rng.uniform(0, 1), rng.uniform(0, 1), label])
    data = write_csv(tmp_path / "leak.csv", ["flag", "noise", "more_noise", "label"], rows)
    assert train(tmp_path / "models", "--data", str(data), "--target", "label") == 0
    page = (tmp_path / "models" / "leak" / "1" / "report.html").read_text()
    assert "Likely leak: <code>flag</code>" in page
