"""The Open Inference Protocol's two JSON paths hold to one rule set (issue 20): on generated
requests, the fast path (one pydantic pass) and the general path (Python, naming each fault)
give identical rows, and `/predict` gives the same rows or refuses the same instances."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelstore import Metadata, ModelStore
from service.features import FeatureSpec
from service.protocols.v2_model import TensorModel
from service.protocols.v2_tensors import TensorError, decode_request
from service.spec import ONE_PASS_BYTES, BatchTooLargeError, InstancesError, InstancesValidator

DATATYPES = {
    "number": ["FP64", "FP32", "INT64", "INT8", "UINT8"],
    "integer": ["INT64", "INT32", "FP64", "UINT16"],
    "boolean": ["BOOL"],
    "string": ["BYTES"],
}


def values_for(feature: Any) -> st.SearchStrategy[Any]:
    """Valid values mostly, with gaps and every kind of fault mixed in."""
    faults = st.sampled_from(["", "x", None, True, [], 2.5, -1, 300, 10**16, float("nan")])
    if feature.type == "string":
        good: st.SearchStrategy[Any] = st.sampled_from([*(feature.categories or []), "", None])
    elif feature.type == "boolean":
        good = st.booleans()
    elif feature.type == "integer":
        good = st.integers(-5, 3000) | st.integers(1990, 2020).map(float)
    else:
        good = st.floats(-1e4, 1e4, allow_nan=False) | st.integers(-100, 100)
    return st.one_of(good, good, good, faults)


def request_for(meta: Metadata) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        rows = draw(st.integers(1, 4))
        inputs = []
        for feature in meta.features:
            datatype = draw(st.sampled_from(DATATYPES[feature.type]))
            data = [draw(values_for(feature)) for _ in range(rows)]
            shape = draw(st.sampled_from([[rows], [rows, 1]]))
            inputs.append(
                {"name": feature.name, "datatype": datatype, "shape": shape, "data": data}
            )
        return {"inputs": inputs}

    return build()


def general(model: TensorModel, body: bytes) -> Any:
    try:
        request = decode_request(body, None)
        model.check_requested(request.outputs)
        return model.table(request.inputs).columns
    except (TensorError, BatchTooLargeError) as exc:
        return ("refused", str(exc))


def fast(model: TensorModel, body: bytes) -> Any:
    try:
        return model.decode(body, None)[1].columns
    except (TensorError, BatchTooLargeError) as exc:
        return ("refused", str(exc))


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and 2007 equal to 2007.0 only if both are numbers."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module", params=["penguins", "numeric"])
def model(request: pytest.FixtureRequest) -> TensorModel:
    """The default model, and the all-numeric one, whose requests may also be a single
    [rows, features] tensor: a feature's tensor its own schema refuses must never be read as
    that matrix."""
    store = ModelStore(request.getfixturevalue(f"{request.param}_store"))
    meta = store.metadata(store.resolve(request.param))
    return TensorModel(FeatureSpec(meta), max_batch_size=1000, platform="onnxruntime_onnx")


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fast_and_general_paths_give_identical_rows_or_refusals(
    model: TensorModel, data: st.DataObject
) -> None:
    request = data.draw(request_for(model.metadata))
    body = json.dumps(request).encode()
    assert same(fast(model, body), general(model, body)), request


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_large_bodies_parsed_first_give_identical_rows_or_refusals(
    model: TensorModel, data: st.DataObject
) -> None:
    """Past ONE_PASS_BYTES the fast path parses with orjson, then validates the parsed values:
    padded with a parameter nobody reads, the same requests give the same rows."""
    request = data.draw(request_for(model.metadata))
    request["parameters"] = {"padding": "x" * ONE_PASS_BYTES}
    body = json.dumps(request).encode()
    assert len(body) > ONE_PASS_BYTES
    assert same(fast(model, body), general(model, body)), request


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_predict_reads_the_same_rows_as_the_protocol(
    model: TensorModel, data: st.DataObject
) -> None:
    """A request /predict accepts gives the same rows over v2 (with each feature's first
    datatype), and one it refuses is refused there too."""
    meta = model.metadata
    rows = data.draw(st.integers(1, 3))
    instances = [{f.name: data.draw(values_for(f)) for f in meta.features} for _ in range(rows)]
    if any(isinstance(v, float) and math.isnan(v) for i in instances for v in i.values()):
        return  # JSON has no NaN for /predict (a 422 that says to send null)
    validator = InstancesValidator(FeatureSpec(meta), 1000)
    try:
        native: Any = validator.validate_json(json.dumps({"instances": instances}).encode())
        native_columns = {f.name: [i[f.name] for i in native] for f in meta.features}
    except InstancesError:
        native_columns = "refused"
    types = {"number": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES"}
    tensors = [
        {
            "name": f.name,
            "datatype": types[f.type],
            "shape": [rows],
            "data": [i[f.name] for i in instances],
        }
        for f in meta.features
    ]
    protocol = fast(model, json.dumps({"inputs": tensors}).encode())
    if native_columns == "refused":
        assert isinstance(protocol, tuple), (instances, protocol)
    else:
        assert same(_as_floats(native_columns, meta), _as_floats(protocol, meta)), instances


def _as_floats(columns: Any, meta: Metadata) -> Any:
    """/predict keeps a number feature's whole values as ints; both runtimes read them as floats."""
    if not isinstance(columns, dict):
        return columns
    kinds = {f.name: f.type for f in meta.features}
    return {
        name: [float(v) if kinds[name] == "number" and type(v) is int else v for v in values]
        for name, values in columns.items()
    }
