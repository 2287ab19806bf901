"""The upstream client: keep-alive connections to Function URLs, pooled per origin, and the
answers read from them with httptools (llhttp, the parser uvicorn and Node.js use).

It talks to the upstream socket and to nothing else: the request head comes ready-made
(proxy/wire.py), and what reaches the client is proxy/downstream.py's. aiohttp's client cost
more than the rest of the proxy together (request and response objects, its pool's bookkeeping,
its parser's StreamReader: bench/README.md); the proxy needs a socket, a parser and a pool.

    client = UpstreamClient(ca_bundle)
    wire = client.pooled(upstream) or await client.connect(upstream)  # ConnectFailed: none sent
    wire.send(head, body, skip_body=method == "HEAD")
    head = await wire.head()                  # 1xx skipped; UpstreamBroken, Malformed
    parts = wire.take() / await wire.more()  # [] at the end; a bounded buffer
    client.release(wire)                      # back to the pool if the answer allows it
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httptools

from proxy.headers import (
    CORS_PREFIX,
    DROPPED_RESPONSE,
    holds_control_bytes,
    response_header_lines,
)
from proxy.memo import remember
from proxy.routing import HttpProxy, Origin, Upstream
from proxy.skew import Clocks
from proxy.upstream_errors import ConnectFailed, Malformed, UpstreamBroken

# The pool's keep-alive stays below AWS's idle timeout, so a connection AWS has closed is
# rarely picked (aiohttp's pool used the same 30 s).
KEEPALIVE: Final = 30.0
# Reading from the upstream pauses while this much of an answer's body waits for the client,
# and resumes once the client has taken it: a slow client holds about this much per request.
HIGH_WATER: Final = 1 << 16
# Above this, a body is written after the head rather than joined to it (no copy).
COPY_LIMIT: Final = 1 << 14
# What the head of an answer cannot hold: a control character would reach the client's terminal
# and logs as it is. llhttp refuses these in header values, but not in the reason phrase.
CONTROL_CHARACTER: Final = "a control character in its status line or a header"
_LLHTTP_CONTROL: Final = "Invalid header value char"
HEAD_END: Final = b"\r\n\r\n"


@dataclass(slots=True)
class Head:
    """An answer's status line and headers, as they came (names and values undecoded)."""

    status: int
    reason: bytes
    fields: list[bytes]  # the headers' names and values in turn: name, value, name, value...
    connection: bytes | None = None  # the Connection header's values, joined
    has_length: bool = False
    has_date: bool = False
    date: bytes | None = None  # AWS's clock (proxy/skew.py)
    request_id: str | None = None
    error_type: str | None = None
    # Its header lines for the client, less the hop-by-hop ones, made with the parser's plan
    # (None: not made); and whether it has Access-Control-* headers, which CORS drops.
    lines: bytes | None = None
    has_cors: bool = False

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        """The headers as (name, value) pairs."""
        return list(zip(self.fields[::2], self.fields[1::2], strict=True))

    def lines_for(self, cors: bool) -> bytes:
        """headers.response_header_lines() of this answer: the lines made while parsing, unless
        its Connection header names more headers to drop, or CORS drops some."""
        if (
            self.lines is not None
            and (self.connection is None or self.connection.lower() in _PLAIN_CONNECTION)
            and not (cors and self.has_cors)
        ):
            return self.lines
        return response_header_lines(self.raw, self.connection, cors)

    def add(self, name: bytes, value: bytes) -> None:
        """A header the proxy adds to the answer (proxy/review.py's diagnosis)."""
        self.fields += (name, value)
        if self.lines is not None:
            self.lines += b"%s: %s\r\n" % (name, value)

    @property
    def names(self) -> list[str]:
        """The header names, decoded: for CORS's exposed headers, when an answer needs them."""
        return [_text(name) for name in self.fields[::2]]


# What the parser does with each header: the six it notes (_NOTED), then the others, passed on
# (an Access-Control-* one marked) or hop-by-hop and dropped.
_CONNECTION, _LENGTH, _DATE, _REQUEST_ID, _ERROR_TYPE, _ENCODING = range(6)
_KEPT, _KEPT_CORS, _DROPPED = range(6, 9)
# Headers the proxy reads as they go by (lower-case names), and what it notes of each.
_NOTED: Final = {
    b"connection": _CONNECTION,
    b"content-length": _LENGTH,
    b"date": _DATE,
    b"x-amzn-requestid": _REQUEST_ID,
    b"x-amzn-errortype": _ERROR_TYPE,
    b"transfer-encoding": _ENCODING,
}


# The hop-by-hop headers the parser drops as it goes (those it notes are dropped in their turn).
_HOP_BY_HOP: Final = frozenset(name.encode() for name in DROPPED_RESPONSE)
# Connection values that name no header to drop.
_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close"})
# A header line for the client, and a header dropped: %.0s takes its value and writes nothing.
_KEEP_LINE: Final = b"%s: %s\r\n"
_DROP_LINE: Final = b"%.0s%.0s"


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the parser does with the headers of an answer, worked out once per list of names
    as the upstream sent them: a Function URL sends the same names in the same order with
    every answer, and one look-up of the list spares a look-up per header, and one %-format
    the joining of lines one by one: 2 % of a small GET's instructions. Positions are in
    Head.fields (0: none, as a name is there)."""

    template: bytes  # the client's lines, % the fields: _KEEP_LINE or _DROP_LINE per header
    connection: tuple[int, ...]
    has_length: bool
    date: int
    request_id: int
    error_type: int
    encoding: int  # the last Transfer-Encoding's: its last coding says whether it is chunked
    has_cors: bool

    def head(self, status: int, reason: bytes, fields: list[bytes]) -> Head:
        connection = None
        if self.connection:
            connection = b",".join([fields[at] for at in self.connection])
        return Head(
            status,
            reason,
            fields,
            connection,
            self.has_length,
            self.date > 0,
            fields[self.date] if self.date else None,
            fields[self.request_id].decode("utf-8", "surrogateescape") if self.request_id else None,
            fields[self.error_type].decode("utf-8", "surrogateescape") if self.error_type else None,
            self.template % tuple(fields),
            self.has_cors,
        )

    def chunked(self, fields: list[bytes]) -> bool:
        return bool(self.encoding) and _last_coding(fields[self.encoding]) == b"chunked"


def _last_coding(value: bytes) -> bytes:
    return value.rpartition(b",")[2].strip().lower()


def plan_of(names: tuple[bytes, ...]) -> _Plan:
    """The plan for headers of these names, in this order (and remember it, within bounds)."""
    template = []
    noted: dict[int, int] = {}
    connection = []
    has_cors = False
    for at, name in enumerate(names):
        value_at = 2 * at + 1
        kind = _kind(name)
        if kind == _CONNECTION:
            connection.append(value_at)
        elif kind < _KEPT:
            noted[kind] = value_at  # the last of a name, as the access log has always shown
        has_cors = has_cors or kind == _KEPT_CORS
        keep = kind not in (_CONNECTION, _ENCODING, _DROPPED)
        template.append(_KEEP_LINE if keep else _DROP_LINE)
    made = _Plan(
        b"".join(template),
        tuple(connection),
        _LENGTH in noted,
        noted.get(_DATE, 0),
        noted.get(_REQUEST_ID, 0),
        noted.get(_ERROR_TYPE, 0),
        noted.get(_ENCODING, 0),
        has_cors,
    )
    if len(names) <= PLAN_HEADERS and sum(map(len, names)) <= PLAN_NAMES_SIZE:
        remember(_PLANS, names, made, PLANS_ENTRIES)
    return made


# The plans, by the names of an answer's headers as sent; bounded (proxy/memo.py): lists of at
# most 64 headers whose names add up to at most 2 KiB, 256 lists.
_PLANS: Final[dict[tuple[bytes, ...], _Plan]] = {}
PLANS_ENTRIES: Final = 256
PLAN_HEADERS: Final = 64
PLAN_NAMES_SIZE: Final = 2048


def _kind(name: bytes) -> int:
    """What the parser does with a header of this name."""
    lower = name.lower()
    kind = _NOTED.get(lower)
    if kind is None:
        if lower in _HOP_BY_HOP:
            return _DROPPED
        return _KEPT_CORS if lower.startswith(CORS_PREFIX) else _KEPT
    return kind


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


class Wire(asyncio.Protocol):
    """One connection to an upstream: writes a request, parses its answer as it arrives.

    One request at a time; the reader (the request's task) waits on one future, woken by the
    parser's callbacks. Body chunks wait in a deque until read; past HIGH_WATER the transport
    stops reading, so a slow client slows the upstream down rather than filling memory."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._fields: list[bytes] = []  # the answer's header names and values, in turn
        self._reason = b""
        self._head: Head | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._skip_body = False  # HEAD and CONNECT: llhttp cannot be told the method
        self._carry = b""  # the last bytes of a head being fed alone (skip_body)
        self._until_close = False  # a body that ends with the connection
        self._keep_alive = False
        self.busy = False  # a request is in flight (else unexpected bytes end the connection)
        self.done = False  # the answer is complete
        self.reusable = False
        self.error: BaseException | None = None
        self.closed = False
        self.idle_since = 0.0
        self.origin: Origin | None = None  # the pool it goes back to
        self.pool: list[Wire] | None = None  # where it waits while idle

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.done:
            # Bytes nobody asked for (after an answer, or while pooled): not HTTP to trust.
            self.reusable = False
            self.close()
            return
        try:
            if self._skip_body:
                self._feed_head_only(data)
            else:
                self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            self._fail(error.__cause__ or error.__context__ or error)
        except httptools.HttpParserError as error:
            reason = str(error)
            self._fail(Malformed(CONTROL_CHARACTER if reason == _LLHTTP_CONTROL else reason))
        except httptools.HttpParserUpgrade:
            self._fail(Malformed("it switched protocols, which the proxy never asked for"))

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost says what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.pool is not None:
            self.pool.remove(self)
            self.pool = None
        if self.busy and not self.done and self.error is None:
            if self._head is not None and self._until_close:
                self._complete()  # a body framed by the connection's end: this is its end
            elif self._head is None:
                self._fail(UpstreamBroken("the upstream closed the connection without answering"))
            else:
                self._fail(UpstreamBroken("the upstream closed the connection mid-body"))
        self._wake()

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:  # a second answer to one request: _fail() keeps the first, ends the rest
            raise Malformed("it sent more than one answer")
        self._fields = []
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._fields
        fields.append(name)
        fields.append(value)

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (101 is never asked for: no Upgrade is forwarded)
        reason = self._reason
        if reason != b"OK" and holds_control_bytes(reason):
            raise Malformed(CONTROL_CHARACTER)
        fields = self._fields
        names = tuple(fields[::2])
        made = _PLANS.get(names) or plan_of(names)
        head = made.head(status, reason, fields)
        self._keep_alive = self._parser.should_keep_alive()
        self._until_close = not (
            head.has_length or self._skip_body or status in (204, 304) or made.chunked(fields)
        )
        self._head = head
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._head is None:
            return  # the end of an interim answer: the real one follows
        self._complete()

    # --- the request's side -------------------------------------------------------------------

    def send(self, head: bytes, body: bytes, skip_body: bool = False) -> None:
        """Write one request; its answer is read with head() and read(). `skip_body`: the
        answer has none whatever its headers say (the request was HEAD, or CONNECT)."""
        assert self.transport is not None
        self.busy = True
        self.done = False
        self.reusable = False
        self.error = None
        self._head = None
        self._skip_body = skip_body
        self._carry = b""
        if len(body) > COPY_LIMIT:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head + body)

    async def head(self) -> Head:
        """The answer's head, once it has come (interim 1xx answers skipped)."""
        while self._head is None:
            if self.error is not None:
                raise self.error
            await self._wait()
        return self._head

    async def ask(self, head: bytes, body: bytes, skip_body: bool = False) -> Head:
        """send(), then the answer's head as head() gives it, in one coroutine: the request
        path's common case, where a frame more costs every request its wake-up."""
        self.send(head, body, skip_body)
        while self._head is None:
            if self.error is not None:
                raise self.error
            await self._wait()
        return self._head

    def take(self) -> list[bytes]:
        """The parts of the body that have arrived (none yet: []), handed over without a copy;
        raises if the answer broke."""
        parts = self._chunks
        if not parts:
            if self.error is not None:
                raise self.error
            return parts
        self._chunks = []
        self._buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return parts

    @property
    def unread(self) -> bool:
        """Part of the body is still waiting to be taken: the request gave up (its task was
        cancelled) after the answer had come whole. Reused, the connection would hand those
        bytes to the next request as the start of its own answer."""
        return bool(self._chunks)

    def read_nowait(self) -> bytes:
        """All of the body that has arrived, as one piece (a whole answer's)."""
        parts = self.take()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def whole(self, limit: int) -> bytes | None:
        """The whole body once it has arrived, left in place for take(); None if it grows past
        `limit` or the answer broke (a refusal's body, read before deciding what to do)."""
        while not self.done:
            if self.error is not None or self._buffered > limit:
                return None
            await self._wait()
        return b"".join(self._chunks)

    async def more(self) -> list[bytes]:
        """The next parts of the body, [] at its end; raises if the answer broke."""
        while True:
            if self._chunks:
                return self.take()
            if self.error is not None:
                raise self.error
            if self.done:
                return []
            await self._wait()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    # --- inside -------------------------------------------------------------------------------

    def _feed_head_only(self, data: bytes) -> None:
        """The answer to HEAD (or CONNECT) is a head alone, whatever its Content-Length says:
        llhttp, which cannot be told the request's method, is fed up to the head's blank line
        only, then replaced by a fresh parser for the next answer."""
        while data:
            probe = self._carry + data
            end = probe.find(HEAD_END)
            if end < 0:
                self._carry = probe[-3:]
                self._parser.feed_data(data)
                return
            cut = end + len(HEAD_END) - len(self._carry)
            self._carry = b""
            self._parser.feed_data(data[:cut])
            data = data[cut:]
            if self._head is not None:
                self._parser = httptools.HttpResponseParser(self)
                self._complete()
                if data:  # bytes after an answer that has no body: the connection is unusable
                    self.reusable = False
                    self.close()
                return

    def _complete(self) -> None:
        self.done = True
        self.busy = False
        self.reusable = self._keep_alive and not self._until_close and not self.closed
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.done:  # bytes after a complete answer: it stands, the connection does not
            self.close()
            return
        if self.error is None:
            self.error = error
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wait(self) -> asyncio.Future[None]:
        """The future the parser's callbacks resolve (_wake), awaited where it is asked for: a
        coroutine here would be one frame more on every request's wake-up. A future left by a
        cancelled wait is done, so _wake passes it by."""
        waiter = self.loop.create_future()
        self._waiter = waiter
        return waiter


class UpstreamClient:
    """One for the app's life: keep-alive connections per origin, verified TLS, HTTP proxies
    from the environment; bytes pass as they are (no decompression, cookies or redirects)."""

    def __init__(self, ca_bundle: Path | None) -> None:
        self.ssl = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        self._idle: dict[Origin, list[Wire]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.clocks = Clocks()  # what each origin's answers say of AWS's clock
        self.retries: dict[str, int] = {}  # requests sent again, by reason (/_proxy/metrics)
        # For proxy/forward.py, decided once: the log level belongs to the process (a reload
        # asks for a restart), and at info level no request computes anything for debug lines.
        self.debug = logging.getLogger("proxy.trace").isEnabledFor(logging.DEBUG)

    def retried(self, reason: str) -> None:
        """A request is sent again: its connection could not be made (`connect`), or AWS
        refused it for what a second signature mends (proxy/review.py's diagnosis codes)."""
        self.retries[reason] = self.retries.get(reason, 0) + 1

    def pooled(self, upstream: Upstream) -> Wire | None:
        """A kept-alive connection to `upstream`'s origin, if one is idle (no await: the common
        case costs no coroutine)."""
        idle = self._idle.get(upstream.origin)
        if idle:
            expired = idle[-1].loop.time() - KEEPALIVE
            while idle:
                wire = idle.pop()  # the most recently used: the least likely to be stale
                wire.pool = None
                if not wire.closed and wire.idle_since > expired:
                    return wire
                wire.close()
        return None

    def release(self, wire: Wire) -> None:
        """The answer is done with: the connection waits for the next request, unless it may
        not carry one (the upstream said close, the body ended with the connection, the answer
        was not all read)."""
        if not wire.reusable or wire.closed or wire.unread:
            wire.close()
            return
        # The wire's loop: asyncio.get_running_loop() makes a getpid() system call on 3.11.
        loop = wire.loop
        wire.idle_since = loop.time()
        idle = self._idle.get(wire.origin) if wire.origin is not None else None
        if idle is None:
            wire.close()
            return
        wire.pool = idle
        idle.append(wire)
        if self._sweeper is None:
            self._sweeper = loop.call_later(KEEPALIVE, self._sweep)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for wire in list(idle):
                wire.close()
        self._idle.clear()

    def _sweep(self) -> None:
        """Close the connections idle for KEEPALIVE; again later while any are left."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        expired = loop.time() - KEEPALIVE
        left = False
        for idle in self._idle.values():
            for wire in [wire for wire in idle if wire.idle_since <= expired]:
                wire.close()  # connection_lost takes it out of the pool
            left = left or bool(idle)
        if left:
            self._sweeper = loop.call_later(KEEPALIVE / 2, self._sweep)

    async def connect(self, upstream: Upstream) -> Wire:
        """A new connection to `upstream`'s origin: ConnectFailed if it cannot be made."""
        loop = asyncio.get_running_loop()
        scheme, host, port, proxy = upstream.origin
        tls = scheme == "https"
        try:
            if proxy is None:
                _, wire = await loop.create_connection(
                    lambda: Wire(loop),
                    host,
                    port,
                    ssl=self.ssl if tls else None,
                    server_hostname=host if tls else None,
                )
            else:
                _, wire = await loop.create_connection(lambda: Wire(loop), proxy.host, proxy.port)
                if tls:
                    await self._tunnel(wire, host, port, proxy)
        except ssl.SSLError as error:  # SSLCertVerificationError included
            raise ConnectFailed(error, tls=True) from None
        except ssl.CertificateError as error:
            raise ConnectFailed(error, tls=True) from None
        except OSError as error:
            raise ConnectFailed(error) from None
        self._idle.setdefault(upstream.origin, [])
        wire.origin = upstream.origin
        return wire

    async def _tunnel(self, wire: Wire, host: str, port: int, proxy: HttpProxy) -> None:
        """HTTPS through an HTTP proxy: CONNECT, then TLS with the upstream inside the tunnel."""
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if proxy.authorization:
            request += f"Proxy-Authorization: {proxy.authorization}\r\n"
        try:
            wire.send(f"{request}\r\n".encode(), b"", skip_body=True)
            answer = await wire.head()
            if not 200 <= answer.status < 300:
                reason = _text(answer.reason)
                raise ConnectFailed(
                    f"the proxy {proxy} refused the tunnel: {answer.status} {reason}"
                )
            wire.busy = wire.done = False
            assert wire.transport is not None
            transport = await asyncio.get_running_loop().start_tls(
                wire.transport, wire, self.ssl, server_hostname=host
            )
        except (UpstreamBroken, Malformed) as error:
            wire.abort()
            raise ConnectFailed(f"the proxy {proxy} failed to open a tunnel ({error})") from None
        except BaseException:
            wire.abort()
            raise
        if transport is None:  # pragma: no cover - start_tls returns None only when closing
            raise ConnectFailed(f"the proxy {proxy} closed the tunnel")
        wire.transport = transport
