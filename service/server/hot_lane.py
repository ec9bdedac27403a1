"""The prediction routes, served straight from the request middleware.

Every request to FastAPI passes five middleware layers and the router before it reaches a route
(error middleware, FastAPI's body-limit and telemetry wrappers, the exception middleware, the
exit-stack middleware, then a scan of the route table): measured, a fifth of a one-row
prediction's time. The prediction routes need none of it: they read their own body with its own
limit, raise only `ServiceError`s, and `RequestContext` already gives the request id, the log
line, the metrics and the last-resort 500. So a POST that one of the app's own prediction routes
matches goes from `RequestContext` to the endpoint; everything else (and every other method on
these paths) takes the full stack. The routes are matched by the app's route objects
themselves, so a path has one definition.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError, handle_service_error
from service.metrics import Metrics
from service.server.middleware import RequestContext

Endpoint = Callable[[Request], Awaitable[Response]]


class HotLane:
    """In front of the app's middleware stack: `routes` (the prediction routes, POST only) are
    served through `RequestContext` alone, the rest through `stack`."""

    def __init__(self, app: Any, stack: ASGIApp, routes: list[Route], metrics: Metrics) -> None:
        self.app = app
        self.stack = stack
        # A path without parameters (`/predict`) picks its route by a lookup, so a request for
        # another route never tries it; the route still decides whether it matches.
        self.by_path = {route.path: [route] for route in routes if not route.param_convertors}
        self.patterned = [route for route in routes if route.param_convertors]
        self.lane = RequestContext(self._serve, metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in self.by_path.get(scope["path"], self.patterned):
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self.app
                    scope.update(child)
                    await self.lane(scope, receive, send)
                    return
        await self.stack(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        endpoint: Endpoint = scope["endpoint"]
        try:
            response = await endpoint(request)
        except ServiceError as exc:
            # The handler the app registers for ServiceError: the same answer as elsewhere.
            response = await handle_service_error(request, exc)
        await response(scope, receive, send)
