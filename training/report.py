"""`report.html`: one self-contained page per version for the data scientist who trained it.

The plots and permutation importance are computed before the store's lock (they take a second
or two); only the page itself, which shows the version number the store assigns, is written
under it. The page links nothing outside itself: styles inline, plots as embedded PNG.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelstore import Feature, Metadata
from modelstore.metadata import FeatureProfile
from modelstore.profile import is_missing

# Permutation importance and scatter plots use at most this many held-out rows.
MAX_ROWS = 5000
# Permutation importance predicts REPEATS times per feature: on a sample, so that the report
# takes seconds on a large table (2,000 rows rank features as well as 50,000 do).
IMPORTANCE_ROWS = 2000
REPEATS = 5
# A feature whose importance is this many times the next one's, and a large drop in itself, is
# flagged: it is more often the target in disguise or the row order than a great predictor.
LEAK_RATIO = 10.0
LEAK_DROP = 0.2
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;
color:#1d2430}h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #d7dce3}
table{border-collapse:collapse;margin:.6rem 0}td,th{padding:.25rem .7rem;text-align:left;
border-bottom:1px solid #e6e9ee;vertical-align:top}th{background:#f3f5f8}
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#5d6775}
figure{display:inline-block;margin:.5rem 1rem .5rem 0}figcaption{color:#5d6775}
code{background:#f3f5f8;padding:0 .25rem}.bad{color:#a32020}
"""


@dataclass
class Figure:
    caption: str
    png: bytes | None = None
    problem: str | None = None  # why it could not be drawn


@dataclass
class Report:
    """Everything but the version's metadata, which is known only when it is published."""

    figures: list[Figure]
    importance: list[tuple[str, float, float]]  # feature, mean drop, standard deviation
    importance_metric: str
    importance_problem: str | None
    summary: list[tuple[str, str, str, str]]  # feature, type, missing share, values
    notes: list[str] = field(default_factory=list)

    def render(self, metadata: Metadata) -> bytes:
        return _page(self, metadata).encode()


def prepare(
    pipeline: Any,
    features: list[Feature],
    X: np.ndarray[Any, Any],
    X_test: np.ndarray[Any, Any],
    y_test: np.ndarray[Any, Any],
    task: str,
    seed: int,
    profile: list[FeatureProfile],
) -> Report:
    import matplotlib

    matplotlib.use("Agg")  # no display; set before pyplot is imported
    rng = np.random.default_rng(seed)
    if len(y_test) > MAX_ROWS:
        keep = np.sort(rng.choice(len(y_test), MAX_ROWS, replace=False))
        X_test, y_test = X_test[keep], y_test[keep]
    if task == "classification":
        figures = [
            _figure(
                "Confusion matrix (held-out rows)", lambda: _confusion(pipeline, X_test, y_test)
            ),
            _figure(
                "ROC curves, one class against the rest", lambda: _roc(pipeline, X_test, y_test)
            ),
        ]
    else:
        predicted = np.asarray(pipeline.predict(X_test), dtype=np.float64)
        actual = np.asarray(y_test, dtype=np.float64)
        figures = [
            _figure(
                "Predicted against actual (held-out rows)", lambda: _scatter(actual, predicted)
            ),
            _figure("Residuals against predicted", lambda: _residuals(actual, predicted)),
        ]
    metric = "accuracy" if task == "classification" else "r2"
    importance: list[tuple[str, float, float]] = []
    problem = None
    try:
        sample = slice(None, IMPORTANCE_ROWS)  # X_test is in random order already (sampled)
        importance = _importance(pipeline, features, X_test[sample], y_test[sample], metric, seed)
        figures.append(
            _figure("Permutation importance (held-out rows)", lambda: _bars(importance, metric))
        )
    except Exception as exc:  # a report must never cost the user their trained model
        problem = _one_line(exc)
    return Report(
        figures=figures,
        importance=importance,
        importance_metric=metric,
        importance_problem=problem,
        summary=[
            _summarize(f, X[:, i], p)
            for i, (f, p) in enumerate(zip(features, profile, strict=True))
        ],
    )


def _figure(caption: str, draw: Callable[[], Any]) -> Figure:
    import matplotlib.pyplot as plt

    try:
        fig = draw()
    except Exception as exc:  # e.g. a class absent from the held-out rows has no ROC curve
        plt.close("all")
        return Figure(caption, problem=_one_line(exc))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return Figure(caption, png=buffer.getvalue())


def _axes(width: float = 5.2, height: float = 4.2) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _confusion(pipeline: Any, X: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> Any:
    from sklearn.metrics import confusion_matrix

    classes = list(pipeline.classes_)
    matrix = confusion_matrix(y, pipeline.predict(X), labels=classes)
    fig, ax = _axes()
    ax.imshow(matrix, cmap="Blues")
    names = [str(c) for c in classes]
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 4 else 0, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    limit = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > limit else "black"
        ax.text(col, row, str(count), ha="center", va="center", color=colour)
    return fig


def _roc(pipeline: Any, X: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> Any:
    from sklearn.metrics import auc, roc_curve

    if not hasattr(pipeline, "predict_proba"):
        raise ValueError("the estimator gives no probabilities")
    proba = pipeline.predict_proba(X)
    classes = list(pipeline.classes_)
    # Two classes: one curve, for the second class (the positive one scikit-learn reports).
    shown = classes[1:] if len(classes) == 2 else classes
    fig, ax = _axes()
    for label in shown:
        column = classes.index(label)
        positive = np.asarray(y == label, dtype=int)
        if positive.min() == positive.max():
            continue  # a class all or none of the held-out rows belong to has no curve
        fpr, tpr, _ = roc_curve(positive, proba[:, column])
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc(fpr, tpr):.3f})")
    if not ax.lines:
        raise ValueError("the held-out rows do not hold both sides of any class")
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def _scatter(actual: np.ndarray[Any, Any], predicted: np.ndarray[Any, Any]) -> Any:
    fig, ax = _axes()
    ax.scatter(actual, predicted, s=10, alpha=0.6)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="#999999", linestyle=":", linewidth=1)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    return fig


def _residuals(actual: np.ndarray[Any, Any], predicted: np.ndarray[Any, Any]) -> Any:
    fig, ax = _axes()
    ax.scatter(predicted, actual - predicted, s=10, alpha=0.6)
    ax.axhline(0, color="#999999", linestyle=":", linewidth=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual - predicted")
    return fig


def _importance(
    pipeline: Any,
    features: list[Feature],
    X: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    metric: str,
    seed: int,
) -> list[tuple[str, float, float]]:
    from sklearn.inspection import permutation_importance

    result = permutation_importance(
        pipeline, X, y, scoring=metric, n_repeats=REPEATS, random_state=seed
    )
    rows = [
        (f.name, float(mean), float(std))
        for f, mean, std in zip(
            features, result.importances_mean, result.importances_std, strict=True
        )
    ]
    return sorted(rows, key=lambda row: -row[1])


def _bars(importance: list[tuple[str, float, float]], metric: str) -> Any:
    shown = importance[:20][::-1]  # largest on top
    fig, ax = _axes(height=max(2.0, 0.35 * len(shown) + 1))
    ax.barh([name for name, _, _ in shown], [m for _, m, _ in shown], xerr=[s for _, _, s in shown])
    ax.set_xlabel(f"drop in {metric} when the feature is shuffled")
    return fig


def _summarize(
    feature: Feature, column: np.ndarray[Any, Any], profile: FeatureProfile
) -> tuple[str, str, str, str]:
    present = [v for v in column if not is_missing(v)]
    if not present:
        values = "no values"
    elif feature.type in ("number", "integer"):
        numbers = np.asarray(present, dtype=np.float64)
        values = (
            f"min {_number(numbers.min())}, median {_number(float(np.median(numbers)))}, "
            f"max {_number(numbers.max())}"
        )
    else:
        counts = Counter(present).most_common()
        top = ", ".join(f"{_text(v)} {n / len(present):.0%}" for v, n in counts[:5])
        more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
        values = f"{len(counts)} values: {top}{more}"
    return feature.name, feature.type, f"{profile.missing:.1%}", values


def _number(value: float) -> str:
    return f"{value:.6g}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# The page. Every value that came from the user's data or config is escaped.


def _page(report: Report, meta: Metadata) -> str:
    e = html.escape
    title = f"{meta.name} version {meta.version}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}: training report</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="muted">{e(meta.task)} of <code>{e(meta.target)}</code> with '
        f"{e(meta.estimator)}</p>",
        "<h2>Held-out metrics</h2>",
        _table(
            ["metric", "value"],
            [[e(k), _cell(f"{v:.4f}")] for k, v in meta.metrics.items()],
        ),
        f'<p class="muted">{meta.split.test_rows} held-out rows of {meta.data.rows}'
        f" ({meta.split.train_rows} trained on), split with seed {meta.seed}.</p>",
        "<h2>Plots</h2>",
        *(_figure_html(f) for f in report.figures),
        "<h2>Permutation importance</h2>",
        _importance_html(report),
        "<h2>Training data</h2>",
        _table(
            ["feature", "type", "missing", "values"],
            [[e(n), e(t), _cell(m), e(v)] for n, t, m, v in report.summary],
        ),
        _ignored(meta),
        "<h2>Compiled graph (ONNX)</h2>",
        _onnx_html(meta),
        "<h2>Version</h2>",
        _table(["", ""], [[e(k), e(v)] for k, v in _essentials(meta)]),
        "</body></html>",
        "",
    ]
    return "\n".join(parts)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header) if any(header) else ""
    body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows)
    return f"<table>{'<tr>' + head + '</tr>' if head else ''}{body}</table>"


class _Number(str):
    """A cell holding a number: right-aligned in tabular figures."""


def _cell(text: str) -> str:
    return _Number(html.escape(text))


def _td(content: str) -> str:
    if isinstance(content, _Number):
        return f'<td class="n">{content}</td>'
    return f"<td>{content}</td>"


def _figure_html(figure: Figure) -> str:
    caption = html.escape(figure.caption)
    if figure.png is None:
        return f'<p class="bad">{caption}: not drawn ({html.escape(figure.problem or "")})</p>'
    data = base64.b64encode(figure.png).decode()
    return (
        f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _importance_html(report: Report) -> str:
    if report.importance_problem:
        return f'<p class="bad">not computed: {html.escape(report.importance_problem)}</p>'
    rows = [
        [html.escape(name), _cell(f"{mean:.4f}"), _cell(f"{std:.4f}")]
        for name, mean, std in report.importance
    ]
    note = (
        f'<p class="muted">How much {report.importance_metric} drops on the held-out rows when one'
        f" feature's values are shuffled ({REPEATS} shuffles each, on at most"
        f" {IMPORTANCE_ROWS:,} rows).</p>"
    )
    return note + likely_leak(report.importance) + _table(["feature", "mean drop", "std"], rows)


def likely_leak(importance: list[tuple[str, float, float]]) -> str:
    """A warning when one feature dwarfs the others: check it is not the answer in disguise."""
    if len(importance) < 2:
        return ""
    (name, top, _), (_, second, _) = importance[0], importance[1]
    if top < LEAK_DROP or top < LEAK_RATIO * max(second, 1e-9):
        return ""
    return (
        f'<p class="bad">Likely leak: <code>{html.escape(name)}</code> matters more than '
        f"{LEAK_RATIO:g} times as much as any other feature. Check that it is not computed from "
        "the target, or a row number or date that follows the file's order; if it is, leave it "
        "out with [data] drop.</p>"
    )


def _ignored(meta: Metadata) -> str:
    if not meta.ignored_columns:
        return ""
    names = ", ".join(f"<code>{html.escape(c)}</code>" for c in meta.ignored_columns)
    return f'<p class="muted">Columns not used: {names}.</p>'


def _onnx_html(meta: Metadata) -> str:
    compiled = meta.onnx
    if compiled is None:
        return "<p>Not compiled.</p>"
    if not compiled.verified:
        return f'<p class="bad">No graph: {html.escape(compiled.reason or "")}</p>'
    deviation = "n/a" if compiled.max_deviation is None else f"{compiled.max_deviation:.3g}"
    rows = [
        ["file", html.escape(compiled.file or "")],
        ["sha256", f"<code>{compiled.sha256}</code>"],
        ["rows checked", f"{compiled.checked_rows} data + {compiled.synthetic_rows} probe rows"],
        ["precision", compiled.precision],
        [f"largest {compiled.deviation} deviation", deviation],
        ["tolerance", f"{compiled.tolerance:.3g}"],
    ]
    rows += [
        [f"{html.escape(kind)} rows", f"{count}: largest deviation {worst:.3g}, labels {same}"]
        for kind, count, worst, same in meta.onnx_checks
    ]
    if compiled.labels_identical is not None:
        rows.append(["same labels", "yes" if compiled.labels_identical else "no"])
    rows += [[html.escape(k), html.escape(v)] for k, v in compiled.tools.items()]
    return _table(["", ""], rows)


def _essentials(meta: Metadata) -> list[tuple[str, str]]:
    git = meta.git.commit or "unknown"
    if meta.git.dirty:
        git += " (uncommitted changes)"
    rows = [
        ("name", meta.name),
        ("version", str(meta.version)),
        ("data", f"{meta.data.source} ({meta.data.rows} rows)"),
        ("data sha256", meta.data.sha256),
        ("model file", f"{meta.artifact.file} ({meta.artifact.bytes} bytes)"),
        ("model sha256", meta.artifact.sha256),
        ("seed", str(meta.seed)),
        ("git commit", git),
        *((name, version) for name, version in meta.environment.items()),
        ("parameters", ", ".join(f"{k}={v}" for k, v in sorted(meta.params.items()))),
    ]
    if meta.classes is not None:
        rows.insert(2, ("classes", ", ".join(_text(c) for c in meta.classes)))
    return rows
