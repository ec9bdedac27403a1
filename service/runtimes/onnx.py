"""The ONNX Runtime: the version's compiled graph, checked against the pipeline at training.

The graph takes one tensor per feature (named as the metadata records, see modelstore.spec):
float64 for numbers, integers and booleans (float32 in versions compiled before graphs computed
as the pipeline does; the graph's own input type decides), NaN for a gap; strings for categories
("" for a gap), as `training/onnx_graph.py` wrote it. Nothing here can
unpickle anything. The session is tuned for small calls: one thread, sequential execution, so a
1-row call costs tens of microseconds and workers, not threads, give parallelism.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import numpy as np
import onnxruntime

from modelstore import Metadata
from service.runtimes.base import Columns, Predictor, Table, text_with_gaps_as

# Row counts with a bound buffer kept, per thread: a binding pays off when the same shape comes
# again (1-row calls, a client's fixed batch size).
BOUND_SHAPES: Final = 8
# The most values (rows x number features) a bound buffer holds: 256 KB, so a thread's buffers
# stay within 2 MB however wide the model (30 features: up to 1,092 rows).
BOUND_VALUES_MAX: Final = 32_768


class OnnxPredictor(Predictor):
    runtime = "onnx"

    def __init__(self, metadata: Metadata, graph: bytes) -> None:
        # Before the first session creates ONNX Runtime's environment: only errors reach the log
        # (a read-only home otherwise prints a telemetry warning that is not JSON).
        onnxruntime.set_default_logger_severity(3)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initialisers are not ours to fix
        self.session = onnxruntime.InferenceSession(
            graph, options, providers=["CPUExecutionProvider"]
        )
        # The wrapper's `run` checks the feed's names and ownership on every call (a third of a
        # 1-row call); this feed is built from the graph's own inputs, so the binding underneath
        # is called straight, where this ONNX Runtime has it (the tests run every answer).
        run = getattr(getattr(self.session, "_sess", None), "run", None)
        self._run: Callable[..., Any] = run if callable(run) else self.session.run
        outputs = self.session.get_outputs()
        # skl2onnx's classifiers answer (label, probabilities); regressors a single variable.
        self.output = outputs[1].name if metadata.task == "classification" else outputs[0].name
        names = [f.name for f in metadata.features]
        compiled = metadata.onnx
        graph_names = compiled.inputs if compiled is not None and compiled.inputs else names
        precision = {
            i.name: np.float64 if i.type == "tensor(double)" else np.float32
            for i in self.session.get_inputs()
        }
        # (column in the request, graph input it feeds, whether it is text, its number type)
        self.inputs = [
            (f.name, graph_name, f.type == "string", precision[graph_name])
            for f, graph_name in zip(metadata.features, graph_names, strict=True)
        ]
        # The graph inputs the numbers block feeds, a row each, when they all take one type.
        numbers = [(graph, kind) for _, graph, is_text, kind in self.inputs if not is_text]
        kinds = {kind for _, kind in numbers}
        self.number_type = kinds.pop() if len(kinds) == 1 else None
        self.number_inputs = [graph for graph, _ in numbers]
        self.text_inputs = [(name, graph) for name, graph, is_text, _ in self.inputs if is_text]
        self._bound = threading.local()  # each thread's {rows: (buffer, run, read)}: _bound_call
        super().__init__(metadata)

    def compute_typed(self, table: Table) -> np.ndarray[Any, Any]:
        block = table.numbers
        if block is None or self.number_type is None:
            return self.compute_columns(table.columns, table.rows)
        if not self.text_inputs and table.rows * len(self.number_inputs) <= BOUND_VALUES_MAX:
            return self._answer(self._bound_call(block))
        if block.dtype != self.number_type:
            with np.errstate(all="ignore"):  # huge numbers overflow float32; answers are checked
                block = block.astype(self.number_type)
        # Each row of the block, as a (rows, 1) view, feeds its graph input: no copy.
        feeds = dict(zip(self.number_inputs, block[:, :, None], strict=True))
        for name, graph in self.text_inputs:
            feeds[graph] = text_with_gaps_as(table.column(name), "").reshape(-1, 1)
        return self._answer(self._run([self.output], feeds, None)[0])

    def _bound_call(self, block: np.ndarray[Any, Any]) -> Any:
        """The graph on a numbers block, through inputs bound once to a buffer of this row
        count: the block is copied in and the session runs. Binding thirty inputs per call is
        most of a small call's cost (1 row: ~25 -> ~13 us, 100 rows: ~44 -> ~33 us). Bindings
        are per thread, since the dispatcher calls from the loop and from its own thread."""
        shapes: OrderedDict[int, tuple[Any, ...]] | None = getattr(self._bound, "shapes", None)
        if shapes is None:
            shapes = self._bound.shapes = OrderedDict()
        rows = block.shape[1]
        bound = shapes.get(rows)
        if bound is None:
            buffer = np.empty((len(self.number_inputs), rows, 1), dtype=self.number_type)
            binding = self.session.io_binding()
            for graph, column in zip(self.number_inputs, buffer, strict=True):
                binding.bind_cpu_input(graph, column)
            binding.bind_output(self.output)
            bound = shapes[rows] = (buffer, *self._bound_calls(binding))
            if len(shapes) > BOUND_SHAPES:
                shapes.popitem(last=False)
        else:
            shapes.move_to_end(rows)
        buffer, run, read = bound
        if block.dtype == buffer.dtype:
            buffer[:, :, 0] = block
        else:
            with np.errstate(all="ignore"):  # huge numbers overflow float32; answers are checked
                np.copyto(buffer[:, :, 0], block, casting="unsafe")
        run()
        return read()[0]

    def _bound_calls(self, binding: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
        """Run the graph on a binding, and read its outputs: the bindings underneath, called
        straight as `_run` is (the wrapper asks ONNX Runtime about graph capture on every call),
        where this ONNX Runtime has them."""
        run = getattr(getattr(self.session, "_sess", None), "run_with_iobinding", None)
        inner = getattr(binding, "_iobinding", None)
        if callable(run) and inner is not None:
            return partial(run, inner, None), inner.copy_outputs_to_cpu
        return partial(self.session.run_with_iobinding, binding), binding.copy_outputs_to_cpu

    def compute_columns(self, columns: Columns, rows: int) -> np.ndarray[Any, Any]:
        feeds: dict[str, np.ndarray[Any, Any]] = {}
        with np.errstate(all="ignore"):  # huge numbers may overflow; the answer is checked
            for name, graph_name, is_string, number_type in self.inputs:
                column = columns[name]
                if is_string:
                    column = text_with_gaps_as(column, "")
                elif column.dtype != number_type:
                    column = column.astype(number_type)
                feeds[graph_name] = column.reshape(-1, 1)
            (output,) = self._run([self.output], feeds, None)
        return self._answer(output)

    def _answer(self, output: Any) -> np.ndarray[Any, Any]:
        result = np.asarray(output, dtype=float)
        return result if self.is_classifier else result.reshape(-1)
