"""The docs page in a real browser with no internet, and the security headers on real answers.

Chromium (Debian's package) loads /docs from a real server; host names resolve to nothing, so
anything fetched from outside would fail. The page must render the predict operation with the
model's own features, under the Content-Security-Policy every response carries, without a
single violation or error, and with every request going to the service itself.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx2
import pytest

from service.headers import SECURITY_HEADERS
from tests.e2e.browser import Browser, chromium_binary
from tests.e2e.test_process import running

pytestmark = pytest.mark.slow

# Kept after the run (pytest's temporary folders are not) so the picture can be looked at.
SCREENSHOT = Path(__file__).resolve().parents[2] / "test-output" / "docs-offline.png"
PREDICT_SUMMARY = '.opblock-summary-path[data-path="/predict"]'


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = chromium_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI (apt-get install chromium); none on PATH")
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium)")
    return binary


def test_docs_render_offline_under_the_policy(
    chromium: str,
    penguins_store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with (
        running(penguins_store) as url,
        Browser(chromium, tmp_path / "profile") as browser,
    ):
        browser.command("Page.navigate", url=f"{url}/docs")
        browser.wait_for(f"document.querySelector('{PREDICT_SUMMARY}') !== null")
        # Open the operation: its example request names the model's real features.
        browser.evaluate(
            f"document.querySelector('{PREDICT_SUMMARY}')"
            ".closest('.opblock-summary').querySelector('button').click()"
        )
        browser.wait_for(
            "Array.from(document.querySelectorAll('.opblock-body'))"
            ".some(b => b.textContent.includes('bill_length_mm'))"
        )
        # "Try it out" sends the example to this origin (connect-src 'self') and shows the answer.
        browser.evaluate("document.querySelector('.opblock-post button.execute').click()")
        browser.wait_for(
            "Array.from(document.querySelectorAll('.live-responses-table .response-col_status'))"
            ".some(c => c.textContent.trim() === '200')"
        )
        answer = browser.evaluate(
            "document.querySelector('.live-responses-table .response-col_description pre')"
            ".textContent"
        )
        browser.evaluate("document.querySelector('.live-responses-table').scrollIntoView()")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.screenshot(SCREENSHOT)
        title = browser.evaluate("document.querySelector('.title').textContent")
        violations = browser.evaluate("window.__cspViolations")
        errors = browser.errors()
        requested = browser.requested_urls()

        # The check can fail: an inline script is refused and recorded as a violation.
        browser.evaluate(
            "(() => { const s = document.createElement('script');"
            " s.textContent = 'window.__inlineRan = true'; document.body.appendChild(s); })()"
        )
        browser.wait_for("window.__cspViolations.length > 0", timeout=5)
        inline_ran = browser.evaluate("window.__inlineRan === true")
        control = browser.evaluate("window.__cspViolations")

    with capsys.disabled():
        print(f"\ndocs screenshot: {SCREENSHOT} ({SCREENSHOT.stat().st_size} bytes)")
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert title.startswith("scikit-learn model service")
    assert '"label": "' in answer
    assert violations == []
    assert errors == []
    assert requested, "the browser recorded no request"
    assert all(u.startswith(f"{url}/") or u.startswith("data:") for u in requested), requested
    assert {f"{url}/docs", f"{url}/openapi.json", f"{url}/docs/swagger-ui-bundle.js"} <= set(
        requested
    )
    assert not inline_ran
    assert control == ["script-src-elem inline"]


def raw_exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def header_lines(raw: bytes) -> dict[str, str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}


def test_every_answer_carries_the_security_headers(
    penguins_store: Path, penguin_example: dict[str, Any]
) -> None:
    expected = dict(SECURITY_HEADERS)
    with running(penguins_store, HEADER_TIMEOUT="1") as url:
        answers = {
            "predict 200": httpx2.post(f"{url}/predict", json={"instances": [penguin_example]}),
            "predict 422": httpx2.post(f"{url}/predict", json={"instances": [{}]}),
            "unknown 404": httpx2.get(f"{url}/nowhere"),
            "docs asset": httpx2.get(f"{url}/docs/swagger-ui.css"),
            "metrics": httpx2.get(f"{url}/metrics"),
        }
        seen = {name: dict(r.headers) for name, r in answers.items()}
        # Written by uvicorn and by the connection guard, not by the app.
        malformed = raw_exchange(url, b"NOT HTTP AT ALL\r\n\r\n")
        slow = raw_exchange(url, b"GET /model HTTP/1.1\r\nHost: x\r\n")
    assert malformed.startswith(b"HTTP/1.1 400 ")
    assert slow.startswith(b"HTTP/1.1 408 ")
    seen["malformed 400"] = header_lines(malformed)
    seen["slow 408"] = header_lines(slow)
    assert answers["predict 200"].status_code == 200
    assert answers["predict 422"].status_code == 422
    assert answers["unknown 404"].status_code == 404
    for name, headers in seen.items():
        for header, value in expected.items():
            assert headers.get(header) == value, f"{name}: {header}"
        assert "server" not in headers, name
