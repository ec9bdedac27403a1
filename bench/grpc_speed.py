"""gRPC against REST v2 on the same server process (the default model, one worker): NVIDIA's
tritonclient, `tritonclient.grpc` against `tritonclient.http` with binary tensors (the fastest
REST layout), for 1 and 100 rows. Latency: one client, calls one after another (p50). Throughput:
four client processes, each calling one after another, for a few seconds. Part of `make bench`.

wrk cannot speak gRPC, so both protocols are driven by the same client library, whose own cost
is in both figures alike.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.run import free_port, start, train_default, wait_ready

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
CLIENTS = 4
DATATYPES = {"island": "BYTES", "sex": "BYTES", "year": "INT64"}


def _columns(example: dict[str, Any], rows: int) -> dict[str, np.ndarray[Any, Any]]:
    columns = {}
    for name, value in example.items():
        if DATATYPES.get(name) == "BYTES":
            columns[name] = np.array([value or ""] * rows, dtype=object)
        elif name == "year":
            columns[name] = np.array([value] * rows, dtype=np.int64)
        else:
            columns[name] = np.array([np.nan if value is None else value] * rows)
    return columns


def _call(protocol: str, address: str, example: dict[str, Any], rows: int) -> Any:
    """A function making one inference call, with its client and inputs built once."""
    if protocol == "grpc":
        import tritonclient.grpc as triton
    else:
        import tritonclient.http as triton  # type: ignore[no-redef]
    client = triton.InferenceServerClient(address)
    inputs = []
    for name, values in _columns(example, rows).items():
        tensor = triton.InferInput(name, [rows], DATATYPES.get(name, "FP64"))
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)

    def call() -> None:
        client.infer("penguins", inputs)

    return call


def _latency(protocol: str, address: str, example: dict[str, Any], rows: int) -> float:
    call = _call(protocol, address, example, rows)
    for _ in range(50):
        call()
    samples = []
    for _ in range(400):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def _count(args: tuple[str, str, dict[str, Any], int, float]) -> int:
    protocol, address, example, rows, until = args
    call = _call(protocol, address, example, rows)
    done = 0
    while time.time() < until:
        call()
        done += 1
    return done


def _throughput(protocol: str, address: str, example: dict[str, Any], rows: int) -> float:
    context = multiprocessing.get_context("spawn")
    with context.Pool(CLIENTS) as pool:
        pool.map(_count, [(protocol, address, example, rows, time.time() + 1.0)] * CLIENTS)
        until = time.time() + SECONDS + 2.0  # every client's set-up inside the window's lead
        counts = pool.map(_count, [(protocol, address, example, rows, until)] * CLIENTS)
    return sum(counts) / (SECONDS + 2.0)


def bench_grpc(work: Path) -> str:
    models = work / "grpc-models"
    meta = train_default(models)
    example = meta["example"]
    version_dir = models / "penguins" / "1"
    port, grpc_port = free_port(), free_port()
    proc = start(
        "onnx", models, version_dir, port, work / "grpc-service.log", {"GRPC_PORT": str(grpc_port)}
    )
    addresses = {"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{port}"}
    lines = [
        "gRPC against REST v2 (tritonclient, binary tensors on REST), the default model",
        f"{'scenario':<34}{'REST v2':>11}{'gRPC':>11}{'gRPC/REST':>11}",
    ]
    try:
        wait_ready(f"http://127.0.0.1:{port}/health/ready", proc)
        for rows in (1, 100):
            p50 = {p: _latency(p, a, example, rows) for p, a in addresses.items()}
            rate = {p: _throughput(p, a, example, rows) for p, a in addresses.items()}
            lines.append(
                f"{f'{rows} row(s), one client, p50 (ms)':<34}{p50['http']:>11.3f}"
                f"{p50['grpc']:>11.3f}{p50['grpc'] / p50['http']:>11.2f}"
            )
            lines.append(
                f"{f'{rows} row(s), {CLIENTS} clients, requests/s':<34}{rate['http']:>11,.0f}"
                f"{rate['grpc']:>11,.0f}{rate['grpc'] / rate['http']:>11.2f}"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines.append(f"(load {os.getloadavg()[0]:.2f}; clients on the same {os.cpu_count()} cores)")
    return "\n".join(lines)


if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    print(bench_grpc(folder))
    sys.exit(0)
