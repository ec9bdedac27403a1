"""Fresh clone to first answer: `git clone`, then `make run`, timed until `/predict` answers.

What a newcomer waits for: the virtualenv, the serving and training packages (the training lock,
nothing of development), training the default model, start-up. pip's download cache is turned
off (PIP_NO_CACHE_DIR), as on a machine that never installed these packages; the figure then
includes the downloads. `python bench/first_run.py` prints it alone; `bench/run.py` includes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 75
GIVE_UP_SECONDS = 900


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    """Whether the server answers a prediction for the example its metadata shows."""
    try:
        with urllib.request.urlopen(f"{url}/model", timeout=2) as response:
            example = json.loads(response.read())["example"]
        body = json.dumps({"instances": [example]}).encode()
        request = urllib.request.Request(
            f"{url}/predict", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def first_run(cache: bool = False) -> tuple[float, float]:
    """Seconds to the first prediction, and to the end of `make run`'s install."""
    work = Path(tempfile.mkdtemp(prefix="bench-first-run-"))
    clone = work / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    port = _free_port()
    env = {**os.environ, "PORT": str(port)}
    env.pop("VIRTUAL_ENV", None)
    if not cache:
        env["PIP_NO_CACHE_DIR"] = "1"
    started = time.monotonic()
    log = (work / "make-run.log").open("wb")
    make = subprocess.Popen(
        ["make", "run"],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    installed = 0.0
    try:
        while time.monotonic() - started < GIVE_UP_SECONDS:
            if not installed and (clone / ".venv" / ".installed-run").exists():
                installed = time.monotonic() - started
            if make.poll() is not None:
                raise SystemExit(f"make run stopped (exit {make.returncode}): see {log.name}")
            if _answers(f"http://127.0.0.1:{port}"):
                return time.monotonic() - started, installed
            time.sleep(0.25)
        raise SystemExit(f"no answer after {GIVE_UP_SECONDS}s: see {log.name}")
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)
            make.wait(timeout=30)
        log.close()
        if make.returncode in (0, -signal.SIGTERM, 2):
            shutil.rmtree(work, ignore_errors=True)


def bench_first_run() -> str:
    answer, installed = first_run()
    verdict = "met" if answer <= TARGET_SECONDS else "MISSED"
    load = os.getloadavg()[0]
    return "\n".join(
        [
            "fresh clone to first answer: git clone, make run (no pip cache), POST /predict",
            f"{'install done (s)':<26}{installed:>11.1f}",
            f"{'first answer (s)':<26}{answer:>11.1f}  target <= {TARGET_SECONDS}: {verdict}"
            f" (load {load:.2f})",
        ]
    )


if __name__ == "__main__":
    print(bench_first_run())
