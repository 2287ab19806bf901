"""The upstream client's parsing of answers, fed in arbitrary pieces: however the bytes of an
answer are split across reads, the proxy reads the same answer, and a malformed one is refused
whatever the split. No socket: a Wire over a transport that records what it is told."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.headers import response_header_lines
from proxy.upstream import HIGH_WATER, Head, Wire
from proxy.upstream_errors import Malformed, UpstreamBroken


@dataclass
class Transport:
    written: list[bytes] = field(default_factory=list)
    paused: bool = False
    closed: bool = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, parts: list[bytes]) -> None:
        self.written.append(b"".join(parts))

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def wire_for(loop: asyncio.AbstractEventLoop, method: str = "GET") -> tuple[Wire, Transport]:
    wire = Wire(loop)
    transport = Transport()
    wire.connection_made(transport)  # type: ignore[arg-type]
    wire.send(b"%s / HTTP/1.1\r\n\r\n" % method.encode(), b"", skip_body=method == "HEAD")
    return wire, transport


def feed(wire: Wire, answer: bytes, cuts: list[int], eof: bool) -> bytes:
    """Feed `answer` cut at `cuts`; the body read along the way."""
    body = b""
    start = 0
    for cut in [*sorted(set(cuts)), len(answer)]:
        if cut > start and not wire.closed:
            wire.data_received(answer[start:cut])
            if wire.error is None:
                body += wire.read_nowait()
        start = max(start, cut)
    if eof and not wire.closed:
        wire.connection_lost(None)
    if wire.error is None:
        body += wire.read_nowait()
    return body


@dataclass
class Answer:
    data: bytes
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    reusable: bool
    eof: bool = False  # framed by the connection's end


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzXYZ0123456789-_", min_size=1, max_size=12)
value = st.binary(max_size=20).map(
    lambda raw: bytes(b for b in raw if b == 0x09 or 0x20 <= b <= 0x7E or b >= 0x80).strip()
)
extra = st.lists(
    st.tuples(token.map(lambda t: b"x-" + t.encode()), value),
    max_size=5,
)


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    status = draw(st.sampled_from([200, 201, 403, 404, 500, 204, 304]))
    headers = draw(extra)
    body = b"" if status in (204, 304) else draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    interim = draw(st.booleans())
    head = b"HTTP/1.1 %d Some Reason\r\n" % status
    for name, val in headers:
        head += name + b": " + val + b"\r\n"
    if status in (204, 304):
        framing = "none"
    if framing == "length":
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        wire = head + body
    elif framing == "chunked":
        sizes = draw(st.lists(st.integers(1, 64), max_size=8))
        wire, rest = head + b"Transfer-Encoding: chunked\r\n\r\n", body
        for size in sizes:
            if rest:
                wire += b"%x\r\n%s\r\n" % (len(rest[:size]), rest[:size])
                rest = rest[size:]
        if rest:
            wire += b"%x\r\n%s\r\n" % (len(rest), rest)
        wire += b"0\r\n\r\n"
    elif framing == "close":
        wire = head.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n" + body
    else:
        wire = head + b"\r\n"
    if interim:
        wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + wire
    return Answer(wire, status, headers, body, reusable=framing != "close", eof=framing == "close")


def cuts_in(data: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(data)), max_size=12)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(data=st.data(), answer=answers())
def test_any_split_of_a_valid_answer_reads_the_same(
    loop: asyncio.AbstractEventLoop, data: st.DataObject, answer: Answer
) -> None:
    wire, transport = wire_for(loop)
    body = feed(wire, answer.data, data.draw(cuts_in(answer.data)), answer.eof)
    assert wire.error is None, wire.error
    head = wire._head
    assert head is not None
    assert head.status == answer.status and head.reason == b"Some Reason"
    assert [(n, v) for n, v in head.raw if n.startswith(b"x-")] == answer.headers
    assert body == answer.body
    assert wire.done
    assert wire.reusable == answer.reusable
    assert not transport.paused


MALFORMED = [
    b"this is not HTTP\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Evil: a\rb\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Evil: a\x00b\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Fold: a\r\n b\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Lf: a\nX-Next: 1\r\n\r\nok",
    b"HTTP/1.1 200 O\x1b[2JK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-Del: a\x7fb\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 0\r\n\r\n",
]


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(data=st.data(), answer=st.sampled_from(MALFORMED))
def test_any_split_of_a_malformed_answer_is_refused(
    loop: asyncio.AbstractEventLoop, data: st.DataObject, answer: bytes
) -> None:
    wire, transport = wire_for(loop)
    feed(wire, answer, data.draw(cuts_in(answer)), eof=False)
    assert isinstance(wire.error, Malformed), (answer, wire.error)
    assert transport.closed and not wire.reusable


@settings(max_examples=100, deadline=None)
@given(data=st.data(), answer=answers(), keep=st.floats(0.0, 0.99))
def test_an_answer_cut_short_is_never_complete(
    loop: asyncio.AbstractEventLoop, data: st.DataObject, answer: Answer, keep: float
) -> None:
    if answer.eof:
        return  # its end is the connection's: any cut is an end
    cut_at = int(len(answer.data) * keep)
    wire, _ = wire_for(loop)
    truncated = answer.data[:cut_at]
    feed(wire, truncated, data.draw(cuts_in(truncated)), eof=True)
    assert not wire.done
    assert isinstance(wire.error, UpstreamBroken)


@given(data=st.data())
@settings(max_examples=50, deadline=None)
def test_a_head_answer_is_its_head_whatever_its_length_says(
    loop: asyncio.AbstractEventLoop, data: st.DataObject
) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    wire, transport = wire_for(loop, "HEAD")
    body = feed(wire, answer, data.draw(cuts_in(answer)), eof=False)
    assert wire.error is None and wire.done and wire.reusable and body == b""
    assert wire._head is not None and wire._head.status == 200 and wire._head.has_length
    # The next answer on the connection is read by a fresh parser.
    wire.send(b"GET / HTTP/1.1\r\n\r\n", b"")
    wire.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
    assert wire.done and wire.read_nowait() == b"next"
    assert not transport.closed


def test_a_body_nobody_reads_pauses_the_upstream(loop: asyncio.AbstractEventLoop) -> None:
    wire, transport = wire_for(loop)
    wire.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (4 * HIGH_WATER))
    for _ in range(HIGH_WATER // 4096 + 1):
        wire.data_received(b"x" * 4096)
    assert transport.paused  # no more is read until the client has taken it
    assert len(wire.read_nowait()) > HIGH_WATER
    assert not transport.paused


def test_bytes_after_a_complete_answer_end_the_connection(loop: asyncio.AbstractEventLoop) -> None:
    wire, transport = wire_for(loop)
    wire.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
    assert wire.done and wire.error is None and wire.read_nowait() == b"ok"
    assert transport.closed and not wire.reusable


header_name = st.one_of(
    token.map(lambda t: ("x-" + t).encode()),
    st.sampled_from(
        [
            b"Connection", b"CONNECTION", b"Keep-Alive", b"TE", b"Trailer", b"Upgrade",
            b"Proxy-Authenticate", b"Proxy-Connection", b"Content-Type", b"Date", b"Set-Cookie",
            b"x-amzn-RequestId", b"x-amzn-ErrorType", b"Access-Control-Allow-Origin",
            b"access-control-expose-headers", b"X-Named", b"Vary",
        ]
    ),
)  # fmt: skip
connection_value = st.sampled_from(
    [b"keep-alive", b"close", b"Keep-Alive", b"CLOSE", b"X-Named", b"close, x-named", b"upgrade"]
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(st.tuples(header_name, value), max_size=10),
    connection=st.lists(connection_value, max_size=2),
    cors=st.booleans(),
    cuts=st.lists(st.integers(0, 400), max_size=4),
)
def test_the_lines_made_while_parsing_are_the_filters(
    loop: asyncio.AbstractEventLoop,
    headers: list[tuple[bytes, bytes]],
    connection: list[bytes],
    cors: bool,
    cuts: list[int],
) -> None:
    """The client's header lines the parser makes as it goes (Head.lines_for) are exactly what
    the pure filter (headers.response_header_lines) gives, for any headers, any Connection
    header naming more to drop, CORS on or off, and any split of the answer."""
    headers = [(name, b"keep-alive" if name.lower() == b"connection" else v) for name, v in headers]
    headers += [(b"Connection", named) for named in connection]
    data = b"HTTP/1.1 200 OK\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    data += b"Content-Length: 2\r\n\r\nok"
    wire, _ = wire_for(loop)
    feed(wire, data, [cut for cut in cuts if cut < len(data)], eof=False)
    assert wire.error is None
    head = wire._head
    assert head is not None and head.lines is not None
    joined = b",".join(v for n, v in head.raw if n.lower() == b"connection") or None
    assert head.lines_for(cors) == response_header_lines(head.raw, joined, cors)
    head.add(b"X-Proxy-Diagnosis", b"clock_skew")  # as proxy/review.py adds one
    assert head.lines_for(cors) == response_header_lines(head.raw, joined, cors)


@pytest.mark.interpreted  # replaces the memory and its bounds
def test_plans_are_remembered_by_the_names_as_sent_within_bounds(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan for an answer's headers is remembered by their names as the upstream spelled
    them, in their order: the same names with other values reuse it, and the lines are the
    values of this answer; heads with too many or too long names are not kept, and a full
    memory is emptied, not frozen."""
    from proxy import upstream

    monkeypatch.setattr(upstream, "_PLANS", {})
    monkeypatch.setattr(upstream, "PLANS_ENTRIES", 2)
    names = (b"Access-Control-Allow-Origin", b"Keep-Alive", b"x-amzn-RequestId", b"Content-Length")

    def parsed(values: tuple[bytes, ...], *extra: bytes) -> Head:
        head = b"".join(n + b": " + v + b"\r\n" for n, v in zip(names + extra, values, strict=True))
        wire, _ = wire_for(loop)
        feed(wire, b"HTTP/1.1 200 OK\r\n" + head + b"\r\nok", [], eof=False)
        assert wire._head is not None
        return wire._head

    first = parsed((b"*", b"timeout=5", b"r-1", b"2"))
    assert first.has_cors and first.has_length and first.request_id == "r-1"
    assert (
        first.lines
        == b"Access-Control-Allow-Origin: *\r\nx-amzn-RequestId: r-1\r\nContent-Length: 2\r\n"
    )
    assert list(upstream._PLANS) == [names]
    plan = upstream._PLANS[names]
    second = parsed((b"https://a.example", b"timeout=9", b"r-2", b"2"))
    assert upstream._PLANS[names] is plan  # not worked out again
    assert second.lines == (
        b"Access-Control-Allow-Origin: https://a.example\r\nx-amzn-RequestId: r-2\r\n"
        b"Content-Length: 2\r\n"
    )
    assert second.request_id == "r-2"
    long_name = b"X-" + b"n" * upstream.PLAN_NAMES_SIZE
    parsed((b"*", b"timeout=5", b"r-3", b"2", b"1"), long_name)
    assert list(upstream._PLANS) == [names]  # too long to keep
    parsed((b"*", b"timeout=5", b"r-4", b"2", b"1"), b"X-Third")
    parsed((b"*", b"timeout=5", b"r-5", b"2", b"1"), b"X-Fourth")  # full: emptied first
    assert list(upstream._PLANS) == [(*names, b"X-Fourth")]
