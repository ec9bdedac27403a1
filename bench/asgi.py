"""What the bench's bare ASGI servers (the scikit-learn baseline and the ONNX floor) share."""

from __future__ import annotations

from typing import Any


async def read_request_body(receive: Any) -> bytes:
    """A request's whole body, from ASGI messages."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body
