"""OpenTelemetry tracing: off unless the standard `OTEL_*` variables ask for it.

On when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, or
`OTEL_TRACES_EXPORTER` is `otlp` or `console` (and `OTEL_SDK_DISABLED` is not `true`); the
exporter reads the rest itself (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default,
or `grpc` where its package is installed; headers, timeout, `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, the batch processor's `OTEL_BSP_*`). It
needs the OpenTelemetry SDK, which the `-grpc` image and `make install` have; where it is
missing, asking for tracing is one warning and no tracing.

Each request is one server span (HTTP: `POST /predict`, the route template; gRPC: the method),
its parent taken from a W3C `traceparent` (HTTP header or gRPC metadata), with child spans for
decoding and checking the request, the model call (with the rows of the call it shared) and
encoding the answer. Attributes name the model, its version and runtime, the rows and the
outcome; never a value from a payload. Off, every helper here is one check of a module global.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("service.tracing")

_tracer: Any = None  # the SDK's tracer once tracing is on; None means off
_provider: Any = None
_NOTHING = contextlib.nullcontext()
# Bound once tracing starts, so the request path imports nothing.
_current_span: Any = None
_propagator: Any = None
_SERVER: Any = None


def requested() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return exporter in ("otlp", "console") or any(os.environ.get(v) for v in endpoints)


def start(service_version: str) -> bool:
    """Turn tracing on if the environment asks for it; True when it is on."""
    global _tracer, _provider
    if _tracer is not None or not requested():
        return _tracer is not None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_* asks for tracing, but the OpenTelemetry SDK is not installed here")
        return False
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "sklearn-serve"),
         "service.version": service_version}
    )  # fmt: skip
    provider = TracerProvider(resource=resource)
    exporter = _exporter()
    if exporter is None:
        return False
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _bind()
    _provider = provider
    _tracer = provider.get_tracer("sklearn-serve")
    log.info("tracing on", extra={"exporter": type(exporter).__name__})
    return True


def _bind() -> None:
    global _current_span, _propagator, _SERVER
    from opentelemetry.trace import SpanKind, get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _current_span = get_current_span
    _propagator = TraceContextTextMapPropagator()
    _SERVER = SpanKind.SERVER


def _exporter() -> Any:
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    ).strip()
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
    except ImportError:
        log.warning(
            "OTEL_* asks for an OTLP exporter that is not installed here",
            extra={"protocol": protocol or "http/protobuf"},
        )
        return None
    return OTLPSpanExporter()


def stop() -> None:
    """Export what is buffered, then turn tracing off."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def enabled() -> bool:
    return _tracer is not None


def server_span(name: str, carrier: Iterable[tuple[str, str]]) -> Any:
    """The span of one request, its parent read from `traceparent` in `carrier` (header or
    metadata pairs, names in lower case)."""
    if _tracer is None:
        return _NOTHING
    headers = {k: v for k, v in carrier if k in ("traceparent", "tracestate")}
    parent = _propagator.extract(headers) if headers else None
    return _tracer.start_as_current_span(name, context=parent, kind=_SERVER)


def span(name: str) -> Any:
    """A child of the current span; nothing at all when tracing is off or the request's trace
    is not sampled (its children would not be recorded either)."""
    if _tracer is None or not _current_span().is_recording():
        return _NOTHING
    return _tracer.start_as_current_span(name)


def rename(name: str) -> None:
    """Name the current span once its route is known."""
    if _tracer is None:
        return
    current = _current_span()
    if current.is_recording():
        current.update_name(name)


def annotate(**attributes: Any) -> None:
    """Attributes for the current span (dots in names written as `__`)."""
    if _tracer is None:
        return
    current = _current_span()
    if not current.is_recording():
        return
    for key, value in attributes.items():
        current.set_attribute(key.replace("__", "."), value)
