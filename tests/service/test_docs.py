"""The docs page and its assets as the app serves them: all local, nothing inline."""

from __future__ import annotations

import gzip
import re
from importlib import resources

import pytest
from fastapi.testclient import TestClient

PACKAGE_FILES = {
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("swagger-ui.css", "text/css"),
    "favicon.png": ("favicon-32x32.png", "image/png"),
}


def test_the_page_loads_only_local_files_and_has_nothing_inline(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert "//" not in page  # no scheme-relative or absolute URL: nothing from elsewhere
    assert "<style" not in page
    assert " style=" not in page
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, flags=re.S)
    assert [attrs for attrs, _ in scripts] == [
        ' src="docs/swagger-ui-bundle.js"',
        ' src="docs/init.js"',
    ]
    assert all(body == "" for _, body in scripts)
    assert 'href="docs/swagger-ui.css"' in page


@pytest.mark.parametrize("name", sorted(PACKAGE_FILES))
def test_assets_are_the_pinned_package_files(client: TestClient, name: str) -> None:
    package_file, media_type = PACKAGE_FILES[name]
    expected = resources.files("fastapi_swagger.resources").joinpath(package_file).read_bytes()
    plain = client.get(f"/docs/{name}", headers={"accept-encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith(media_type)
    assert plain.headers["cache-control"] == "public, max-age=86400"
    assert "content-encoding" not in plain.headers
    assert plain.content == expected
    # httpx would undo the compression itself; read the raw bytes to see what was sent.
    with client.stream("GET", f"/docs/{name}", headers={"accept-encoding": "gzip"}) as packed:
        raw = b"".join(packed.iter_raw())
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "accept-encoding"
    assert gzip.decompress(raw) == expected


def test_the_init_script_points_swagger_ui_at_this_service(client: TestClient) -> None:
    response = client.get("/docs/init.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert 'new URL("openapi.json", document.baseURI)' in response.text
    assert "validatorUrl: null" in response.text  # no badge fetched from swagger.io


@pytest.mark.parametrize("path", ["/docs/nothing.js", "/docs/oauth2-redirect", "/redoc"])
def test_no_other_docs_paths(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
