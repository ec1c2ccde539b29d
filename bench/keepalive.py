"""The load generators' HTTP client: minimal keep-alive HTTP/1.1 over asyncio streams.

Requests are pre-serialised bytes and responses are split by `Content-Length` only, so the generator costs a
few tens of microseconds per request and does not take the CPU the server is measured on (httpx's async
client, on the same two cores, costs more per request than the server's reads: it measured itself).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class KeepAliveClient:
    """Exchanges on idle keep-alive connections to one server, opening a new one when none is idle."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def request(self, method: str, path: str, body: Any = None) -> bytes:
        """Return the bytes of one request (a JSON body when `body` is not None)."""
        head = f"{method} {path} HTTP/1.1\r\n{self.auth}"
        if body is None:
            return (head + "\r\n").encode()
        payload = json.dumps(body).encode()
        return (head + f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload

    async def send(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Return the status, lower-cased headers and body of one exchange."""
        if self.idle:
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer, request)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise
                # The server closed this keep-alive connection while it was idle: retry on a new one.
                writer.close()
        return await self._exchange(*await asyncio.open_connection(self.host, self.port), request)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        request: bytes) -> tuple[int, dict[str, str], bytes]:
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.idle.append((reader, writer))
        return int(head[0].split()[1]), headers, body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()
