"""The API docs page, served whole by the service: it works with no internet access.

Swagger UI's script and styles come from a pinned, hashed package (fastapi-swagger, which ships
them as files), never from a CDN, and the page has no inline script or style, so it runs under
the strict Content-Security-Policy every response carries (service.headers). Every URL on the
page is relative, so the docs also work behind a proxy that serves the API under a prefix.
"""

from __future__ import annotations

import gzip
import html
from functools import cache
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

SCRIPT = "text/javascript; charset=utf-8"
# name under /docs/ -> (file in fastapi-swagger's resources, media type)
ASSETS = {
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", SCRIPT),
    "swagger-ui.css": ("swagger-ui.css", "text/css; charset=utf-8"),
    "favicon.png": ("favicon-32x32.png", "image/png"),
}
# The assets change only with the package, which changes only with the image.
CACHE_CONTROL = "public, max-age=86400"

# Relative to /docs, so "docs/x" is /docs/x, and /prefix/docs/x behind a prefix.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - API docs</title>
<link rel="icon" type="image/png" href="docs/favicon.png">
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/init.js"></script>
</body>
</html>
"""

# The schema's URL is resolved against the page's, for the same reason.
INIT_SCRIPT = b"""window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    deepLinking: true,
    displayRequestDuration: true,
    tryItOutEnabled: true,
    validatorUrl: null
  });
});
"""


def mount_docs(app: FastAPI) -> None:
    """GET /docs and its assets; FastAPI's own docs routes must be off (docs_url=None)."""
    page = PAGE.format(title=html.escape(app.title)).encode()

    async def docs_page(request: Request) -> Response:
        return HTMLResponse(page)

    async def docs_asset(request: Request) -> Response:
        name = request.path_params["name"]
        headers = {"cache-control": CACHE_CONTROL}
        if name == "init.js":
            return Response(INIT_SCRIPT, media_type=SCRIPT, headers=headers)
        if name not in ASSETS:
            raise HTTPException(404, "Not Found")
        headers["vary"] = "accept-encoding"
        # The first read and compression take tens of milliseconds: off the event loop.
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["content-encoding"] = "gzip"
            body = await run_in_threadpool(_gzipped, name)
        else:
            body = await run_in_threadpool(_asset, name)
        return Response(body, media_type=ASSETS[name][1], headers=headers)

    app.router.add_route("/docs", docs_page, methods=["GET"], include_in_schema=False)
    app.router.add_route("/docs/{name}", docs_asset, methods=["GET"], include_in_schema=False)


@cache
def _asset(name: str) -> bytes:
    """Read on first use, so a process whose docs nobody opens never holds them."""
    package_file = ASSETS[name][0]
    return resources.files("fastapi_swagger.resources").joinpath(package_file).read_bytes()


@cache
def _gzipped(name: str) -> bytes:
    """Compressed once per process (the script shrinks from 1.7 MB to about 0.5 MB); mtime=0
    makes the bytes the same in every replica."""
    return gzip.compress(_asset(name), compresslevel=6, mtime=0)
