"""A small asyncio HTTP/1.1 client for OpenAI-compatible servers: one connection per request
(no pooling, so a cancelled stream never poisons a shared connection), bodies framed by
Content-Length, chunked transfer encoding or the end of the connection, and Server-Sent Events.

The standard library's http.client blocks; asyncio streams let thousands of streamed requests,
the scheduler and the metrics scraper share one thread with timestamps taken on one clock.
"""
from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError

MAX_HEADER_BYTES = 64 * 1024
MAX_ERROR_BODY = 4096


class ProtocolError(OSError):
    """The server's answer breaks HTTP framing: a bad chunk size or Content-Length, a body
    cut short by the connection closing."""


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens: scheme, host, port and the path prefix before /v1."""
    scheme: str
    host: str
    port: int
    prefix: str

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.prefix}{path}"


def parse_url(url: str, field: str = "--url") -> Endpoint:
    """An http(s) URL as an Endpoint; a trailing /v1 is dropped (the API paths add it)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise ConfigError(field, f"not a valid URL: {url!r} ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(field, f"not an http(s) URL with a host: {url!r} (e.g. http://localhost:8000)")
    if parts.query or parts.fragment:
        raise ConfigError(field, f"give the server's base URL without a query or fragment: {url!r}")
    prefix = parts.path.rstrip("/")
    if prefix.endswith("/v1"):
        prefix = prefix[:-3]
    return Endpoint(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), prefix)


class Response:
    """A response whose status and headers have been read; the body is read (once) with
    `chunks()`, `events()` or `read()`. Close it when done."""

    def __init__(self, status: int, headers: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.status = status
        self.headers = headers
        self._reader = reader
        self._writer = writer

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive; ProtocolError if its framing is broken or the
        connection closes before the body's end."""
        r = self._reader
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size = _chunk_size(await r.readline())
                if size == 0:
                    return
                try:
                    data = await r.readexactly(size)
                    await r.readexactly(2)                    # the chunk's CRLF
                except asyncio.IncompleteReadError:
                    raise ProtocolError("the connection closed in the middle of a chunk") from None
                yield data
        elif "content-length" in self.headers:
            text = self.headers["content-length"]
            if not text.isdigit():
                raise ProtocolError(f"bad Content-Length {text[:40]!r}")
            left = int(text)
            while left > 0:
                data = await r.read(min(left, 65536))
                if not data:
                    raise ProtocolError(f"the connection closed {left} bytes before the end of the body")
                left -= len(data)
                yield data
        else:
            while data := await r.read(65536):
                yield data

    async def read(self, limit: int = 1 << 24) -> bytes:
        out = bytearray()
        async for data in self.chunks():
            out += data
            if len(out) >= limit:
                break
        return bytes(out[:limit])

    async def events(self) -> AsyncIterator[str]:
        """The `data:` payload of each Server-Sent Event, as it arrives."""
        buf = b""
        data: list[str] = []
        async for chunk in self.chunks():
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.rstrip(b"\r").decode("utf-8", "replace")
                if not line:
                    if data:
                        yield "\n".join(data)
                        data = []
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
        if buf.strip().startswith(b"data:"):
            data.append(buf.strip()[5:].decode("utf-8", "replace").lstrip(" "))
        if data:
            yield "\n".join(data)

    def close(self) -> None:
        self._writer.close()


def _chunk_size(line: bytes) -> int:
    if not line:
        raise ProtocolError("the connection closed before the last chunk")
    text = line.split(b";")[0].strip()
    try:
        size = int(text, 16)
    except ValueError:
        size = -1
    if size < 0:
        raise ProtocolError(f"bad chunk size {text[:40]!r}")
    return size


async def request(ep: Endpoint, method: str, path: str, body: dict | None = None,
                  headers: dict | None = None) -> Response:
    """Send one request and read the status line and headers (OSError if the server cannot be
    reached or answers with something that is not HTTP)."""
    ctx = ssl.create_default_context() if ep.scheme == "https" else None
    reader, writer = await asyncio.open_connection(ep.host, ep.port, ssl=ctx, limit=1 << 20)
    try:
        payload = json.dumps(body).encode() if body is not None else b""
        head = {"Host": f"{ep.host}:{ep.port}", "Connection": "close", "Accept": "*/*",
                "User-Agent": "blis-gym-observe", **(headers or {})}
        if body is not None:
            head["Content-Type"] = "application/json"
            head["Content-Length"] = str(len(payload))
        lines = [f"{method} {ep.prefix}{path} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        await writer.drain()
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise OSError("response headers too long") from None
        except asyncio.IncompleteReadError:
            raise OSError("the server closed the connection without an HTTP response") from None
        if len(raw) > MAX_HEADER_BYTES:
            raise OSError("response headers too long")
        status_line, *header_lines = raw.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise OSError(f"not an HTTP response: {status_line[:80]!r}")
        hdrs = {}
        for h in header_lines:
            if ":" in h:
                k, v = h.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        return Response(int(parts[1]), hdrs, reader, writer)
    except BaseException:
        writer.close()
        raise


async def get_text(ep: Endpoint, path: str, timeout_s: float) -> tuple[int, str]:
    """(status, body text) of a GET, within timeout_s (TimeoutError after it)."""
    async def go():
        resp = await request(ep, "GET", path)
        try:
            return resp.status, (await resp.read()).decode("utf-8", "replace")
        finally:
            resp.close()
    return await asyncio.wait_for(go(), timeout_s)


def error_message(body: bytes | str) -> str:
    """The message of an OpenAI-style error body ({"error": {"message": ...}} or {"message": ...}),
    else the body's first line; at most 200 characters on one line."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        obj = json.loads(text)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        msg = err.get("message", err) if isinstance(err, dict) else err
        text = msg if isinstance(msg, str) else json.dumps(msg)
    except ValueError:
        pass
    return " ".join(text.split())[:200]
