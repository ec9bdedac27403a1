"""Schemathesis over the whole OpenAPI of a real server: native, KServe v1 and OIP v2 routes.

Its checks, on every operation: no 5xx; no schema-valid request rejected; every schema-invalid
request rejected; every status, content type, header and body as documented. The exceptions
are written, with their reasons, in `schemathesis.toml` beside this file. Each run is bounded
by a fixed seed and a number of examples per operation.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_process import free_port, start, stop, wait_ready

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).with_name("schemathesis.toml")


def fuzz(store: Path, tmp_path: Path, examples: int, key: str | None = None, **env: str) -> None:
    config = CONFIG
    if key is not None:
        # Given as the schema's own security schemes, so the fuzzer also checks that a request
        # without the key, or with a wrong one, is refused.
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            CONFIG.read_text()
            + f'\n[auth.openapi.apiKey]\napi_key = "{key}"\n'
            + f'\n[auth.openapi.bearer]\nbearer = "{key}"\n'
        )
        env["API_KEY"] = key
    port = free_port()
    proc = start({"MODEL_DIR": str(store), "PORT": str(port), "LOG_LEVEL": "warning", **env})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "--config-file",
                str(config),
                "--no-color",
                "run",
                f"{url}/openapi.json",
                "--max-examples",
                str(examples),
            ],
            cwd=tmp_path,  # its caches stay out of the checkout
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
            capture_output=True,
            text=True,
            timeout=600,
        )
        summary = result.stdout[-6000:]
        assert result.returncode == 0, summary
        assert "unique failures" not in result.stdout, summary
        # Nothing the fuzzer sent made the server log an unhandled error.
        assert proc.poll() is None
    finally:
        code, lines = stop(proc)
    assert code == 0
    assert not [line for line in lines if line.get("level") == "error"], lines[-5:]


def test_the_default_model(penguins_store: Path, tmp_path: Path) -> None:
    fuzz(penguins_store, tmp_path, examples=40)


def test_booleans_integers_and_gaps_through_scikit_learn(mixed_store: Path, tmp_path: Path) -> None:
    fuzz(mixed_store, tmp_path, examples=20, RUNTIME="sklearn")


def test_a_regressor_behind_a_key_accepting_unknown_categories(
    regression_store: Path, tmp_path: Path
) -> None:
    # Any text is then schema-valid for a string feature, and must be answered.
    fuzz(regression_store, tmp_path, examples=15, key="fuzz-key", UNKNOWN_CATEGORIES="accept")


def test_an_all_numeric_model_with_its_single_tensor_layout(
    numeric_store: Path, tmp_path: Path
) -> None:
    fuzz(numeric_store, tmp_path, examples=20)
