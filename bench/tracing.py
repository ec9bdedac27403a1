"""Tracing off against on: the default model served by one process without OTEL_*, one
exporting every span (OTLP over HTTP) to a receiver in this process that answers at once, and
one sampling a tenth of the traces; wrk drives /predict with one row at 1 and 32 connections,
A-B-C-C-B-A. Part of `make bench`.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import statistics
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench.run import drive, ensure_wrk, free_port, start, train_default, wait_ready


class _Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def bench_tracing(wrk: str, work: Path) -> str:
    models = work / "tracing-models"
    meta = train_default(models)
    body = work / "tracing-body.json"
    body.write_text(json.dumps({"instances": [meta["example"]]}))
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    settings = {
        "off": {},
        "on": {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
        "10%": {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
    }
    version_dir = models / "penguins" / "1"
    procs, urls = {}, {}
    for mode, extra in settings.items():
        port = free_port()
        procs[mode] = start("onnx", models, version_dir, port, work / f"tracing-{mode}.log", extra)
        urls[mode] = f"http://127.0.0.1:{port}"
    lines = [
        "tracing off and on (every span exported over OTLP/HTTP), /predict with one row",
        f"{'scenario':<22}{'off':>10}{'on':>10}{'on/off':>8}{'10% sampled':>13}{'/off':>7}",
    ]
    try:
        for mode, proc in procs.items():
            wait_ready(f"{urls[mode]}/health/ready", proc)
        for connections, figure in ((1, "p50"), (32, "rps")):
            runs: dict[str, list[float]] = {mode: [] for mode in settings}
            for mode in ("off", "on", "10%", "10%", "on", "off"):
                runs[mode].append(drive(wrk, f"{urls[mode]}/predict", body, connections, 1)[figure])
            off, on, some = (statistics.mean(runs[m]) for m in ("off", "on", "10%"))
            label = "p50 (ms), c=1" if figure == "p50" else "requests/s, c=32"
            ratios = f"{on / off:>8.2f}{some:>13,.3f}{some / off:>7.2f}"
            lines.append(f"{label:<22}{off:>10,.3f}{on:>10,.3f}{ratios}")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        receiver.shutdown()
    lines.append(f"(load {os.getloadavg()[0]:.2f})")
    return "\n".join(lines)


if __name__ == "__main__":
    print(bench_tracing(ensure_wrk(), Path(tempfile.mkdtemp(prefix="bench-tracing-"))))
