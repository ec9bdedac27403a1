"""`make bench`: the service against a bare baseline on the same artifact, driven by wrk.

Both runtimes of the service (ONNX Runtime and scikit-learn) and a lean scikit-learn baseline
serve the same version, for the default model and for the random-forest config. Every figure
comes from one run on this machine, and the targets are ratios within that run, so a noisy
shared machine moves all sides together. Bounded: about three minutes in all.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the in-process floor uses the service's own predictors
DURATION = os.environ.get("BENCH_SECONDS", "3")
RUNTIMES = ("onnx", "sklearn")
SERVERS = (*RUNTIMES, "baseline")
# The default model, and the forest config: (label, config).
MODELS = [("penguins", None), ("forest", "training/configs/random_forest.toml")]
# c=1 latency: how many times lower with ONNX than with scikit-learn the issue asks for.
TARGETS = {"penguins": 4.0, "forest": 10.0}
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
    """Every server, in A-B-C-C-B-A order, so drift on a shared machine hits all alike."""
    kinds = list(urls)
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for kind in [*kinds, *reversed(kinds)]:
        runs[kind].append(drive(wrk, f"{urls[kind]}/predict", body, connections, threads))
    return {
        kind: {key: statistics.mean(r[key] for r in rs) for key in ("rps", "p50", "p99")}
        for kind, rs in runs.items()
    }


def start(
    kind: str, model_dir: Path, version_dir: Path, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if kind in RUNTIMES:
        env |= {
            "MODEL_DIR": str(model_dir),
            "PORT": str(port),
            "LOG_FORMAT": "json",
            "WORKERS": "1",
            "RUNTIME": kind,
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


def floor(version_dir: Path) -> dict[str, dict[int, float]]:
    """In-process model time for each runtime: what no server can beat."""
    from modelstore import ModelStore
    from service.predict_onnx import OnnxPredictor
    from service.predict_sklearn import SklearnPredictor

    store = ModelStore(version_dir.parent.parent)
    loaded = store.load(store.resolve(version_dir.parent.name, version_dir.name))
    predictors = {
        "onnx": OnnxPredictor(loaded.metadata, loaded.graph or b""),
        "sklearn": SklearnPredictor(loaded.metadata, loaded.estimator),
    }
    times: dict[str, dict[int, float]] = {}
    for kind, predictor in predictors.items():
        times[kind] = {}
        for rows in (1, 100):
            batch = [dict(loaded.metadata.example)] * rows
            samples = []
            for _ in range(200):
                started = time.perf_counter()
                predictor.predict(batch)
                samples.append(time.perf_counter() - started)
            times[kind][rows] = statistics.median(samples) * 1000
    return times


def bench_model(wrk: str, work: Path, label: str, config: str | None) -> str:
    models = work / label / "models"
    command = [sys.executable, "-m", "training", "--models-dir", str(models), "--name", label]
    subprocess.run(
        [*command, *(["--config", config] if config else [])],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    version_dir = models / label / "1"
    meta = json.loads((version_dir / "metadata.json").read_text())
    if not (meta.get("onnx") or {}).get("verified"):
        sys.exit(f"{label}: the version has no verified graph: {meta.get('onnx')}")
    bodies = {}
    for size in (1, 100):
        bodies[size] = work / label / f"body-{size}.json"
        bodies[size].write_text(json.dumps({"instances": [meta["example"]] * size}))
    in_process = floor(version_dir)

    procs: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}
    try:
        for kind in SERVERS:
            port = free_port()
            procs[kind] = start(kind, models, version_dir, port, work / f"{label}-{kind}.log")
            urls[kind] = f"http://127.0.0.1:{port}"
        for kind in SERVERS:
            probe = "/health/ready" if kind in RUNTIMES else "/"
            wait_ready(f"{urls[kind]}{probe}", procs[kind])
        results = {
            name: measure(wrk, urls, bodies[size], conns, threads)
            for name, size, conns, threads in SCENARIOS
        }
        rss = {kind: rss_mb(procs[kind].pid) for kind in RUNTIMES}
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return report(f"{label} ({meta['estimator']})", results, in_process, rss, TARGETS[label])


def main() -> int:
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    tables = [bench_model(wrk, work, label, config) for label, config in MODELS]
    print("\n\n".join(tables))
    print(
        f"\nwrk: 2 runs of {DURATION}s per server and scenario (A-B-C-C-B-A, means), after a 1s"
        " warm-up; every server one uvicorn worker, uvloop, httptools, on 127.0.0.1"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(
    title: str,
    results: dict[str, dict[str, dict[str, float]]],
    in_process: dict[str, dict[int, float]],
    rss: dict[str, float],
    latency_target: float,
) -> str:
    """Targets are the ONNX runtime against the scikit-learn runtime, in the same run."""
    one, many, batch = (results[s[0]] for s in SCENARIOS)

    def row(
        label: str,
        scenario: dict[str, dict[str, float]],
        key: str,
        scale: float = 1.0,
        target: str = "",
        lower_is_better: bool = False,
    ) -> tuple[str, list[float], str, str]:
        values = [scenario[kind][key] * scale for kind in SERVERS]
        onnx, sklearn = values[0], values[1]
        gain = sklearn / onnx if lower_is_better else onnx / sklearn
        return label, values, f"{gain:.1f}x", target

    rows = [
        row(
            "c=1 p50 latency (ms)",
            one,
            "p50",
            target=f">= {latency_target:g}x",
            lower_is_better=True,
        ),
        row("c=1 p99 latency (ms)", one, "p99", lower_is_better=True),
        row("c=32 requests/s", many, "rps", target=">= 2x"),
        row("c=32 p99 latency (ms)", many, "p99", lower_is_better=True),
        row("batch 100, c=4 rows/s", batch, "rps", scale=100, target=">= 2x"),
        row("batch 100, c=4 p50 (ms)", batch, "p50", lower_is_better=True),
        row("batch 100, c=4 p99 (ms)", batch, "p99", lower_is_better=True),
    ]
    lines = [
        title,
        f"{'scenario':<26}{'onnx':>11}{'sklearn':>11}{'baseline':>11}{'gain':>8}  target",
        "-" * 76,
    ]
    for label, values, gain, target in rows:
        cells = "".join(f"{v:>11.2f}" for v in values)
        lines.append(f"{label:<26}{cells}{gain:>8}  {target}")
    lines += [
        "-" * 76,
        "gain: the ONNX runtime over the scikit-learn runtime (baseline: the lean scikit-learn"
        " server in bench/baseline.py)",
        *(
            f"in-process predict, {kind}: 1 row {t[1]:.3f} ms, 100 rows {t[100]:.3f} ms"
            for kind, t in in_process.items()
        ),
        "resident memory, one worker: "
        + ", ".join(f"{kind} {mb:.0f} MB" for kind, mb in rss.items()),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
