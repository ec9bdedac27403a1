"""Every path held to the pipeline (issue 21), on generated tables and generated requests.

Hypothesis makes tables (numbers, integers up to 1e12, booleans, categories, with awkward column
names and gaps; string, integer and boolean labels, or a numeric target), each trained by the
real training CLI with a verified graph required. Then rows, valid and not, go through
`/predict`, KServe v1 (objects and lists), v2 JSON per feature, v2 as one tensor (all-numeric
models), v2 binary, and batch scoring, on both runtimes. Each valid row must get the offline
pipeline's label (probabilities within 1e-9) or value (within 1e-9 relative); each invalid row
must be refused by every one of them. The counts are printed.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from modelstore import LoadedModel, Metadata, ModelStore, class_key
from scoring.batch import BatchScorer
from service.app import create_app
from service.settings import Settings
from tests.conftest import train, write_csv

NAMES = ["mean radius", "Min.Price", "MPG-city", "a:b", "3rd", "größe", "a b", "a_b", "n" * 200]
KINDS = ["number", "integer", "large integer", "boolean", "string"]
LABELS = ["string", "integer", "boolean", "regression"]
FAMILIES = ["linear", "random_forest", "hist_gradient_boosting"]
ROWS = 90
TOLERANCE = 1e-9
COUNTS: Counter[str] = Counter()
TABLES = 30


@st.composite
def tables(draw: st.DrawFn) -> dict[str, Any]:
    width = draw(st.integers(1, 3))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=width, max_size=width, unique=True))
    return {
        "names": names,
        "kinds": [draw(st.sampled_from(KINDS)) for _ in names],
        "gaps": [draw(st.booleans()) for _ in names],
        "label": draw(st.sampled_from(LABELS)),
        "family": draw(st.sampled_from(FAMILIES)),
        "seed": draw(st.integers(0, 2**16)),
    }


def make_column(kind: str, rng: np.random.Generator) -> list[Any]:
    if kind == "number":
        return [round(float(v), 4) for v in rng.normal(50, 20, ROWS)]
    if kind == "integer":
        return [int(v) for v in rng.integers(0, 40, ROWS)]
    if kind == "large integer":
        return [int(v) for v in 10**9 + rng.integers(0, 10**6, ROWS) * 997]
    if kind == "boolean":
        return [bool(v) for v in rng.integers(0, 2, ROWS)]
    return [str(v) for v in rng.choice(["red", "green", "blue 1", "a.b"], ROWS)]


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def train_table(folder: Path, table: dict[str, Any]) -> LoadedModel:
    rng = np.random.default_rng(table["seed"])
    columns = [make_column(k, rng) for k in table["kinds"]]
    for column, gaps in zip(columns, table["gaps"], strict=True):
        if gaps:
            for row in rng.choice(ROWS, 8, replace=False):
                column[row] = None
    first = np.array([_as_number(v) for v in columns[0]], dtype=float)
    spread = max(1.0, float(np.nanstd(first)))
    signal = rng.normal(0, 1, ROWS) + np.nan_to_num(first - np.nanmean(first)) / spread
    label = table["label"]
    if label == "regression":
        target: list[Any] = [round(float(v), 6) for v in signal * 10]
    else:
        cut = np.quantile(signal, 0.5)
        chosen = {"string": ["low", "high"], "integer": [3, 7], "boolean": [False, True]}[label]
        target = [chosen[int(v > cut)] for v in signal]
    header = [*table["names"], "target"]
    rows = [[text(c[i]) for c in columns] + [text(target[i])] for i in range(ROWS)]
    data = write_csv(folder / "table.csv", header, rows)
    types = {"large integer": "integer"}
    declared = "".join(
        f'"{n}" = "{types.get(k, k)}"\n'
        for n, k in zip(table["names"], table["kinds"], strict=True)
    )
    task = "regression" if label == "regression" else "classification"
    config = folder / "table.toml"
    config.write_text(
        f'[data]\npath = "{data}"\ntarget = "target"\n[data.types]\n{declared}'
        f'[model]\ntask = "{task}"\nestimator = "{table["family"]}"\nrequire_onnx = true\n'
    )
    assert train(folder / "models", "--config", str(config), "--name", "prop", "--no-report") == 0
    store = ModelStore(folder / "models")
    return store.load(store.resolve("prop"))


def _as_number(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str):
        return float(len(value))
    return float(value)


def candidates(feature: Any) -> list[tuple[Any, bool]]:
    """Values for one feature and whether the contract accepts each."""
    if feature.type == "number":
        made = [(12.5, True), (-3, True), (1e15, True), ("x", False), (True, False), (1e16, False)]
    elif feature.type == "integer":
        made = [(7, True), (2007.0, True), (10**9 + 4_985_003, True), (2**53, False)]
        made += [(2.5, False), ("x", False)]
    elif feature.type == "boolean":
        made = [(True, True), (False, True), ("maybe", False), (3, False)]
    else:
        made = [(c, True) for c in feature.categories or [] if c != "__missing__"]
        made += [("never seen", False), (5, False)]
    made.append((None, feature.nullable))
    return made


@st.composite
def requests(draw: st.DrawFn, meta: Metadata, rows: np.ndarray[Any, Any]) -> list[Any]:
    """Rows of (instance, valid): mostly training rows with one value changed."""
    made = []
    for _ in range(10):
        base = rows[draw(st.integers(0, len(rows) - 1))]
        instance = {}
        valid = True
        for index, feature in enumerate(meta.features):
            value = base[index]
            value = None if isinstance(value, float) and math.isnan(value) else value
            if draw(st.integers(0, 3)) == 0:
                value, ok = draw(st.sampled_from(candidates(feature)))
                valid = valid and ok
            elif value is None and not feature.nullable:
                valid = False
            instance[feature.name] = value
        made.append((instance, valid))
    return made


def offline(loaded: LoadedModel, instances: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
    meta = loaded.metadata
    matrix = np.empty((len(instances), len(meta.features)), dtype=object)
    for i, instance in enumerate(instances):
        for j, feature in enumerate(meta.features):
            value = instance[feature.name]
            matrix[i, j] = math.nan if value is None else value
    if meta.task == "classification":
        return np.asarray(loaded.estimator.predict_proba(matrix), dtype=float)
    return np.asarray(loaded.estimator.predict(matrix), dtype=float)


def agrees(meta: Metadata, expected: np.ndarray[Any, Any], answer: Any) -> bool:
    """A native-shaped answer (label + probabilities, or value) against one offline row."""
    if meta.task == "classification":
        classes = meta.classes or []
        probabilities = [answer["probabilities"][class_key(c)] for c in classes]
        label_ok = answer["label"] == classes[int(np.argmax(expected))]
        return label_ok and bool(np.abs(np.array(probabilities) - expected).max() <= TOLERANCE)
    value = float(answer["value"])
    return abs(value - float(expected)) <= TOLERANCE * max(1.0, abs(float(expected)))


def v2_answer(meta: Metadata, body: dict[str, Any]) -> dict[str, Any]:
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    if meta.task == "regression":
        return {"value": outputs["value"][0]}
    classes = meta.classes or []
    return {
        "label": outputs["label"][0],
        "probabilities": dict(
            zip([class_key(c) for c in classes], outputs["probabilities"], strict=True)
        ),
    }


def routes(client: TestClient, meta: Metadata, instance: dict[str, Any]) -> dict[str, Any]:
    """Each route's answer for one instance in native shape, or None when it refused."""
    answers: dict[str, Any] = {}
    names = [f.name for f in meta.features]
    got = client.post("/predict", json={"instances": [instance]})
    answers["/predict"] = got.json()["predictions"][0] if got.status_code == 200 else None
    for kind, row in (("v1 objects", instance), ("v1 lists", [instance[n] for n in names])):
        got = client.post(f"/v1/models/{meta.name}:predict", json={"instances": [row]})
        answers[kind] = _v1(meta, got.json()) if got.status_code == 200 else None
    tensors = [
        {
            "name": f.name,
            "datatype": _datatype(f, instance[f.name]),
            "shape": [1],
            "data": [instance[f.name]],
        }
        for f in meta.features
    ]
    got = client.post(f"/v2/models/{meta.name}/infer", content=orjson.dumps({"inputs": tensors}))
    answers["v2 per feature"] = v2_answer(meta, got.json()) if got.status_code == 200 else None
    if all(f.type in ("number", "integer") for f in meta.features):
        matrix = {
            "name": "x",
            "datatype": "FP64",
            "shape": [1, len(names)],
            "data": [instance[n] for n in names],
        }
        got = client.post(
            f"/v2/models/{meta.name}/infer", content=orjson.dumps({"inputs": [matrix]})
        )
        answers["v2 one tensor"] = v2_answer(meta, got.json()) if got.status_code == 200 else None
    binary = _binary(meta, instance)
    if binary is not None:
        header, raw = binary
        got = client.post(
            f"/v2/models/{meta.name}/infer",
            content=header + raw,
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
        )
        answers["v2 binary"] = v2_answer(meta, got.json()) if got.status_code == 200 else None
    return answers


def _v1(meta: Metadata, body: dict[str, Any]) -> dict[str, Any]:
    prediction = body["predictions"][0]
    if meta.task == "regression":
        return {"value": prediction}
    classes = meta.classes or []
    return {
        "label": prediction,
        "probabilities": {class_key(c): math.nan for c in classes},
    }


def _datatype(feature: Any, value: Any) -> str:
    if feature.type == "string":
        return "BYTES"
    if feature.type == "boolean":
        return "BOOL"
    if feature.type == "integer" and type(value) is int:
        return "INT64"
    return "FP64"


def _binary(meta: Metadata, instance: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """The instance as binary tensors, or None when a value has no binary form (text in a
    number, a gap in a boolean)."""
    inputs, chunks = [], []
    for feature in meta.features:
        value = instance[feature.name]
        if feature.type == "string":
            if not isinstance(value, str | None):
                return None
            data = (value or "").encode()
            raw, datatype = struct.pack("<I", len(data)) + data, "BYTES"
        elif feature.type == "boolean":
            if type(value) is not bool:
                return None
            raw, datatype = bytes([value]), "BOOL"
        else:
            if value is not None and type(value) not in (int, float):
                return None
            number = math.nan if value is None else float(value)
            raw, datatype = struct.pack("<d", number), "FP64"
        inputs.append(
            {
                "name": feature.name,
                "datatype": datatype,
                "shape": [1],
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    return orjson.dumps({"inputs": inputs}), b"".join(chunks)


def scored(folder: Path, loaded: LoadedModel, cases: list[Any]) -> dict[int, Any]:
    """Batch scoring of every case: the native-shaped answer per row, None where rejected."""
    meta = loaded.metadata
    header = [f.name for f in meta.features]
    # A row number beside the features: a line whose every cell is empty is no row at all.
    rows = [
        [str(number), *(v if isinstance(v, str) else text(v) for v in (i[n] for n in header))]
        for number, (i, _) in enumerate(cases)
    ]
    source = write_csv(folder / "score.csv", ["case", *header], rows)
    out, rejects = folder / "scored.csv", folder / "rejects.csv"
    BatchScorer(loaded).score(source, out, rejects)
    import csv

    answers: dict[int, Any] = dict.fromkeys(range(len(cases)))
    with out.open() as handle:
        good = list(csv.DictReader(handle))
    with rejects.open() as handle:
        bad = {int(r["row"]) - 1 for r in csv.DictReader(handle)}
    kept = [i for i in range(len(cases)) if i not in bad]
    classes = meta.classes or []
    for i, row in zip(kept, good, strict=True):
        if meta.task == "regression":
            answers[i] = {"value": float(row["prediction"])}
        else:
            keys = [class_key(c) for c in classes]
            probabilities = {k: float(row[f"probability_{k}"]) for k in keys}
            label = classes[int(np.argmax([probabilities[k] for k in keys]))]
            answers[i] = {"label": label, "probabilities": probabilities}
    return answers


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_path_answers_as_the_pipeline_or_all_refuse(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    @settings(
        max_examples=TABLES,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: bounded time
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(table=tables(), data=st.data())
    def run(table: dict[str, Any], data: st.DataObject) -> None:
        folder = tmp_path_factory.mktemp("table")
        loaded = train_table(folder, table)
        meta = loaded.metadata
        assert meta.onnx is not None
        assert meta.onnx.verified, meta.onnx.reason
        COUNTS["tables"] += 1
        features = [f.name for f in meta.features]
        store_rows = _training_rows(folder / "table.csv", features, meta)
        cases = data.draw(requests(meta, store_rows))
        valid = [c for c, ok in cases if ok]
        expected = offline(loaded, valid) if valid else np.empty(0)
        expected_by_case = {}
        position = 0
        for index, (_, ok) in enumerate(cases):
            if ok:
                expected_by_case[index] = expected[position]
                position += 1
        for runtime in ("onnx", "sklearn"):
            settings_ = Settings(model_dir=folder / "models", model_name="prop", runtime=runtime)
            with TestClient(create_app(settings_), raise_server_exceptions=False) as client:
                for index, (instance, ok) in enumerate(cases):
                    for route, answer in routes(client, meta, instance).items():
                        COUNTS["requests"] += 1
                        where = f"{route} ({runtime}) on {instance!r}"
                        if not ok:
                            assert answer is None, f"{where}: accepted an invalid row"
                            continue
                        assert answer is not None, f"{where}: refused a valid row"
                        if route.startswith("v1") and meta.task == "classification":
                            classes = meta.classes or []
                            assert (
                                answer["label"] == classes[int(np.argmax(expected_by_case[index]))]
                            ), where
                        else:
                            assert agrees(meta, expected_by_case[index], answer), (where, answer)
        for index, answer in scored(folder, loaded, cases).items():
            COUNTS["scored rows"] += 1
            ok = cases[index][1]
            assert (answer is not None) == ok, f"scoring row {index}: {cases[index][0]!r}"
            if ok:
                assert agrees(meta, expected_by_case[index], answer), ("scoring", index, answer)
        COUNTS["rows"] += len(cases)
        COUNTS["valid rows"] += sum(1 for _, ok in cases if ok)
        COUNTS["invalid rows"] += sum(1 for _, ok in cases if not ok)

    run()
    print(
        f"property test: {COUNTS['tables']} tables, {COUNTS['rows']} rows "
        f"({COUNTS['valid rows']} valid, {COUNTS['invalid rows']} invalid), "
        f"{COUNTS['requests']} route requests, {COUNTS['scored rows']} scored rows"
    )
    assert COUNTS["tables"] >= TABLES
    assert COUNTS["invalid rows"] > 0
    assert COUNTS["valid rows"] > 0


def _training_rows(path: Path, names: list[str], meta: Metadata) -> np.ndarray[Any, Any]:
    """The training file's feature cells as request values (the reader's own rules)."""
    from modelstore.spec import read_cell
    from modelstore.table import MISSING_MARKERS, TableReader

    with TableReader(path) as table:
        header = table.header
        positions = [header.index(n) for n in names]
        rows = []
        for cells in table.rows():
            row = []
            for feature, p in zip(meta.features, positions, strict=True):
                cell = cells[p]
                row.append(math.nan if cell in MISSING_MARKERS else read_cell(cell, feature.type))
            rows.append(row)
    matrix = np.empty((len(rows), len(names)), dtype=object)
    for i, row in enumerate(rows):
        matrix[i] = row
    return matrix
