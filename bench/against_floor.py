"""The service against the lean ONNX floor (bench/floor.py), on the breast cancer table that
scikit-learn ships (30 numeric features): a linear model and a 100-tree forest trained by the
project's CLI, one server process each, the defaults on (drift monitoring, the connection
guard, request logs). Each figure is reported as a ratio to the floor's: three A-B pairs in
A-B-B-A-A-B order, each pair's ratio taken, and the median of the three reported (beside the
median of each server's figures), so neither a slow drift of the shared machine nor one dip in
a single run decides a ratio.
At 100 rows a request a worker is offered more than the 50,000 rows a second drift monitoring
counts whole (DRIFT_ROWS_PER_SECOND), so there it counts a sample; a third server counting
every row (DRIFT_ROWS_PER_SECOND=0) gives those scenarios' ratios that way too, for reference.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.run import ROOT, drive, free_port, start, wait_ready

# scenario, rows per request, connections, route, body kind, figure, target ratio
SCENARIOS = [
    ("/predict, 100 rows, c=4", 100, 4, "/predict", "instances", "rows/s", 0.7),
    ("v2 one tensor JSON, 100 rows, c=4", 100, 4, "/v2/models/bc/infer", "v2json", "rows/s", 0.85),
    ("v2 binary, 100 rows, c=4", 100, 4, "/v2/models/bc/infer", "v2bin", "rows/s", 0.9),
    ("/predict, 1 row, c=1", 1, 1, "/predict", "instances", "p50", 1.3),
    ("/predict, 1 row, c=32", 1, 32, "/predict", "instances", "requests/s", 1.2),
]


def _table(folder: Path) -> Path:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = np.where(frame.pop("target") == 1, "benign", "malignant")
    path = folder / "breast_cancer.csv"
    frame.to_csv(path, index=False)
    return path


def _bodies(meta: dict[str, Any], rows: int, folder: Path) -> dict[str, tuple[Path, int | None]]:
    example = meta["example"]
    names = [f["name"] for f in meta["features"]]
    matrix = [[example[n] for n in names] for _ in range(rows)]
    made: dict[str, tuple[Path, int | None]] = {}
    made["instances"] = (folder / f"instances-{rows}.json", None)
    made["instances"][0].write_text(json.dumps({"instances": [example] * rows}))
    tensor = {"name": "x", "datatype": "FP64", "shape": [rows, len(names)]}
    made["v2json"] = (folder / f"v2json-{rows}.json", None)
    made["v2json"][0].write_text(json.dumps({"inputs": [{**tensor, "data": matrix}]}))
    raw = np.asarray(matrix, dtype="<f8").tobytes()
    header = json.dumps(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()
    made["v2bin"] = (folder / f"v2bin-{rows}.bin", len(header))
    made["v2bin"][0].write_bytes(header + raw)
    return made


def _floor(version_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "uvicorn", "bench.floor:app", "--host", "127.0.0.1",
        "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "FLOOR_VERSION_DIR": str(version_dir)}
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def bench_against_floor(wrk: str, work: Path) -> str:
    folder = work / "floor"
    folder.mkdir(parents=True, exist_ok=True)
    data = _table(folder)
    lines = [
        "against the lean ONNX floor (raw ASGI + orjson + one ONNX Runtime session, no "
        "validation): breast cancer, 30 numeric features",
        f"{'scenario':<46}{'service':>11}{'floor':>11}{'ratio':>8}  target",
    ]
    for family in ("linear", "random_forest"):
        models = folder / family
        config = folder / f"{family}.toml"
        config.write_text(
            f'[data]\npath = "{data}"\ntarget = "diagnosis"\n'
            f'[model]\nestimator = "{family}"\nrequire_onnx = true\n'
        )
        subprocess.run(
            [sys.executable, "-m", "training", "--models-dir", str(models), "--name", "bc",
             "--config", str(config), "--no-report"],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        version_dir = models / "bc" / "1"
        meta = json.loads((version_dir / "metadata.json").read_text())
        bodies = {n: _bodies(meta, n, folder) for n in (1, 100)}
        service_port, floor_port, every_port = free_port(), free_port(), free_port()
        procs = {
            "service": start("onnx", models, version_dir, service_port, folder / "service.log"),
            "floor": _floor(version_dir, floor_port, folder / "floor.log"),
            "every row": start(
                "onnx", models, version_dir, every_port, folder / "every-row.log",
                {"DRIFT_ROWS_PER_SECOND": "0"},
            ),
        }  # fmt: skip
        urls = {
            "service": f"http://127.0.0.1:{service_port}",
            "floor": f"http://127.0.0.1:{floor_port}",
            "every row": f"http://127.0.0.1:{every_port}",
        }
        try:
            wait_ready(f"{urls['service']}/health/ready", procs["service"])
            wait_ready(f"{urls['every row']}/health/ready", procs["every row"])
            _wait_floor(urls["floor"], bodies[1]["instances"][0], procs["floor"], wrk)
            lines.append(f"{family}:")
            for name, rows, conns, route, kind, figure, target in SCENARIOS:
                body, header_length = bodies[rows][kind]
                mine, floor, ratio = _against_floor(
                    wrk, urls, "service", route, body, conns, header_length, rows, figure
                )
                met = ratio <= target if figure == "p50" else ratio >= target
                sign = "<=" if figure == "p50" else ">="
                unit = "ms" if figure == "p50" else figure
                lines.append(
                    f"  {name + f' ({unit})':<44}{mine:>11,.2f}{floor:>11,.2f}"
                    f"{ratio:>8.2f}  {sign} {target}: {'met' if met else 'MISSED'}"
                )
                if rows == 100:
                    mine, floor, ratio = _against_floor(
                        wrk, urls, "every row", route, body, conns, header_length, rows, figure,
                        pairs=2,
                    )  # fmt: skip
                    lines.append(
                        f"  {'  the same, drift counting every row':<44}{mine:>11,.2f}"
                        f"{floor:>11,.2f}{ratio:>8.2f}  (for reference)"
                    )
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    lines.append(
        f"(load average {os.getloadavg()[0]:.2f}; wrk: one thread, 1s warm-up each; the ratio "
        "is the median of three alternating pairs' ratios, of two for reference lines)"
    )
    return "\n".join(lines)


def _against_floor(
    wrk: str,
    urls: dict[str, str],
    server: str,
    route: str,
    body: Path,
    conns: int,
    header_length: int | None,
    rows: int,
    figure: str,
    pairs: int = 3,
) -> tuple[float, float, float]:
    """The server's figure, the floor's, and their ratio: `pairs` A-B pairs run in alternating
    order (A-B, B-A, A-B), the median of each side's figures and of the pairs' ratios."""

    def run(one: str) -> float:
        r = drive(wrk, f"{urls[one]}{route}", body, conns, 1, header_length)
        return r["p50"] if figure == "p50" else r["rps"] * (rows if figure == "rows/s" else 1)

    mine: list[float] = []
    floor: list[float] = []
    for pair in range(pairs):
        if pair % 2:
            floor.append(run("floor"))
            mine.append(run(server))
        else:
            mine.append(run(server))
            floor.append(run("floor"))
    ratios = [m / f for m, f in zip(mine, floor, strict=True)]
    return statistics.median(mine), statistics.median(floor), statistics.median(ratios)


def _wait_floor(url: str, body: Path, proc: subprocess.Popen[bytes], wrk: str) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the floor server exited early with {proc.returncode}")
        try:
            request = urllib.request.Request(
                f"{url}/predict", body.read_bytes(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{url} never answered")


if __name__ == "__main__":
    import tempfile

    from bench.run import ensure_wrk

    print(bench_against_floor(ensure_wrk(), Path(tempfile.mkdtemp(prefix="bench-floor-"))))
