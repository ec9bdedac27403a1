"""The model as the Open Inference Protocol sees it: its metadata, its inputs (`v2_inputs`) and
its answers."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.features import FeatureSpec
from service.protocols.v2_inputs import TensorInputs
from service.protocols.v2_tensors import RequestedOutput, encode_response, to_bytes
from service.runtimes.base import first_largest


def label_datatype(classes: list[Any]) -> str:
    kinds = {type(c) for c in classes}
    if kinds == {bool}:
        return "BOOL"
    if kinds == {int}:
        return "INT64"
    if kinds <= {int, float}:
        return "FP64"
    return "BYTES"


class TensorModel(TensorInputs):
    """Built once at start-up from the version's feature spec."""

    def __init__(self, spec: FeatureSpec, max_batch_size: int, platform: str) -> None:
        super().__init__(spec, max_batch_size)
        self.metadata = metadata = spec.metadata
        self.platform = platform
        self.is_classifier = metadata.task == "classification"
        self.classes = list(metadata.classes or [])
        # Every output, JSON or binary: what a request that names none is answered with.
        self._every_output = {
            binary: [RequestedOutput(name, binary) for name in self.output_names]
            for binary in (False, True)
        }
        self.label_type = label_datatype(self.classes)

    # -- metadata -----------------------------------------------------------------------------

    def metadata_response(self) -> dict[str, Any]:
        """`GET /v2/models/{name}`: one input per feature, the outputs and the class order."""
        meta = self.metadata
        inputs = [{"name": r.name, "datatype": r.datatypes[0], "shape": [-1]} for r in self.rules]
        parameters: dict[str, Any] = {
            "task": meta.task,
            "feature_order": self.spec.names,
            "nullable_inputs": [r.name for r in self.rules if r.nullable],
            "single_tensor_input": self.all_numeric,
        }
        if self.is_classifier:
            outputs = [
                {"name": "label", "datatype": self.label_type, "shape": [-1]},
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(self.classes)]},
            ]
            parameters["classes"] = self.classes
        else:
            outputs = [{"name": "value", "datatype": "FP64", "shape": [-1]}]
        compiled = meta.onnx
        if self.platform == "onnxruntime_onnx" and compiled is not None:
            # How closely the graph served here was shown to answer as the pipeline.
            parameters["graph_check"] = {
                "precision": compiled.precision,
                "deviation": compiled.deviation,
                "max_deviation": compiled.max_deviation,
                "tolerance": compiled.tolerance,
                "rows": {k: c.model_dump() for k, c in (compiled.checks or {}).items()},
            }
        return {
            "name": meta.name,
            "versions": [str(meta.version)],
            "platform": self.platform,
            "inputs": inputs,
            "outputs": outputs,
            "parameters": parameters,
        }

    # -- outputs ------------------------------------------------------------------------------

    def answer(
        self,
        header: dict[str, Any],
        output: np.ndarray[Any, Any],
        requested: list[RequestedOutput] | None,
        binary: bool,
    ) -> tuple[bytes, int | None]:
        """The response body with the outputs asked for (all by default), each JSON or binary,
        and the JSON header's length when any is binary."""
        wanted = requested or self._every_output[binary]
        entries, chunks = [], []
        for name, as_binary in wanted:
            datatype, shape, values = self._output(name, output)
            entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
            if as_binary:
                raw = to_bytes(datatype, values)
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                entry["data"] = values
            entries.append(entry)
        header["outputs"] = entries
        return encode_response(header, chunks)

    def outputs(
        self, output: np.ndarray[Any, Any], requested: list[RequestedOutput] | None
    ) -> list[tuple[str, str, list[int], Any]]:
        """(name, datatype, shape, values) of each output asked for (all by default), for
        gRPC's messages."""
        names = [r.name for r in requested] if requested else self.output_names
        return [(name, *self._output(name, output)) for name in names]

    def _output(self, name: str, output: np.ndarray[Any, Any]) -> tuple[str, list[int], Any]:
        """Numbers stay a float64 array (the JSON answer writes it without a Python float per
        value); labels are a list of the metadata's own class values."""
        n = output.shape[0]
        if name == "value":
            return "FP64", [n], np.ascontiguousarray(output)
        if name == "probabilities":
            return "FP64", [n, output.shape[1]], np.ascontiguousarray(output).ravel()
        return self.label_type, [n], list(map(self.classes.__getitem__, first_largest(output)))
