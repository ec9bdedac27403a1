"""Errors that carry their HTTP status; one handler renders them as `{"detail": ...}`."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response


class ServiceError(Exception):
    status = 500

    def __init__(self, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequestError(ServiceError):
    status = 400


class NotFoundError(ServiceError):
    status = 404


class UnauthorizedError(ServiceError):
    status = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"WWW-Authenticate": "Bearer"})


class PayloadTooLargeError(ServiceError):
    status = 413


class UnsupportedMediaTypeError(ServiceError):
    status = 415


class InvalidBodyError(ServiceError):
    status = 422


class NotReadyError(ServiceError):
    status = 503


class OverloadedError(ServiceError):
    status = 503


def json_response(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content), status_code=status, headers=headers, media_type="application/json"
    )


# KServe v1 and the Open Inference Protocol answer errors as {"error": "..."}.
PROTOCOL_PREFIXES = ("/v1/", "/v2/", "/v2")


def error_body(path: str, detail: Any) -> dict[str, Any]:
    if path.startswith(PROTOCOL_PREFIXES):
        return {"error": detail if isinstance(detail, str) else str(detail)}
    return {"detail": detail}


async def handle_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return json_response(exc.status, error_body(request.url.path, exc.detail), exc.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405, in the shape of the protocol the path belongs to."""
    assert isinstance(exc, HTTPException)
    body = error_body(request.url.path, exc.detail)
    return json_response(exc.status_code, body, dict(exc.headers or {}))
