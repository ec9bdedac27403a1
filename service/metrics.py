"""Prometheus metrics; a registry per app so tests can build many apps in one process.

With several workers (WORKERS > 1) prometheus-client's multiprocess mode is used: each worker
writes to files under PROMETHEUS_MULTIPROC_DIR and any worker's /metrics sums them all.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.grpc_requests = Counter(
            "grpc_server_handled",
            "gRPC calls by method and status code",
            ["grpc_method", "grpc_code"],
            registry=r,
        )
        self.grpc_latency = Histogram(
            "grpc_server_handling_seconds",
            "gRPC call latency by method and status code",
            ["grpc_method", "grpc_code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.payload_events = Counter(
            "payload_events",
            "payload log events (PAYLOAD_LOG) by outcome: sent, dropped_queue_full, "
            "dropped_sink_error",
            ["outcome"],
            registry=r,
        )
        self.predictions = Counter(
            "predictions", "instances predicted", ["name", "version"], registry=r
        )
        self.model_seconds = Histogram(
            "model_predict_duration_seconds",
            "time from a validated request to its predictions, waiting for the model included",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.unknown_categories = Counter(
            "unknown_categories",
            "values of a string feature not seen in training, accepted (UNKNOWN_CATEGORIES=accept)",
            ["feature"],
            registry=r,
        )
        # Drift (service/drift.py): label sets are the model's features by at most 12 bins.
        self.feature_values = Counter(
            "model_feature_values",
            "live values of a feature by training-profile bin (a number bin by its index from the "
            "lowest, edges in the keyed metadata; a category bin by its name)",
            ["feature", "bin"],
            registry=r,
        )
        self.feature_missing = Counter(
            "model_feature_missing",
            "live rows with no value for a feature",
            ["feature"],
            registry=r,
        )
        self.feature_psi = Gauge(
            "model_feature_psi",
            "population stability index of the drift window against the training profile "
            "(NaN until the window holds 100 values; the largest across workers)",
            ["feature"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_window_rows = Gauge(
            "model_drift_window_rows",
            "rows in the drift window (summed across workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.drift_sampled_share = Gauge(
            "model_drift_sampled_share",
            "share of requests drift monitoring counts: 1 while a worker is offered at most "
            "DRIFT_ROWS_PER_SECOND rows a second, less past it (the smallest across workers)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.model_info = Gauge(
            "model_info",
            "the loaded model version and the runtime serving it (always 1)",
            ["name", "version", "runtime"],
            registry=r,
            multiprocess_mode="liveall",
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # Label sets are few (routes are templates), so each pair of children is looked up once.
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(*key))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.grpc_requests.labels(method, code).inc()
        self.grpc_latency.labels(method, code).observe(seconds)

    def exposition(self) -> bytes:
        if multiprocess_dir():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
