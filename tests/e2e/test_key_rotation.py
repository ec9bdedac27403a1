"""Key rotation: several keys in API_KEY_FILE, re-read on SIGHUP by a real server."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.e2e.test_process import free_port, start, stop, wait_ready

pytestmark = pytest.mark.slow


def status_with(url: str, key: str) -> int:
    return httpx2.get(f"{url}/model", headers={"X-API-Key": key}, timeout=5).status_code


def until(check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the server never got there"
        time.sleep(0.1)


def serve(store: Path, key_file: Path, workers: int) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = start(
        {
            "MODEL_DIR": str(store),
            "PORT": str(port),
            "API_KEY_FILE": str(key_file),
            "WORKERS": str(workers),
        }
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url)
    return proc, url


def test_a_key_file_may_hold_several_keys(penguins_store: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# rotated 2026-11\nold-key\n\n  new-key  \n")
    proc, url = serve(penguins_store, keys, workers=1)
    try:
        assert status_with(url, "old-key") == 200
        assert status_with(url, "new-key") == 200
        assert status_with(url, "# rotated 2026-11") == 401
        assert status_with(url, "other") == 401
    finally:
        stop(proc)


def test_sighup_rotates_keys_and_a_bad_file_keeps_the_old_ones(
    penguins_store: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("old-key\n")
    proc, url = serve(penguins_store, keys, workers=1)
    try:
        # 1. Add the new key beside the old one: both work, with no restart.
        keys.write_text("old-key\nnew-key\n")
        proc.send_signal(signal.SIGHUP)
        until(lambda: status_with(url, "new-key") == 200)
        assert status_with(url, "old-key") == 200
        # 2. A broken file (a key no header can carry) changes nothing.
        keys.write_text("new-kéy\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert status_with(url, "new-key") == 200
        assert status_with(url, "old-key") == 200
        # 3. Retire the old key.
        keys.write_text("new-key\n")
        proc.send_signal(signal.SIGHUP)
        until(lambda: status_with(url, "old-key") == 401)
        assert status_with(url, "new-key") == 200
        assert httpx2.get(f"{url}/health/ready", timeout=5).status_code == 200
    finally:
        code, logs = stop(proc)
    assert code == 0
    events = [line for line in logs if "api keys" in line["event"]]
    assert [e["event"] for e in events] == [
        "api keys reloaded",
        "api keys not reloaded",
        "api keys reloaded",
    ]
    assert events[0]["keys"] == 2
    assert "line 1" in events[1]["reason"]
    assert events[1]["keys_kept"] == 2
    assert "old-key" not in str(logs)  # keys are never logged
    assert "new-key" not in str(logs)


def test_with_several_workers_sighup_replaces_them_with_the_new_keys(
    penguins_store: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("old-key\n")
    proc, url = serve(penguins_store, keys, workers=2)
    answers: list[Any] = []
    try:
        keys.write_text("new-key\n")
        proc.send_signal(signal.SIGHUP)  # to uvicorn's supervisor: workers replaced one by one
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # During the swap two requests may meet an old and a new worker; each answer is
            # still a plain 200 or 401, never an error or a dropped connection.
            answers.append((status_with(url, "old-key"), status_with(url, "new-key")))
            if answers[-1] == (401, 200) and all(
                status_with(url, "old-key") == 401 for _ in range(10)
            ):
                break
            time.sleep(0.1)
        assert answers[-1] == (401, 200)
        assert {status for pair in answers for status in pair} <= {200, 401}
    finally:
        code, _ = stop(proc)
    assert code == 0
