"""Security headers on every response, including the ones uvicorn writes itself.

They are passed to uvicorn as its default response headers (`python -m service`), so they go
on every answer without a middleware pass, and on uvicorn's own 400s and the connection guard's
408 and 503 too. The policy allows what the docs page needs (its own scripts, styles and data
images, and requests to this origin) and nothing else: no inline script, no other origin, no
framing. uvicorn's `server` header is off (server_header=False).
"""

from __future__ import annotations

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: list[tuple[str, str]] = [
    ("x-content-type-options", "nosniff"),
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
]
