"""Every README snippet that calls the API runs as written against a live server."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.test_process import running

pytestmark = pytest.mark.slow
README = ROOT / "README.md"
# The documented address, with or without a scheme (tritonclient takes host:port).
DOCUMENTED_ADDRESS = "127.0.0.1:8000"


def snippets(language: str) -> list[str]:
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)
    # Only blocks that call the API: never `make run` or `docker compose up`.
    calls = "curl " if language == "bash" else "import"
    return [block for block in blocks if DOCUMENTED_ADDRESS in block and calls in block]


@pytest.fixture(scope="module")
def server(penguins_store: Path) -> Iterator[str]:
    with running(penguins_store) as url:
        yield url


def test_the_readme_has_api_snippets_in_both_languages() -> None:
    assert len(snippets("python")) >= 3  # urllib, pandas, tritonclient
    assert len(snippets("bash")) >= 1


@pytest.mark.parametrize("index", range(len(snippets("python"))))
def test_python_snippet_runs(server: str, index: int) -> None:
    code = snippets("python")[index].replace(DOCUMENTED_ADDRESS, server.removeprefix("http://"))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    labels = result.stdout.split()
    assert labels
    assert set(labels) <= {"Adelie", "Chinstrap", "Gentoo"}


@pytest.mark.parametrize("index", range(len(snippets("bash"))))
def test_curl_snippet_runs(server: str, index: int) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    code = snippets("bash")[index].replace(DOCUMENTED_ADDRESS, server.removeprefix("http://"))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"predictions"' in result.stdout
