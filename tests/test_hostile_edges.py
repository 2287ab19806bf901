"""Hostile input at the edges (issue #12, finding 7): request lines that are not HTTP/1.x, control
bytes in the upstream's head, CORS answers to requests without an Origin, and the end of the
connection after a chunked request. Each through the installed command, with raw bytes on a
socket; the upstream is the fake Function URL, or a scripted one where the fake is too polite."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from tests.conftest import KEYS, ProxyProcess
from tests.fake_function_url import FakeFunctionUrl
from tests.test_hostile_round_two import echo, responses, send
from tests.test_upstream_client import Answer, in_two_parts, scripted

# Not in the development loop (-m "not slow"): each test starts the installed command.
pytestmark = pytest.mark.slow

CORS_PAGE = "http://localhost:5173"
Start = Callable[..., Awaitable[ProxyProcess]]


@pytest_asyncio.fixture
async def started(spawn_proxy: Callable[..., ProxyProcess]) -> AsyncIterator[Start]:
    """started(*flags): the installed command, on a free port, with keys in its environment."""

    async def start(*flags: str) -> ProxyProcess:
        return await asyncio.to_thread(spawn_proxy, "--region", "us-east-1", *flags, env=KEYS)

    yield start


async def talk(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """What `send` reads, and whether the proxy closed the connection before `timeout`."""
    started = time.monotonic()
    received = await send(port, data, timeout)
    return received, time.monotonic() - started < timeout


def head_of(answer: bytes) -> tuple[int, list[tuple[str, str]]]:
    """The status and the header lines (lower-case names) of the first answer in `answer`."""
    lines = answer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    pairs = [line.partition(":") for line in lines[1:]]
    return int(lines[0].split()[1]), [(name.lower(), value.strip()) for name, _, value in pairs]


async def access_lines(proxy: ProxyProcess, path: str, settle: float = 0.3) -> list[str]:
    """The proxy's access lines for `path`, once at least one has come and `settle` has passed
    without another (lines go out in batches, 50 ms apart)."""
    deadline = time.monotonic() + 5
    found: list[str] = []
    while time.monotonic() < deadline:
        found = [line for line in list(proxy.lines) if f" {path} id=" in line]
        if found:
            await asyncio.sleep(settle)
            return [line for line in list(proxy.lines) if f" {path} id=" in line]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no access line for {path}:\n" + "".join(proxy.lines))


# --- a request line that is not HTTP/1.x ----------------------------------------------------------

NEXT_REQUEST = b"GET /fn/next HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.mark.parametrize(
    ("line", "status", "code"),
    [
        (b"GET /fn/x", 400, "bad_request"),  # served as HTTP/0.9 by aiohttp's parser
        (b"GET /fn/x HTTP/0.9", 400, "bad_request"),
        (b"GET /fn/x HTTP/2.0", 505, "http_version_not_supported"),
    ],
    ids=["no-version", "http-0.9", "http-2.0"],
)
async def test_a_request_line_that_is_not_http_1_gets_an_http_1_1_refusal(
    started: Start, fake: FakeFunctionUrl, line: bytes, status: int, code: str
) -> None:
    proxy = await started("--route", f"/fn={fake.url}")
    answer, closed = await talk(proxy.port, line + b"\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:300]
    [(_, headers, body)] = responses(answer)
    assert (headers["x-proxy-error"], headers["connection"]) == (code, "close")
    assert echo(body)["error"] == code
    assert closed
    assert fake.received == []
    [logged] = await access_lines(proxy, "/fn/x")
    assert f" {status} " in logged and code in logged, logged


# --- control bytes in the upstream's head ---------------------------------------------------------

# Whatever a terminal, a log viewer or a careless client would act on: an ANSI sequence that
# clears the screen, a window-title escape, DEL, a vertical tab, BEL.
CONTROLS = [
    b"HTTP/1.1 200 O\x1b[2JK\r\n",
    b"HTTP/1.1 200 OK\r\nX-Title: \x1b]0;owned\x07\r\n",
    b"HTTP/1.1 200 OK\r\nX-Del: a\x7fb\r\n",
    b"HTTP/1.1 200 OK\r\nX-Vt: a\x0bb\r\n",
]
# HTAB is allowed in a value and a reason phrase (RFC 9110 5.5, RFC 9112 4), and so are bytes
# over 0x7F: both pass as they came.
CLEAN = b"HTTP/1.1 200 O\tK\r\nX-Tab: a\tb\r\nX-Utf8: caf\xc3\xa9\r\n"


def canned(heads: list[bytes], streamed: bool) -> Answer:
    """The n-th request gets heads[n-1] and a body of 2 bytes: with it, or 0.3 s after it (so
    that the proxy streams the answer instead of writing it whole)."""

    async def answer(writer: asyncio.StreamWriter, n: int) -> None:
        head = heads[n - 1] + b"Content-Length: 2\r\n\r\n"
        writer.write(head if streamed else head + b"ok")
        await writer.drain()
        if streamed:
            await asyncio.sleep(0.3)
            writer.write(b"ok")
            await writer.drain()

    return answer


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_control_bytes_in_the_upstreams_head_are_refused_as_malformed(
    started: Start, streamed: bool
) -> None:
    async with scripted(canned([*CONTROLS, CLEAN], streamed)) as upstream:
        proxy = await started("--route", f"/fn=http://127.0.0.1:{upstream.port}")
        for head in CONTROLS:
            answer, _ = await talk(
                proxy.port, b"GET /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            [(status, headers, body)] = responses(answer)
            assert (status, headers["x-proxy-error"]) == (502, "upstream_unreachable"), head
            message = echo(body)["message"]
            assert "malformed HTTP response (a control character" in message, message
            assert not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", answer), answer
        answer, _ = await talk(
            proxy.port, b"GET /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
    assert answer.startswith(b"HTTP/1.1 200 O\tK\r\n"), answer[:200]
    assert b"\r\nX-Tab: a\tb\r\n" in answer and b"\r\nX-Utf8: caf\xc3\xa9\r\n" in answer
    assert "Traceback" not in "".join(proxy.lines)


# --- CORS on, and a request without Origin --------------------------------------------------------


def cors_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.startswith("access-control-")]


def varies_with_origin(headers: list[tuple[str, str]]) -> bool:
    values = ",".join(value for name, value in headers if name == "vary")
    return "origin" in {token.strip().lower() for token in values.split(",")}


async def test_with_cors_on_every_answer_varies_with_origin_and_drops_the_functions_cors(
    started: Start, fake: FakeFunctionUrl
) -> None:
    """A cache must not give a page the answer made for a request without Origin (curl, a dev
    server's proxy), nor the reverse; and a function's own Access-Control-* never leave the
    proxy while it answers CORS itself. Whole answers, streamed ones and the proxy's own."""
    function_cors = b"Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Credentials: true\r\n"
    streamed = in_two_parts(
        b"HTTP/1.1 200 OK\r\n" + function_cors + b"Content-Length: 2\r\n\r\n", 0.3, b"ok"
    )
    async with scripted(streamed) as upstream:
        proxy = await started(
            "--route",
            f"/fn={fake.url}",
            "--route",
            f"/streamed=http://127.0.0.1:{upstream.port}",
            "--cors-origin",
            CORS_PAGE,
        )
        for path, status in (("/fn/cors", 200), ("/streamed/x", 200), ("/nowhere", 404)):
            for origin, allowed in (
                (None, False),
                (CORS_PAGE, True),
                ("http://localhost:3000", False),
            ):
                extra = f"Origin: {origin}\r\n" if origin else ""
                head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
                answer, _ = await talk(proxy.port, head.encode())
                got, headers = head_of(answer)
                assert got == status, (path, origin, answer[:300])
                assert varies_with_origin(headers), (path, origin, headers)
                granted = dict(cors_headers(headers)).get("access-control-allow-origin")
                assert granted == (origin if allowed else None), (path, origin, headers)
                if not allowed:
                    assert cors_headers(headers) == [], (path, origin, headers)
    assert [r.raw_path for r in fake.received] == ["/cors"] * 3


# --- the connection's end after a chunked request -------------------------------------------------

CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nCookie: session=attacker\r\n\r\n"
PREFLIGHT = f"Origin: {CORS_PAGE}\r\nAccess-Control-Request-Method: PUT\r\n".encode()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens on it now


@pytest.mark.parametrize(
    ("request_head", "status", "forwarded"),
    [
        (b"POST /fn/echo HTTP/1.1\r\n", 200, ["/echo"]),  # the answer arrives whole
        (b"POST /fn/stream/30/3?delay=0.1 HTTP/1.1\r\n", 200, ["/stream/30/3?delay=0.1"]),
        (b"POST /gone/x HTTP/1.1\r\n", 502, []),  # the proxy's own error, the body read
        (b"POST /_proxy/health HTTP/1.1\r\n", 200, []),
        (b"OPTIONS /fn/x HTTP/1.1\r\n" + PREFLIGHT, 204, []),  # answered by the proxy
    ],
    ids=["whole", "streamed", "proxy-error", "health", "cors-preflight"],
)
async def test_the_answer_to_a_chunked_request_says_the_connection_closes(
    started: Start,
    fake: FakeFunctionUrl,
    request_head: bytes,
    status: int,
    forwarded: list[str],
) -> None:
    """aiohttp's C parser carries a chunked request's last trailer line into the next request
    (docs/aiohttp-trailer-report.md): whatever answers a chunked request, the connection ends
    with it, and its head says so."""
    proxy = await started(
        "--route",
        f"/fn={fake.url}",
        "--route",
        f"/gone=http://127.0.0.1:{closed_port()}",
        "--cors-origin",
        CORS_PAGE,
    )
    answer, closed = await talk(
        proxy.port,
        request_head + b"Host: 127.0.0.1\r\n" + CHUNKED + NEXT_REQUEST,
    )
    got, headers = head_of(answer)
    assert got == status, answer[:300]
    assert ("connection", "close") in headers, headers
    assert closed
    assert answer.count(b"HTTP/1.1 ") == 1  # the request after it got no answer
    assert [r.raw_path for r in fake.received] == forwarded
