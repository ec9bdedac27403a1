"""`make soak`: one worker under steady load for SOAK_MINUTES (10), reported minute by minute.

Not part of `make test`. It trains the default model into a temporary store, serves it with one
uvicorn worker through ONNX Runtime on 127.0.0.1, and drives /predict with wrk at concurrency 32
in back-to-back one-minute runs, reading the server's resident memory between them. It stops by
itself after the last minute. Targets: no errors, and resident memory at the end within 5% of
the start (read after a short warm-up, once the connections and caches exist).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import ROOT, ensure_wrk, free_port, rss_mb, train_default, wait_ready

MINUTES = int(os.environ.get("SOAK_MINUTES", "10"))
CONNECTIONS = int(os.environ.get("SOAK_CONNECTIONS", "32"))
WARM_UP_SECONDS = 15
MEMORY_TARGET = 0.05


def wrk_minute(wrk: str, url: str, body: Path, seconds: int) -> dict[str, float]:
    command = [wrk, "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    command += ["-s", str(ROOT / "bench" / "post.lua"), url]
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_HEADER_LENGTH": ""}
    out = subprocess.run(
        command, env=env, check=True, capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non_2xx[1]) if non_2xx else 0
    errors += sum(int(n) for n in sockets.groups()) if sockets else 0
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    return {
        "requests": requests,
        "errors": errors,
        "p50": _millis(latency["50"]),
        "p99": _millis(latency["99"]),
    }


def _millis(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> int:
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    models = work / "models"
    meta = train_default(models)
    body = work / "one.json"
    body.write_text(json.dumps({"instances": [meta["example"]]}))
    port = free_port()
    env = {**os.environ, "MODEL_DIR": str(models), "PORT": str(port), "LOG_FORMAT": "json"}
    env |= {"WORKERS": "1", "LOG_LEVEL": "warning"}
    with (work / "service.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        wait_ready(f"{url}/health/ready", proc)
        wrk_minute(wrk, f"{url}/predict", body, WARM_UP_SECONDS)
        start_rss = rss_mb(proc.pid)
        print(
            f"soak: {MINUTES} min at c={CONNECTIONS}, one worker (ONNX), penguins 1-row /predict;"
            f" resident memory after a {WARM_UP_SECONDS}s warm-up: {start_rss:.1f} MB",
            flush=True,
        )
        print(
            f"{'minute':>6}{'requests':>10}{'req/s':>8}{'errors':>8}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'RSS MB':>8}",
            flush=True,
        )
        for minute in range(1, MINUTES + 1):
            started = time.monotonic()
            result = wrk_minute(wrk, f"{url}/predict", body, 60)
            seconds = time.monotonic() - started
            rss = rss_mb(proc.pid)
            rows.append((result, rss))
            print(
                f"{minute:>6}{result['requests']:>10.0f}{result['requests'] / seconds:>8.0f}"
                f"{result['errors']:>8.0f}{result['p50']:>8.2f}{result['p99']:>8.2f}{rss:>8.1f}",
                flush=True,
            )
        assert proc.poll() is None, "the service died during the soak"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    total = sum(r["requests"] for r, _ in rows)
    errors = sum(r["errors"] for r, _ in rows)
    end_rss = rows[-1][1]
    growth = (end_rss - start_rss) / start_rss
    print(
        f"total {total:,} requests, {errors} errors; resident memory {start_rss:.1f} ->"
        f" {end_rss:.1f} MB ({growth:+.1%}); targets: 0 errors, growth under"
        f" {MEMORY_TARGET:.0%}: {'met' if errors == 0 and growth < MEMORY_TARGET else 'NOT met'}"
    )
    return 0 if errors == 0 and growth < MEMORY_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
