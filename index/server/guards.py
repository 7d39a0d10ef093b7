"""ASGI middleware that guards the service: the Host header (DNS rebinding), the token, the body cap.

Each answers a refusal itself as JSON {"detail": "one line saying why"} before the app sees the
request. create_app adds them so that the Host check runs first, then the token, then the body cap.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs

UNPROTECTED_PATHS = ("/api/health",)
MINIMAL_HEALTH = {"status": "ok"}  # all /api/health says to a client without the token
TOKEN_IN_QUERY = re.compile(r"(?i)((?:^|[?&;])token=)[^&;#\s]*")


class HostGuard:
    """Refuse requests whose Host header names another site (DNS rebinding): 421 with a reason."""

    def __init__(self, app, *, names: frozenset[str]) -> None:
        self.app, self.names = app, names

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            host = header(scope, b"host")
            name = host_name(host) if host is not None else None
            if name not in self.names:
                detail = (
                    f"Host {host!r} is not one this server answers to ({', '.join(sorted(self.names))}); "
                    "start it with --allow-host NAME to add one"
                )
                await send_json(send, 421, {"detail": detail})
                return
        await self.app(scope, receive, send)


class TokenGuard:
    """With a token set, every request but /api/health needs it (Bearer header or ?token=): 401.
    /api/health without the token answers only {"status": "ok"} (no item count, no generation)."""

    def __init__(self, app, *, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.token and scope["path"] in UNPROTECTED_PATHS and not self._authorised(scope):
            await send_json(send, 200, MINIMAL_HEALTH)  # alive, and nothing about the store
            return
        if scope["type"] == "http" and self.token and scope["path"] not in UNPROTECTED_PATHS:
            if not self._authorised(scope):
                await send_json(
                    send, 401, {"detail": "this server needs a token: send `Authorization: Bearer TOKEN` or add ?token=TOKEN"},
                    headers=[(b"www-authenticate", b"Bearer")],
                )
                return
        await self.app(scope, receive, send)

    def _authorised(self, scope) -> bool:
        given_header = header(scope, b"authorization") or ""
        given = given_header[7:].strip() if given_header[:7].lower() == "bearer " else None
        if given is None:
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            given = values[0] if values else None
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


class BodyTooLarge(Exception):
    """Internal: the streamed body passed the cap."""


class BodyLimit:
    """413 for request bodies over max_bytes: by Content-Length up front, and while streaming."""

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await send_json(send, 400, {"detail": f"bad Content-Length {declared!r}"})
                return
            if int(declared) > self.max_bytes:
                await self._refuse(send, declared=int(declared))
                return
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def watched_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send, declared=None)

    async def _refuse(self, send, *, declared: int | None) -> None:
        size = f"{declared} bytes" if declared is not None else f"more than {self.max_bytes} bytes"
        detail = f"request body too large ({size}); the limit is {self.max_bytes} bytes (serve --max-upload-mb)"
        await send_json(send, 413, {"detail": detail}, headers=[(b"connection", b"close")])


async def send_json(send, status: int, document: dict[str, Any], *, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Answer a request with a JSON document, from middleware (below the framework)."""
    body = json.dumps(document).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def header(scope, name: bytes) -> str | None:
    """A request header's value (the first one), or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def host_name(host: str) -> str:
    """The name part of a Host header, lower case: 'LocalHost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def redact_token(text: str) -> str:
    """A path or request line with every ?token= value replaced by ***."""
    return TOKEN_IN_QUERY.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    """Keeps ?token= values out of uvicorn's access log (its record's args hold the full path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_token(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact_token(record.msg)
        return True


def redact_tokens_in_access_log(logger_name: str = "uvicorn.access") -> None:
    """Install RedactTokens on the access logger once."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(existing, RedactTokens) for existing in logger.filters):
        logger.addFilter(RedactTokens())
