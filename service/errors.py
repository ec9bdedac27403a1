"""Errors that carry their HTTP status; one handler renders them as `{"detail": ...}`."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response


class ServiceError(Exception):
    status = 500

    def __init__(self, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


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


async def handle_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return json_response(exc.status, {"detail": exc.detail}, exc.headers)
