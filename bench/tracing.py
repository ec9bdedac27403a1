"""Tracing off against on: the default model served by one process without OTEL_* and one
exporting every span (OTLP over HTTP) to a receiver in this process that answers at once;
wrk drives /predict with one row at 1 and 32 connections, A-B-B-A. Part of `make bench`.
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
    settings = {"off": {}, "on": {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}}
    version_dir = models / "penguins" / "1"
    procs, urls = {}, {}
    for mode, extra in settings.items():
        port = free_port()
        procs[mode] = start("onnx", models, version_dir, port, work / f"tracing-{mode}.log", extra)
        urls[mode] = f"http://127.0.0.1:{port}"
    lines = [
        "tracing off and on (every span exported over OTLP/HTTP), /predict with one row",
        f"{'scenario':<32}{'off':>11}{'on':>11}{'on/off':>9}",
    ]
    try:
        for mode, proc in procs.items():
            wait_ready(f"{urls[mode]}/health/ready", proc)
        for connections, figure in ((1, "p50"), (32, "rps")):
            runs: dict[str, list[float]] = {"off": [], "on": []}
            for mode in ("off", "on", "on", "off"):
                runs[mode].append(drive(wrk, f"{urls[mode]}/predict", body, connections, 1)[figure])
            off, on = statistics.mean(runs["off"]), statistics.mean(runs["on"])
            label = "p50 (ms), c=1" if figure == "p50" else "requests/s, c=32"
            lines.append(f"{label:<32}{off:>11,.3f}{on:>11,.3f}{on / off:>9.2f}")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        receiver.shutdown()
    lines.append(f"(load {os.getloadavg()[0]:.2f})")
    return "\n".join(lines)


if __name__ == "__main__":
    print(bench_tracing(ensure_wrk(), Path(tempfile.mkdtemp(prefix="bench-tracing-"))))
