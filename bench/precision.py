"""What float64 graphs cost: ONNX Runtime time per call for the graph training writes now
(float64, computing as the pipeline does) against skl2onnx's float32 conversion of the same fit
(what versions carried before), on the default model and the forest; and how often each
disagrees with scikit-learn on values between the training values.

Runs in the development environment (skl2onnx is a development dependency, kept for this
comparison only). `python bench/precision.py` prints the table alone; `bench/run.py` includes it.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CALLS = 400


def _session(graph: bytes) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def float32_graph(pipeline: Any, features: list[Any], task: str) -> bytes:
    """skl2onnx 1.20's conversion, float32 inputs: the graphs versions carried before."""
    import copy

    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    from modelstore.spec import graph_input_names

    prepared = copy.deepcopy(pipeline)
    for name, transformer, _ in prepared.named_steps["preprocess"].transformers_:
        if name == "categorical":
            transformer.named_steps["impute"].missing_values = ""
        elif name == "boolean":
            transformer.statistics_ = transformer.statistics_.astype(float)
            transformer._fit_dtype = np.dtype(float)
    names = graph_input_names([f.name for f in features])
    inputs = [
        (n, StringTensorType([None, 1]) if f.type == "string" else FloatTensorType([None, 1]))
        for n, f in zip(names, features, strict=True)
    ]
    options = {id(prepared): {"zipmap": False}} if task == "classification" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert_sklearn(
            prepared, initial_types=inputs, options=options, target_opset={"": 17, "ai.onnx.ml": 3}
        )
    graph: bytes = model.SerializeToString()
    return graph


def feeds(features: list[Any], rows: np.ndarray[Any, Any], number_type: Any) -> dict[str, Any]:
    from training.export import graph_inputs

    made = graph_inputs(features, rows)
    return {k: v.astype(number_type) if v.dtype != object else v for k, v in made.items()}


def per_call_ms(session: Any, feed: dict[str, Any]) -> float:
    samples = []
    for _ in range(CALLS):
        started = time.perf_counter()
        session.run(None, feed)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def disagreements(session: Any, pipeline: Any, features: list[Any], rows: Any, kind: Any) -> int:
    """Labels that differ from scikit-learn on rows between the training values: each
    numeric value moved to the midpoint towards another row's."""
    rng = np.random.default_rng(0)
    probe = rows.copy()
    for j, feature in enumerate(features):
        if feature.type in ("number", "integer"):
            other = rows[rng.permutation(len(rows)), j]
            mixed = [
                v if _gap(v) or _gap(o) else (float(v) + float(o)) / 2
                for v, o in zip(rows[:, j], other, strict=True)
            ]
            probe[:, j] = mixed
    output = session.run(None, feeds(features, probe, kind))
    expected = pipeline.predict_proba(probe).argmax(axis=1)
    return int((np.asarray(output[1]).argmax(axis=1) != expected).sum())


def _gap(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def bench_precision(work: Path) -> str:
    import joblib

    from modelstore import ModelStore
    from tests.conftest import train

    lines = [
        "float64 graphs: ONNX Runtime per call (median of 400), float64 graph against "
        "skl2onnx's float32 one",
        f"{'model':<26}{'rows':>6}{'float32 ms':>12}{'float64 ms':>12}{'ratio':>8}"
        f"{'labels off (f32/f64)':>24}",
    ]
    for label, config in (("penguins", None), ("forest", "training/configs/random_forest.toml")):
        models = work / "precision" / label
        args = ["--name", label, "--no-report"]
        args += ["--config", str(ROOT / config)] if config else []
        if train(models, *args) != 0:
            sys.exit(f"precision bench: training {label} failed")
        store = ModelStore(models)
        loaded = store.load(store.resolve(label))
        pipeline = joblib.load(loaded.ref.path / loaded.metadata.artifact.file)
        features = list(loaded.metadata.features)
        rows = _training_rows(loaded)
        new = _session(loaded.graph or b"")
        old = _session(float32_graph(pipeline, features, loaded.metadata.task))
        off = (
            disagreements(old, pipeline, features, rows, np.float32),
            disagreements(new, pipeline, features, rows, np.float64),
        )
        for size in (1, 100):
            batch = rows[np.arange(size) % len(rows)]
            before = per_call_ms(old, feeds(features, batch, np.float32))
            after = per_call_ms(new, feeds(features, batch, np.float64))
            lines.append(
                f"{label:<26}{size:>6}{before:>12.4f}{after:>12.4f}{after / before:>8.2f}"
                f"{f'{off[0]} / {off[1]} of {len(rows)}':>24}"
            )
    return "\n".join(lines)


def _training_rows(loaded: Any) -> np.ndarray[Any, Any]:
    from modelstore.spec import read_cell
    from modelstore.table import MISSING_MARKERS, TableReader

    features = loaded.metadata.features
    with TableReader(ROOT / "training" / "data" / "penguins.csv") as table:
        where = [table.header.index(f.name) for f in features]
        rows = [
            [
                np.nan if cells[p] in MISSING_MARKERS else read_cell(cells[p], f.type)
                for f, p in zip(features, where, strict=True)
            ]
            for cells in table.rows()
        ]
    matrix = np.empty((len(rows), len(features)), dtype=object)
    for i, row in enumerate(rows):
        matrix[i] = row
    return matrix


if __name__ == "__main__":
    import tempfile

    print(bench_precision(Path(tempfile.mkdtemp(prefix="bench-precision-"))))
