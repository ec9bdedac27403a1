"""Scoring on Spark against the one-machine engine: 1M and 5M penguin rows (CSV in, CSV out)
with `python -m scoring`, then `--engine spark` on `local[1]` and `local[2]`, and the time
Spark takes to start. `make bench-spark` (not in `make bench`: it takes minutes).

Rows/s are over each run's whole wall time; "scoring only" leaves out Spark's start, which a
long-lived cluster pays once, not per job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import ROOT, train_default

SIZES = [int(n) for n in os.environ.get("BENCH_SPARK_ROWS", "1000000,5000000").split(",")]
_START = (
    "import os, sys, time\n"
    "os.environ.setdefault('PYSPARK_PYTHON', sys.executable)\n"
    "started = time.perf_counter()\n"
    "from pyspark.sql import SparkSession\n"
    "spark = SparkSession.builder.master(sys.argv[1]).getOrCreate()\n"
    "spark.range(1).count()\n"
    "print(time.perf_counter() - started)\n"
    "spark.stop()\n"
)


def _table(folder: Path, rows: int) -> Path:
    with (ROOT / "training" / "data" / "penguins.csv").open() as handle:
        header, *lines = handle.read().splitlines()
    path = folder / f"penguins-{rows}.csv"
    with path.open("w") as out:
        out.write(header + "\n")
        for start in range(0, rows, len(lines)):
            out.write("\n".join(lines[: min(len(lines), rows - start)]) + "\n")
    return path


def _timed(command: list[str]) -> float:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:6])}... failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def _spark_start(master: str) -> float:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    done = subprocess.run(
        [sys.executable, "-c", _START, master], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"Spark did not start:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def bench_spark(work: Path) -> str:
    models = work / "models"
    train_default(models)
    starts = {master: _spark_start(master) for master in ("local[1]", "local[2]")}
    lines = [
        "batch scoring on Spark: penguin rows, CSV in and out, the default model",
        f"{'rows':>10}  {'engine':<28}{'wall (s)':>10}{'rows/s':>12}{'scoring only':>15}",
    ]
    for rows in SIZES:
        data = _table(work, rows)
        base = [sys.executable, "-m", "scoring", "--models-dir", str(models), "--data", str(data)]
        pinned = ["taskset", "-c", "0"] if shutil.which("taskset") else []
        runs = [
            ("python -m scoring, one core", pinned, [*base, "--out", str(work / "local.csv")], None)
        ]
        for master in ("local[1]", "local[2]"):
            spark = ["--out", str(work / "spark.csv"), "--engine", "spark", "--master", master]
            runs.append((f"Spark {master}", [], [*base, *spark], master))
        for label, prefix, command, master in runs:
            seconds = _timed([*prefix, *command])
            net = seconds - starts[master] if master else seconds
            lines.append(
                f"{rows:>10,}  {label:<28}{seconds:>10.1f}{rows / seconds:>12,.0f}"
                f"{rows / net:>15,.0f}"
            )
        data.unlink()
    lines.append(
        f"Spark's start (session up, one trivial job): local[1] {starts['local[1]']:.1f}s, "
        f"local[2] {starts['local[2]']:.1f}s (load {os.getloadavg()[0]:.2f}, "
        f"{os.cpu_count()} cores)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    try:
        print(bench_spark(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
