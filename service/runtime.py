"""What the app holds once a model is verified: predictor, validator, key, metrics, docs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.datastructures import Headers

from modelstore import LoadedModel
from service import tracing
from service.dispatch import Dispatcher
from service.drift import DriftMonitor
from service.errors import UnauthorizedError
from service.features import FeatureRule, FeatureSpec
from service.keys import KeyRing
from service.metrics import Metrics
from service.payloads import PayloadLog
from service.protocols.v2_model import TensorModel
from service.runtimes import make_predictor
from service.runtimes.base import Predictor, Table, check_finite
from service.server.connections import requests_in_flight
from service.settings import Settings
from service.spec import InstancesValidator


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    loaded: LoadedModel
    predictor: Predictor
    spec: FeatureSpec  # the version's feature rules, shared by every route
    validator: InstancesValidator
    metrics: Metrics
    keys: KeyRing
    model_ref: dict[str, Any]
    metadata_json: bytes
    dispatcher: Dispatcher
    predictions_counter: Any  # the labelled child of metrics.predictions, looked up once
    tensors: TensorModel  # the model as KServe v1 and the Open Inference Protocol see it
    tensor_metadata_json: bytes
    # (rule, its unknown_categories counter) per string feature; empty unless
    # UNKNOWN_CATEGORIES=accept
    unknown_counters: list[tuple[FeatureRule, Any]]
    # None when DRIFT_WINDOW=0 or the version predates training profiles
    drift: DriftMonitor | None
    payloads: PayloadLog | None  # None unless PAYLOAD_LOG is set

    @classmethod
    def build(cls, settings: Settings, loaded: LoadedModel, metrics: Metrics) -> Runtime:
        meta = loaded.metadata
        predictor = make_predictor(loaded)
        platform = "onnxruntime_onnx" if predictor.runtime == "onnx" else "sklearn"
        spec = FeatureSpec(meta, accept_unknown=settings.unknown_categories == "accept")
        tensors = TensorModel(spec, settings.max_batch_size, platform)
        # Only when unknown categories are accepted is there anything to count.
        unknown = [
            (rule, metrics.unknown_categories.labels(rule.name))
            for rule in spec.rules
            if rule.accept_unknown
        ]
        return cls(
            settings=settings,
            loaded=loaded,
            predictor=predictor,
            spec=spec,
            validator=InstancesValidator(spec, settings.max_batch_size),
            metrics=metrics,
            keys=KeyRing(settings.api_keys(), settings.api_key_file),
            model_ref={"name": meta.name, "version": meta.version},
            # /model: the metadata as stored, plus the runtime this server runs it with.
            metadata_json=orjson.dumps(
                {**meta.model_dump(mode="json"), "runtime": predictor.runtime}
            ),
            predictions_counter=metrics.predictions.labels(meta.name, meta.version),
            tensors=tensors,
            unknown_counters=unknown,
            drift=DriftMonitor(meta, settings.drift_window, metrics, settings.drift_rows_per_second)
            if settings.drift_window and meta.profile is not None
            else None,
            tensor_metadata_json=orjson.dumps(tensors.metadata_response()),
            payloads=PayloadLog(
                settings.payload_log,
                settings.payload_log_sample,
                settings.payload_log_queue,
                settings.payload_log_file_bytes,
                settings.payload_log_file_count,
                predictor,
                {"name": meta.name, "version": meta.version},
                metrics,
            )
            if settings.payload_log
            else None,
            dispatcher=Dispatcher(
                predictor,
                max_rows_per_call=max(settings.max_batch_size, 256),
                max_queue=settings.max_queue,
                in_flight=requests_in_flight,
            ),
        )

    async def run(self, table: Table) -> np.ndarray[Any, Any]:
        """Every protocol's way to the model: dispatched, timed, checked and counted the same.

        Raises NonFinitePredictionError (rows of this table) when inputs overflow the model.
        """
        # Typed before it is queued: requests that share a call join in one concatenation, and
        # the model and drift monitoring read the numbers block.
        table = table.typed(self.predictor.kinds)
        if tracing.enabled():
            ref = self.model_ref
            tracing.annotate(
                model__name=ref["name"],
                model__version=str(ref["version"]),
                model__runtime=self.predictor.runtime,
                model__rows=table.rows,
            )
        started = time.perf_counter()
        with tracing.span("predict"):
            output = await self.dispatcher.predict(table)
        self.metrics.model_seconds.observe(time.perf_counter() - started)
        check_finite(output)
        self.predictions_counter.inc(table.rows)
        if self.payloads is not None:
            self.payloads.record(table, output)
        for rule, counter in self.unknown_counters:
            unseen = rule.count_unseen(table.column(rule.name))
            if unseen:
                counter.inc(unseen)
        if self.drift is not None:
            self.drift.observe(table)
        return output

    def authorize(self, headers: Headers) -> None:
        """Accept `Authorization: Bearer <key>` or `X-API-Key: <key>`: any configured key.

        Every key a request offers must be right: a wrong Bearer beside a right X-API-Key (or the
        other way round, or a second X-API-Key) is refused, so which header a proxy or client
        adds never matters. An
        empty header (some proxies add one) counts as not offered.
        """
        if not self.keys.required:
            return
        offered = []
        # Every value of each header counts: a proxy may add one, a client another.
        for api_key in headers.getlist("x-api-key"):
            if api_key.strip():
                offered.append(api_key.strip())
        for authorization in headers.getlist("authorization"):
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                offered.append(credential.strip())
        if not offered:
            raise UnauthorizedError(
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'"
            )
        # Starlette decodes header bytes as Latin-1: encoding back gives exactly what was sent.
        if not all(self.keys.accepts(key.encode("latin-1")) for key in offered):
            raise UnauthorizedError("invalid API key")
