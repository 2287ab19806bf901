"""An asyncio stand-in for the bench's nginx upstream (bench/nginx.py), for where nginx is not
installed: the same bodies for /small, /post and /headers, a Function URL's headers, keep-alive.
Slower than nginx, which matters only where the upstream's CPU competes with the proxy's
(`python -m bench.instructions` counts the proxy's instructions alone)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from bench import nginx


class StandIn:
    """An asyncio upstream answering /small, /post and /headers as the bench's nginx does, with a
    Function URL's headers, for when nginx is not installed. It runs in a thread of this process:
    its cost is never counted (callgrind counts the proxy only)."""

    def __init__(self) -> None:
        self.port = 0
        self.targets: list[bytes] = []  # every request's target, in order
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upstream", daemon=True)

    @staticmethod
    def answer(target: bytes, authorization: bytes) -> bytes:
        path = target.partition(b"?")[0]
        if path == b"/post":
            body = b'{"received": true}'
        elif path == b"/headers":
            body = authorization + b"\n"
        else:
            body = nginx.SMALL_JSON.encode()
        return (
            b"HTTP/1.1 200 OK\r\nServer: stand-in\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: keep-alive\r\n"
            b"x-amzn-RequestId: 8f5c9a3e-0d7b-4c1e-9a55-3f0f6b2c1d77\r\n"
            b"X-Amzn-Trace-Id: bench\r\n\r\n%s" % (len(body), body)
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                target = lines[0].split(b" ")[1]
                self.targets.append(target)
                fields = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(b":") for line in lines[1:] if line)
                }
                if b"transfer-encoding" in fields:
                    raise ValueError("the stand-in reads Content-Length bodies only")
                await reader.readexactly(int(fields.get(b"content-length", b"0")))
                writer.write(self.answer(target, fields.get(b"authorization", b"")))
        writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def __enter__(self) -> StandIn:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the asyncio stand-in upstream did not start within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
