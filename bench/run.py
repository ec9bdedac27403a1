"""`make bench`: the service against a bare baseline on the same artifact, driven by wrk.

Every figure comes from one run on this machine, and the targets are ratios within that run,
so a noisy shared machine moves both sides together. Bounded: about two minutes in all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DURATION = os.environ.get("BENCH_SECONDS", "5")
SCENARIOS = [
    # name, instances per request, connections, wrk threads (one: the machine has two cores,
    # and a second load thread would take CPU from the server it measures)
    ("1 instance, concurrency 1", 1, 1, 1),
    ("1 instance, concurrency 32", 1, 32, 1),
    ("100 instances, concurrency 4", 100, 4, 1),
]


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk from Debian ...", file=sys.stderr)
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(
        [*prefix, "apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL
    )
    return shutil.which("wrk") or sys.exit("wrk could not be installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{url} never answered")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def parse_wrk(output: str) -> dict[str, float]:
    def millis(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        sys.exit(f"wrk saw {errors.group(1)} failed responses:\n{output}")
    return {"rps": rps, "p50": millis(percentiles["50"]), "p99": millis(percentiles["99"])}


def drive(wrk: str, url: str, body: Path, connections: int, threads: int) -> dict[str, float]:
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{DURATION}s",
        "--latency",
        "-s",
        str(ROOT / "bench" / "post.lua"),
        url,
    ]
    env = {**os.environ, "BENCH_BODY": str(body)}
    warm = [*command[:3], "-d1s", *command[4:]]
    subprocess.run(warm, env=env, check=True, capture_output=True, timeout=60)
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=120)
    return parse_wrk(done.stdout)


def measure(
    wrk: str, urls: dict[str, str], body: Path, connections: int, threads: int
) -> dict[str, dict[str, float]]:
    """Both servers in A-B-B-A order, so drift on a shared machine hits both alike."""
    runs: dict[str, list[dict[str, float]]] = {"service": [], "baseline": []}
    for kind in ("service", "baseline", "baseline", "service"):
        runs[kind].append(drive(wrk, f"{urls[kind]}/predict", body, connections, threads))
    return {
        kind: {key: statistics.mean(r[key] for r in rs) for key in ("rps", "p50", "p99")}
        for kind, rs in runs.items()
    }


def start(
    kind: str, model_dir: Path, version_dir: Path, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if kind == "service":
        env |= {
            "MODEL_DIR": str(model_dir),
            "PORT": str(port),
            "LOG_FORMAT": "json",
            "WORKERS": "1",
        }
        command = [sys.executable, "-m", "service"]
    else:
        env["BASELINE_MODEL_PATH"] = str(version_dir)
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.baseline:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def floor(version_dir: Path, example: dict[str, Any]) -> dict[int, float]:
    """In-process predict_proba time: what no server can beat."""
    import math

    import joblib
    import numpy as np

    model = joblib.load(version_dir / "model.joblib")
    names = list(example)
    row = [math.nan if example[n] is None else example[n] for n in names]
    times = {}
    for rows in (1, 100):
        X = np.array([row] * rows, dtype=object)
        model.predict_proba(X)
        samples = []
        for _ in range(200):
            started = time.perf_counter()
            model.predict_proba(X)
            samples.append(time.perf_counter() - started)
        times[rows] = statistics.median(samples) * 1000
    return times


def main() -> int:
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    models = work / "models"
    subprocess.run(
        [sys.executable, "-m", "training", "--models-dir", str(models)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    version_dir = models / "penguins" / "1"
    example = json.loads((version_dir / "metadata.json").read_text())["example"]
    bodies = {}
    for size in (1, 100):
        bodies[size] = work / f"body-{size}.json"
        bodies[size].write_text(json.dumps({"instances": [example] * size}))
    in_process = floor(version_dir, example)

    procs: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}
    try:
        for kind in ("service", "baseline"):
            port = free_port()
            procs[kind] = start(kind, models, version_dir, port, work / f"{kind}.log")
            urls[kind] = f"http://127.0.0.1:{port}"
        wait_ready(f"{urls['service']}/health/ready", procs["service"])
        wait_ready(f"{urls['baseline']}/", procs["baseline"])
        results = {
            name: measure(wrk, urls, bodies[size], conns, threads)
            for name, size, conns, threads in SCENARIOS
        }
        rss = rss_mb(procs["service"].pid)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    print(report(results, in_process, rss))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(
    results: dict[str, dict[str, dict[str, float]]], in_process: dict[int, float], rss: float
) -> str:
    one, many, batch = (results[s[0]] for s in SCENARIOS)
    rows = [
        ("c=1 p50 latency (ms)", one["service"]["p50"], one["baseline"]["p50"], "<= 1.25x"),
        ("c=1 p99 latency (ms)", one["service"]["p99"], one["baseline"]["p99"], ""),
        ("c=32 requests/s", many["service"]["rps"], many["baseline"]["rps"], ">= 0.70x"),
        ("c=32 p99 latency (ms)", many["service"]["p99"], many["baseline"]["p99"], ""),
        (
            "batch 100, c=4 rows/s",
            batch["service"]["rps"] * 100,
            batch["baseline"]["rps"] * 100,
            ">= 0.70x",
        ),
    ]
    lines = [
        f"{'scenario':<28}{'service':>12}{'baseline':>12}{'ratio':>8}  target",
        "-" * 70,
    ]
    for label, service, baseline, target in rows:
        lines.append(
            f"{label:<28}{service:>12.2f}{baseline:>12.2f}{service / baseline:>7.2f}x  {target}"
        )
    lines += [
        "-" * 70,
        f"in-process predict_proba: 1 row {in_process[1]:.3f} ms,"
        f" 100 rows {in_process[100]:.3f} ms",
        f"service resident memory, one worker: {rss:.0f} MB",
        f"wrk: 2 runs of {DURATION}s per server and scenario (A-B-B-A, means), after a 1s warm-up",
        "both servers: one uvicorn worker, uvloop, httptools, on 127.0.0.1",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
