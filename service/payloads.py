"""Payload logging: each prediction's inputs and outputs as CloudEvents, for audit and retraining,
as KServe's logger and SageMaker's data capture keep them. Off unless `PAYLOAD_LOG` is set.

The request path only samples and appends a reference to a bounded queue (its table and answer,
which nothing changes afterwards); a thread of its own turns them into events and sends them.
So a slow or dead sink never blocks or fails a prediction: when the queue is full, or the sink
refuses or does not answer, the events are dropped and counted in `payload_events_total`
(outcome `dropped_queue_full`, `dropped_sink_error`), and a failing sink is left alone for a
while (1 s, doubling to 30 s) before the next try.

Two events per prediction, `id` the request id plus `.request` or `.response`: type
`org.sklearn-serve.inference.request` whose data is `{"instances": [...]}` (the rows as the
model received them, after validation, one object per row) and
`org.sklearn-serve.inference.response` whose data is `{"predictions": [...]}` (`/predict`'s
answer for those rows). Extension attributes: `requestid`, `modelname`, `modelversion`,
`endpoint` (the path, or the gRPC method).

- `PAYLOAD_LOG=http://collector:8080/events`: batches of up to 100 events (or what a second
  gathers) POSTed as `application/cloudevents-batch+json`.
- `PAYLOAD_LOG=file:/var/log/payloads/events.jsonl`: one structured event per line, rotated at
  `PAYLOAD_LOG_FILE_BYTES` with `PAYLOAD_LOG_FILE_COUNT` old files kept (each worker process
  writes its own file, its pid in the name, when WORKERS > 1).
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import os
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.metrics import Metrics, multiprocess_dir
from service.runtimes.base import Predictor, Table

log = logging.getLogger("service.payloads")

# (request id, endpoint) of the request being served: set by the HTTP middleware and the gRPC
# calls, read where the prediction is made.
CURRENT_REQUEST: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "current_request", default=("", "")
)

BATCH_EVENTS = 100
BATCH_SECONDS = 1.0
SEND_TIMEOUT = 2.0
BACKOFF_FIRST, BACKOFF_MOST = 1.0, 30.0
REQUEST_TYPE = "org.sklearn-serve.inference.request"
RESPONSE_TYPE = "org.sklearn-serve.inference.response"


class PayloadLog:
    """Built once per process when PAYLOAD_LOG is set; `record` is all the request path calls."""

    def __init__(
        self,
        target: str,
        sample: float,
        queue_size: int,
        file_bytes: int,
        file_count: int,
        predictor: Predictor,
        model: dict[str, Any],
        metrics: Metrics,
    ) -> None:
        self.sample = sample
        self.predictor = predictor
        self.model = model
        self.source = f"sklearn-serve/{model['name']}/{model['version']}"
        self._types = {f.name: f.type for f in predictor.metadata.features}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        counter = metrics.payload_events
        self._sent = counter.labels("sent")
        self._full = counter.labels("dropped_queue_full")
        self._failed = counter.labels("dropped_sink_error")
        self._send = self._sender(target, file_bytes, file_count)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="payload-log", daemon=True)
        self._thread.start()

    # -- the request path ---------------------------------------------------------------------

    def record(self, table: Table, output: np.ndarray[Any, Any]) -> None:
        if self.sample < 1.0 and random.random() >= self.sample:  # noqa: S311 (sampling)
            return
        request_id, endpoint = CURRENT_REQUEST.get()
        try:
            self._queue.put_nowait((request_id, endpoint, time.time(), table, output))
        except queue.Full:
            self._full.inc(2)  # its request and response events

    # -- the thread ---------------------------------------------------------------------------

    def close(self, seconds: float = 2.0) -> None:
        """Send what is queued, for at most `seconds`, then stop."""
        self._closing.set()
        self._thread.join(timeout=seconds)

    def _run(self) -> None:
        backoff_until, backoff = 0.0, BACKOFF_FIRST
        while True:
            batch, stop = self._gather()
            if batch:
                if time.monotonic() < backoff_until:
                    self._failed.inc(len(batch))
                else:
                    try:
                        self._send(batch)
                    except Exception as exc:  # the sink's fault is never the request's
                        self._failed.inc(len(batch))
                        log.warning(
                            "payload sink failed; events dropped",
                            extra={"events": len(batch), "error": str(exc)[:200]},
                        )
                        backoff_until = time.monotonic() + backoff
                        backoff = min(backoff * 2, BACKOFF_MOST)
                    else:
                        self._sent.inc(len(batch))
                        backoff = BACKOFF_FIRST
            if stop:
                return

    def _gather(self) -> tuple[list[dict[str, Any]], bool]:
        """Events of what is queued: at most BATCH_EVENTS, or what BATCH_SECONDS brings."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + BATCH_SECONDS
        while len(events) < BATCH_EVENTS:
            closing = self._closing.is_set()
            wait = 0.0 if closing else max(deadline - time.monotonic(), 0.001)
            try:
                item = self._queue.get(timeout=wait) if wait else self._queue.get_nowait()
            except queue.Empty:
                return events, closing
            events += self._events(*item)
        return events, False

    def _events(
        self, request_id: str, endpoint: str, at: float, table: Table, output: np.ndarray[Any, Any]
    ) -> list[dict[str, Any]]:
        columns = table.typed(self.predictor.kinds).columns
        names = list(columns)
        values = [_plain(columns[n], self._types[n]) for n in names]
        instances = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
        common = {
            "specversion": "1.0",
            "source": self.source,
            "time": datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds"),
            "datacontenttype": "application/json",
            "modelname": self.model["name"],
            "modelversion": str(self.model["version"]),
            "endpoint": endpoint,
            "requestid": request_id,
        }
        request = {"instances": instances}
        response = {"predictions": self.predictor.shape(output)}
        return [
            {**common, "id": f"{request_id}.request", "type": REQUEST_TYPE, "data": request},
            {**common, "id": f"{request_id}.response", "type": RESPONSE_TYPE, "data": response},
        ]

    def _sender(
        self, target: str, file_bytes: int, file_count: int
    ) -> Callable[[list[dict[str, Any]]], None]:
        if target.startswith(("http://", "https://")):
            return lambda events: _post(target, events)
        path = Path(target.removeprefix("file:"))
        if multiprocess_dir():  # several workers: a file each
            path = path.with_name(f"{path.stem}.{os.getpid()}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=file_bytes, backupCount=file_count, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))

        def write(events: list[dict[str, Any]]) -> None:
            for event in events:
                record = logging.makeLogRecord({"msg": orjson.dumps(event).decode()})
                handler.emit(record)
            handler.flush()

        return write


def _plain(column: np.ndarray[Any, Any], kind: str) -> list[Any]:
    """A typed column's values as a client sends them: integers and booleans as themselves
    (the arrays hold them as floats), a gap (NaN or None) as null."""
    if column.dtype == object:
        return list(column)
    cast = _CASTS.get(kind, float)
    return [None if v != v else cast(v) for v in column.tolist()]


_CASTS: dict[str, Callable[[float], Any]] = {"integer": int, "boolean": bool}


def _post(url: str, events: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(  # noqa: S310 (the operator's own http(s) URL)
        url,
        data=orjson.dumps(events),
        headers={"Content-Type": "application/cloudevents-batch+json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=SEND_TIMEOUT) as answer:  # noqa: S310
        if not 200 <= answer.status < 300:
            raise urllib.error.HTTPError(url, answer.status, "not accepted", answer.headers, None)
