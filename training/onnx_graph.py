"""The fitted pipeline as an ONNX graph that computes what scikit-learn computes, step by step.

Our pipelines have one shape (see training/pipeline.py), so the graph is written here rather
than by a general converter, whose float64 paths do not load in ONNX Runtime or round thresholds
to float32. Every number enters as float64 and stays float64, except where scikit-learn itself
rounds: its tree module (random forests) compares float32 features against float64 thresholds,
so the graph casts each value to float32 and back right before those trees. HistGradientBoosting
compares float64 values with float64 thresholds; both tree families use ONNX-ML's `TreeEnsemble`
(opset 5), whose splits and leaf values are float64 tensors.

Inputs are one tensor per feature, named by `modelstore.spec.graph_input_names`: float64 [n, 1]
for numbers, integers and booleans (NaN for a gap), strings [n, 1] for categories ("" for a gap).
A classifier answers `label` (int64 index of the most probable class) and `probabilities`
(float64 [n, classes]); a regressor answers `variable` (float64 [n, 1]).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from sklearn.pipeline import Pipeline

from modelstore import Feature
from modelstore.spec import graph_input_names
from training.pipeline import MISSING_CATEGORY

OPSET = {"": 17, "ai.onnx.ml": 5}
MISSING_STRING = ""
_DOUBLE = TensorProto.DOUBLE


class UnsupportedPipelineError(Exception):
    """A fitted pipeline this writer cannot reproduce exactly; `str()` says what."""


class _Graph:
    """Nodes and constants being collected, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.constants: list[Any] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, value: Any, hint: str = "c") -> str:
        name = self.name(hint)
        self.constants.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        domain = "ai.onnx.ml" if op_type in ("TreeEnsemble", "LabelEncoder") else ""
        self.nodes.append(helper.make_node(op_type, inputs, [out], domain=domain, **attrs))
        return out


def write_graph(pipeline: Pipeline, features: list[Feature], task: str) -> bytes:
    """The serialised graph (deterministic bytes for the same fit)."""
    graph = _Graph()
    names = graph_input_names([f.name for f in features])
    inputs = {
        name: helper.make_tensor_value_info(
            name, TensorProto.STRING if f.type == "string" else _DOUBLE, [None, 1]
        )
        for name, f in zip(names, features, strict=True)
    }
    matrix = _preprocess(graph, pipeline.named_steps["preprocess"], names)
    estimator = pipeline.named_steps["model"]
    outputs = _estimator(graph, estimator, matrix, task)
    made = helper.make_graph(
        graph.nodes, "pipeline", list(inputs.values()), outputs, initializer=graph.constants
    )
    model = helper.make_model(
        made,
        opset_imports=[helper.make_opsetid(domain, v) for domain, v in sorted(OPSET.items())],
        producer_name="sklearn-serve",
    )
    model.ir_version = 9
    serialised: bytes = model.SerializeToString(deterministic=True)
    return serialised


# -- preprocessing: ColumnTransformer(numeric, boolean, categorical) ---------------------------


def _preprocess(graph: _Graph, transformer: Any, names: list[str]) -> str:
    """The transformed matrix, float64 [n, columns], in the ColumnTransformer's order."""
    parts = []
    for kind, step, columns in transformer.transformers_:
        if kind == "drop" or step == "drop":
            continue
        if kind == "numeric":
            imputer = step.named_steps["impute"]
            value = _imputed(graph, imputer, [names[i] for i in columns])
            if "scale" in step.named_steps:
                scaler = step.named_steps["scale"]
                centred = graph.op("Sub", [value, graph.constant(scaler.mean_, "mean")])
                value = graph.op("Div", [centred, graph.constant(scaler.scale_, "scale")])
            parts.append(value)
        elif kind == "boolean":
            parts.append(_imputed(graph, step, [names[i] for i in columns]))
        elif kind == "categorical":
            encoder = step.named_steps["encode"]
            for index, categories in zip(columns, encoder.categories_, strict=True):
                parts.append(_one_hot(graph, names[index], [str(c) for c in categories]))
        else:
            raise UnsupportedPipelineError(f"unknown preprocessing step {kind!r}")
    if len(parts) == 1:
        return parts[0]
    return graph.op("Concat", parts, "features", axis=1)


def _imputed(graph: _Graph, imputer: Any, inputs: list[str]) -> str:
    """Columns side by side, each gap replaced by the imputer's statistic (float64)."""
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    if len(statistics) != len(inputs) or np.isnan(statistics).any():
        raise UnsupportedPipelineError("an imputer dropped a column that had no values")
    joined = inputs[0] if len(inputs) == 1 else graph.op("Concat", inputs, "columns", axis=1)
    gaps = graph.op("IsNaN", [joined])
    return graph.op("Where", [gaps, graph.constant(statistics, "fill"), joined], "imputed")


def _one_hot(graph: _Graph, name: str, categories: list[str]) -> str:
    """One column per category seen in training; a gap is the missing category (when training
    had one), anything else unseen is all zeros, as OneHotEncoder(handle_unknown='ignore')."""
    keys = list(categories)
    positions = list(range(len(categories)))
    if MISSING_CATEGORY in categories:
        keys.append(MISSING_STRING)
        positions.append(categories.index(MISSING_CATEGORY))
    index = graph.op(
        "LabelEncoder",
        [name],
        "category",
        keys_strings=keys,
        values_int64s=positions,
        default_int64=-1,
    )
    every = graph.constant(np.arange(len(categories), dtype=np.int64).reshape(1, -1), "range")
    hits = graph.op("Equal", [index, every])
    return graph.op("Cast", [hits], "onehot", to=_DOUBLE)


# -- estimators --------------------------------------------------------------------------------


def _estimator(graph: _Graph, estimator: Any, matrix: str, task: str) -> list[Any]:
    kind = type(estimator).__name__
    if kind in ("LogisticRegression", "Ridge"):
        coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64))
        product = graph.op("MatMul", [matrix, graph.constant(coef.T, "coef")])
        raw = graph.op("Add", [product, graph.constant(intercept, "intercept")], "decision")
    elif kind.startswith("RandomForest"):
        # scikit-learn's trees read float32 features: round exactly as its check_array does.
        single = graph.op("Cast", [matrix], "as_float32", to=TensorProto.FLOAT)
        rounded = graph.op("Cast", [single], "rounded", to=_DOUBLE)
        raw = _forest(graph, estimator, rounded, task)
    elif kind.startswith("HistGradientBoosting"):
        raw = _boosting(graph, estimator, matrix)
    else:
        raise UnsupportedPipelineError(f"no graph writer for {kind}")
    if task == "regression":
        value = graph.op("Identity", [raw], "variable")
        return [_output(graph, value, "variable", [None, 1])]
    if kind.startswith("RandomForest"):
        probabilities = raw
    elif np.size(estimator.classes_) <= 2:
        # Binary: one score, P(second class) = expit(score), the first its complement.
        positive = graph.op("Sigmoid", [raw])
        negative = graph.op("Sub", [graph.constant(np.array(1.0)), positive])
        probabilities = graph.op("Concat", [negative, positive], axis=1)
    else:
        probabilities = graph.op("Softmax", [raw], axis=1)
    label = graph.op("ArgMax", [probabilities], axis=1, keepdims=0)
    classes = int(np.size(estimator.classes_))
    return [
        _output(graph, label, "label", [None], TensorProto.INT64),
        _output(graph, probabilities, "probabilities", [None, classes]),
    ]


def _output(graph: _Graph, value: str, name: str, shape: list[Any], kind: int = _DOUBLE) -> Any:
    graph.nodes.append(helper.make_node("Identity", [value], [name]))
    return helper.make_tensor_value_info(name, kind, shape)


def _forest(graph: _Graph, forest: Any, matrix: str, task: str) -> str:
    """The trees' average: values, or class fractions (each leaf normalised as
    DecisionTreeClassifier does). scikit-learn's trees compare a float32 feature with a float64
    threshold, so each value is rounded to float32 first.

    A TreeEnsemble leaf adds to one target, so a classifier's trees each answer their leaf's
    number (exact in float32), and the rows of fractions are looked up in float64 and averaged.
    They walk float32 values against the largest float32 not above each threshold, which splits
    every float32 exactly as the threshold does.
    """
    if task == "regression":  # one value per leaf: the ensemble averages them in float64
        rounded = graph.op("Cast", [graph.op("Cast", [matrix], to=TensorProto.FLOAT)], to=_DOUBLE)
        each = [
            (t.children_left, t.children_right, t.feature, t.threshold, t.value[:, 0, 0], None)
            for t in (tree.tree_ for tree in forest.estimators_)
        ]
        return _tree_ensemble(graph, rounded, each, [0] * len(each), 1, average=True)
    trees: list[tuple[Any, ...]] = []
    table: list[Any] = []
    for tree in forest.estimators_:
        t = tree.tree_
        values = t.value[:, 0, :]
        total = values.sum(axis=1, keepdims=True)
        total[total == 0.0] = 1.0
        row = np.arange(len(table), len(table) + t.node_count, dtype=np.float64)
        table.extend(values / total)
        trees.append((t.children_left, t.children_right, t.feature, t.threshold, row, None))
    if len(table) >= 2**24:
        raise UnsupportedPipelineError("the forest has more leaves than float32 can number")
    single = graph.op("Cast", [matrix], "as_float32", to=TensorProto.FLOAT)
    count = len(trees)
    leaves = _tree_ensemble(
        graph, single, trees, list(range(count)), count, average=False, float32=True
    )
    index = graph.op("Cast", [leaves], "leaf", to=TensorProto.INT64)
    values_table = graph.constant(np.asarray(table, dtype=np.float64), "leaf_values")
    gathered = graph.op("Gather", [values_table, index], axis=0)
    summed = graph.op("ReduceSum", [gathered, graph.constant(np.array([1]))], keepdims=0)
    return graph.op("Div", [summed, graph.constant(np.array(float(count)), "trees")], "average")


def _boosting(graph: _Graph, model: Any, matrix: str) -> str:
    """Raw scores: the baseline plus every tree's leaf value, per class for a multiclass model."""
    loss = getattr(model, "loss", "squared_error")
    if loss not in ("squared_error", "log_loss"):
        raise UnsupportedPipelineError(f"HistGradientBoosting loss {loss!r} is not compiled")
    trees: list[tuple[Any, ...]] = []
    targets: list[int] = []
    for iteration in model._predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise UnsupportedPipelineError("native categorical splits are not compiled")
            leaf = nodes["is_leaf"].astype(bool)
            left = np.where(leaf, -1, nodes["left"].astype(np.int64))
            right = np.where(leaf, -1, nodes["right"].astype(np.int64))
            values = nodes["value"].astype(np.float64)
            goes_left = nodes["missing_go_to_left"]
            trees.append(
                (left, right, nodes["feature_idx"], nodes["num_threshold"], values, goes_left)
            )
            targets.append(k)
    per_iteration = int(model.n_trees_per_iteration_)
    summed = _tree_ensemble(graph, matrix, trees, targets, per_iteration, average=False)
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(1, -1)
    return graph.op("Add", [summed, graph.constant(baseline, "baseline")], "raw")


def _tree_ensemble(
    graph: _Graph,
    matrix: str,
    trees: list[tuple[Any, ...]],
    targets: list[int],
    n_targets: int,
    average: bool,
    float32: bool = False,
) -> str:
    """Trees as one ONNX-ML TreeEnsemble, each adding its leaf's value to its target:
    `x <= split` goes to the true (left) child, a NaN to the side the tree sends missing
    values (left where the tree never saw one)."""
    modes: list[int] = []
    features: list[int] = []
    splits: list[float] = []
    missing: list[int] = []
    true_ids: list[int] = []
    true_leaf: list[int] = []
    false_ids: list[int] = []
    false_leaf: list[int] = []
    leaf_targets: list[int] = []
    leaf_weights: list[float] = []
    roots: list[int] = []
    for (left, right, feature, threshold, values, goes_left), target in zip(
        trees, targets, strict=True
    ):
        left = np.asarray(left)
        is_leaf = left == -1
        internal = np.flatnonzero(~is_leaf).tolist()
        leaves = np.flatnonzero(is_leaf).tolist()
        node_at = {n: len(modes) + i for i, n in enumerate(internal)}
        leaf_at = {n: len(leaf_targets) + i for i, n in enumerate(leaves)}
        leaf_targets.extend([target] * len(leaves))
        leaf_weights.extend(float(values[n]) for n in leaves)
        if not internal:  # a tree that is one leaf: a split whose both sides are that leaf
            roots.append(len(modes))
            modes.append(0)
            features.append(0)
            splits.append(0.0)
            missing.append(1)
            true_ids.append(leaf_at[0])
            false_ids.append(leaf_at[0])
            true_leaf.append(1)
            false_leaf.append(1)
            continue
        roots.append(node_at[0])
        for n in internal:
            modes.append(0)  # BRANCH_LEQ
            features.append(int(feature[n]))
            splits.append(_float32_at_most(threshold[n]) if float32 else float(threshold[n]))
            missing.append(int(goes_left[n]) if goes_left is not None else 1)
            for child, ids, flags in (
                (int(left[n]), true_ids, true_leaf),
                (int(right[n]), false_ids, false_leaf),
            ):
                is_a_leaf = child in leaf_at
                ids.append(leaf_at[child] if is_a_leaf else node_at[child])
                flags.append(int(is_a_leaf))
    number_type = np.float32 if float32 else np.float64
    return graph.op(
        "TreeEnsemble",
        [matrix],
        "trees",
        n_targets=n_targets,
        aggregate_function=0 if average else 1,
        post_transform=0,
        tree_roots=roots,
        nodes_modes=numpy_helper.from_array(np.array(modes, dtype=np.uint8)),
        nodes_featureids=features,
        nodes_splits=numpy_helper.from_array(np.array(splits, dtype=number_type)),
        nodes_missing_value_tracks_true=missing,
        nodes_truenodeids=true_ids,
        nodes_trueleafs=true_leaf,
        nodes_falsenodeids=false_ids,
        nodes_falseleafs=false_leaf,
        leaf_targetids=leaf_targets,
        leaf_weights=numpy_helper.from_array(np.array(leaf_weights, dtype=number_type)),
    )


def _float32_at_most(threshold: float) -> float:
    """The largest float32 not above `threshold`: for every float32 x, x <= it exactly when
    x <= threshold (the comparison scikit-learn's trees make)."""
    single = np.float32(threshold)
    if float(single) > threshold:
        single = np.nextafter(single, np.float32(-np.inf))
    return float(single)
