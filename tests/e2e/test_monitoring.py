"""The shipped Grafana dashboard and Prometheus rules ask only for series the service exports.

A real server (two workers, so Prometheus' multiprocess mode is what gets checked) takes
traffic that produces every kind of series: good rows, gaps, unknown categories, a 422. Then
every metric name in every expression is looked up among the samples of its /metrics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx2
import promql_parser
import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.test_process import running

RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "sklearn-serve.json"
# Series Prometheus writes itself for every scrape target, not found on any /metrics.
PROMETHEUS_OWN = {"up"}
# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"job", "instance"}
# Grafana's variables, as the values it substitutes before sending a query.
_GRAFANA = {"$__rate_interval": "1m", "$__range": "6h", "$__interval": "15s"}


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each series selector in a PromQL expression: its metric name and the labels it matches.

    The expression is parsed by a real PromQL parser, so a syntax error fails here too.
    """
    for variable, value in _GRAFANA.items():
        expr = expr.replace(variable, value)
    found: list[tuple[str, set[str]]] = []

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            labels = {m.name for m in node.matchers.matchers}
            found.append((node.name or "", labels))
        elif isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, promql_parser.BinaryExpr):
            walk(node.lhs)
            walk(node.rhs)
        elif isinstance(node, promql_parser.Call):
            for argument in node.args:
                walk(argument)
        elif isinstance(
            node,
            promql_parser.AggregateExpr
            | promql_parser.ParenExpr
            | promql_parser.UnaryExpr
            | promql_parser.SubqueryExpr,
        ):
            walk(node.expr)

    walk(promql_parser.parse(expr))
    return found


def test_the_selector_walk_sees_what_it_should() -> None:
    expr = (
        'sum by (job, le) (rate(http_request_duration_seconds_bucket{route!~"/x|y"}[5m])) '
        "/ ignoring(feature) group_left sum(rate(predictions_total[$__rate_interval])) > 0.2 "
        'or absent(model_info) and up{job="a"} == 0'
    )
    assert selectors(expr) == [
        ("http_request_duration_seconds_bucket", {"route"}),
        ("predictions_total", set()),
        ("model_info", set()),
        ("up", {"job"}),
    ]


def rule_expressions() -> list[tuple[str, str]]:
    document = yaml.safe_load(RULES.read_text())
    found = []
    for group in document["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), rule
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"]
            found.append((rule["alert"], rule["expr"]))
    return found


def dashboard_expressions() -> list[tuple[str, str]]:
    document = json.loads(DASHBOARD.read_text())
    found = []
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    for variable in document["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            series = re.fullmatch(r"label_values\((.+), *\w+\)", query["query"])
            assert series is not None, query
            found.append((f"${variable['name']}", series[1]))
    return found


def test_the_rules_cover_what_the_issue_promised() -> None:
    rules = dict(rule_expressions())
    document = yaml.safe_load(RULES.read_text())
    durations = {r["alert"]: r["for"] for g in document["groups"] for r in g["rules"]}
    assert "model_feature_psi" in rules["ModelInputDrift"]
    assert "> 0.2" in rules["ModelInputDrift"]
    assert durations["ModelInputDrift"] == "15m"
    assert 'status=~"5.."' in rules["ModelServiceErrors"]
    assert "histogram_quantile(0.99" in rules["ModelServiceSlow"]
    assert "up{" in rules["ModelServiceDown"]


def live_series(url: str, example: dict[str, Any]) -> dict[str, set[str]]:
    """Every sample name on a live /metrics with the label names it carries."""
    unseen = {**example, "island": "Anvers", "sex": None}
    for _ in range(40):  # each worker gets some of every kind
        response = httpx2.post(f"{url}/predict", json={"instances": [example, unseen]}, timeout=10)
        assert response.status_code == 200, response.text
    assert httpx2.post(f"{url}/predict", json={"instances": [{}]}, timeout=10).status_code == 422
    text = httpx2.get(f"{url}/metrics", timeout=10).text
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            labels = set(re.findall(r'(\w+)="', rest)) if rest else set()
            series.setdefault(name.split(" ")[0], set()).update(labels)
    return series


@pytest.fixture(scope="module")
def exported(penguins_store: Path, penguin_example: dict[str, Any]) -> dict[str, set[str]]:
    with running(penguins_store, WORKERS="2", UNKNOWN_CATEGORIES="accept") as url:
        return live_series(url, penguin_example)


@pytest.mark.parametrize(
    ("where", "expr"), [*rule_expressions(), *dashboard_expressions()], ids=lambda v: str(v)[:60]
)
def test_every_expression_uses_exported_names(
    exported: dict[str, set[str]], where: str, expr: str
) -> None:
    found = selectors(expr)
    assert found, f"{where}: no series selected by {expr!r}"
    for name, labels in found:
        if name in PROMETHEUS_OWN:
            continue
        assert name in exported, f"{where} uses {name}, which /metrics does not export"
        unknown = labels - exported[name] - TARGET_LABELS
        assert not unknown, f"{where} matches {name} on {sorted(unknown)}, labels it never has"


def test_the_drift_series_are_there_in_multiprocess_mode(exported: dict[str, set[str]]) -> None:
    assert {
        "model_feature_psi",
        "model_feature_values_total",
        "model_feature_missing_total",
        "model_drift_window_rows",
        "unknown_categories_total",
    } <= set(exported)
