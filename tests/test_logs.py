"""The access line: written straight to the stream when the CLI configured logging, through
logging otherwise, and the same line either way."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import logs
from proxy.exchange import Exchange

EXCHANGES = [
    Exchange("GET", "/fn/ok", "/fn", 200, 112, "req-1"),
    Exchange("GET", "/nowhere", "-", 404, 90, None, None, "no_route"),
    Exchange("GET", "/fn/sig", "/fn", 403, 10, "req-2", "InvalidSignatureException"),
    Exchange("POST", "/fn/x", "/fn", 502, 80, None, None, "upstream_unreachable", "it is down"),
    Exchange("OPTIONS", "/fn/p", "/fn", 200, 0, "req-3", None, "preflight_forwarded"),
    Exchange("GET", "/fn/s", "/fn", 200, 5, "req-4", None, "client_disconnected"),
]
TIME = re.compile(r"^\S+ \S+ ")  # the text format's date and time


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """A stream for logs.configure() to log to; logging as it was restored after."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])  # setLevel, not assignment: loggers cache what is enabled
    logs._handler = None  # as an embedded app (the other tests) has it


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_direct_line_is_the_line_logging_writes(
    configured: io.StringIO, log_format: str
) -> None:
    logs.configure(log_format, "info", configured)
    assert logs._handler is not None
    for exchange in EXCHANGES:
        logs.log_access(exchange, 0.0123)
    direct = _lines(configured)
    configured.truncate(0)
    configured.seek(0)
    logs._handler = None  # the same lines through logging
    for exchange in EXCHANGES:
        logs.log_access(exchange, 0.0123)
    through_logging = _lines(configured)
    assert len(direct) == len(EXCHANGES) == len(through_logging)
    if log_format == "json":
        for a, b in zip(direct, through_logging, strict=True):
            first, second = json.loads(a), json.loads(b)
            assert first.pop("time")[:16] == second.pop("time")[:16]
            assert first == second
    else:
        assert [TIME.sub("", line) for line in direct] == [
            TIME.sub("", line) for line in through_logging
        ]
    # The levels say what needs attention: errors and hints are warnings.
    levels = [
        line.split()[2] if log_format == "text" else json.loads(line)["level"] for line in direct
    ]
    assert [level.upper() for level in levels] == [
        "INFO",
        "WARNING",
        "WARNING",
        "WARNING",
        "WARNING",
        "INFO",
    ]


def test_the_level_still_silences_access_lines(configured: io.StringIO) -> None:
    logs.configure("text", "warning", configured)
    logs.log_access(EXCHANGES[0], 0.001)  # a routine 200: INFO
    logs.log_access(EXCHANGES[1], 0.001)  # a 404 no_route: WARNING
    (line,) = _lines(configured)
    assert "/nowhere" in line


def test_text_time_is_loggings_own_format(configured: io.StringIO) -> None:
    logs.configure("text", "info", configured)
    logs.log_access(EXCHANGES[0], 0.001)
    logging.getLogger("proxy").info("plain line")
    access, plain = _lines(configured)
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    assert re.match(stamp + "INFO    GET ", access)
    assert re.match(stamp + "INFO    plain line$", plain)


class CountingStream(io.StringIO):
    """A log stream that counts the writes it is given."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_access_lines_are_written_in_batches(configured: io.StringIO) -> None:
    stream = CountingStream()
    logs.configure("text", "info", stream)
    for _ in range(100):
        logs.log_access(EXCHANGES[0], 0.001)
    assert stream.writes == 0  # held for the batch
    await asyncio.sleep(logs.LogHandler.FLUSH_INTERVAL * 4)
    assert stream.writes == 1
    assert len(_lines(stream)) == 100


async def test_other_lines_wait_behind_access_lines(configured: io.StringIO) -> None:
    logs.configure("text", "info", configured)
    logs.log_access(EXCHANGES[0], 0.001)
    logging.getLogger("proxy").warning("logged after the request")
    first, second = _lines(configured)  # at once, not after the flush interval
    assert "/fn/ok" in first and second.endswith("logged after the request")


async def test_a_full_batch_is_written_at_once(configured: io.StringIO) -> None:
    stream = CountingStream()
    logs.configure("text", "info", stream)
    for _ in range(logs.LogHandler.FLUSH_LINES):
        logs.log_access(EXCHANGES[0], 0.001)
    assert stream.writes == 1  # memory stays bounded however fast requests come
    assert len(_lines(stream)) == logs.LogHandler.FLUSH_LINES


def test_lines_from_the_loop_and_records_from_other_threads_are_all_written_whole(
    configured: io.StringIO,
) -> None:
    """Access lines are appended without the handler's lock while other threads' records
    write the waiting ones out: none is lost or split, and each thread's lines keep their
    order."""
    logs.configure("text", "info", configured)
    count = 3000

    async def requests() -> None:
        for number in range(count):
            logs.log_access(Exchange("GET", f"/fn/{number}", "/fn", 200, 1), 0.001)
            if number % 50 == 0:
                await asyncio.sleep(0)  # let the batch's timer fire now and then

    def records() -> None:
        for number in range(count):
            logging.getLogger("proxy").warning("record %d", number)

    other = threading.Thread(target=records)
    other.start()
    asyncio.run(requests())
    other.join()
    assert logs._handler is not None
    logs._handler.flush()
    lines = _lines(configured)
    paths = [int(line.split("/fn/")[1].split()[0]) for line in lines if " GET " in line]
    said = [int(line.rsplit(" ", 1)[1]) for line in lines if line.split()[2] == "WARNING"]
    assert paths == list(range(count)) and said == list(range(count))
    assert len(lines) == 2 * count


def _dumped(created: float, level: str, exchange: Exchange, duration_ms: float) -> str:
    """The JSON access line as json.dumps writes it: what the direct line must equal."""
    hint = logs.upstream_hint(exchange.status, exchange.error_type)
    entry = {
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": level.lower(),
        "logger": "proxy.access",
        "message": logs.access_message(exchange, duration_ms, hint),
        **logs.access_fields(exchange, duration_ms, hint),
    }
    return json.dumps(entry, default=str)


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    created=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    path=text,
    request_id=st.none() | text,
    detail=st.none() | text,
    trace_id=st.none() | text,
    duration_ms=st.floats(min_value=0, max_value=1e7, allow_nan=False),
)
def test_the_json_line_is_what_json_dumps_writes(
    created: float,
    path: str,
    request_id: str | None,
    detail: str | None,
    trace_id: str | None,
    duration_ms: float,
) -> None:
    formatter = logs.JsonFormatter()
    for exchange in [
        *EXCHANGES,
        Exchange("GET", path, "/fn", 502, 7, request_id, None, "upstream_unreachable", detail),
        Exchange("GET", path, "/fn", 200, 7, request_id, trace_id=trace_id),
    ]:
        hint = logs.upstream_hint(exchange.status, exchange.error_type)
        line = formatter.access_line(created, "WARNING", exchange, duration_ms, hint)
        assert line == _dumped(created, "WARNING", exchange, duration_ms)


@pytest.mark.parametrize("created", [0.0, 1.0005, 1.9995, 1.9999995, 1.99999949, 1795000000.123456])
def test_json_time_is_datetimes(created: float) -> None:
    formatter = logs.JsonFormatter()
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert formatter._time(created) == expected


def test_lines_still_flush_on_a_later_event_loop(configured: io.StringIO) -> None:
    """A flush scheduled on a loop that closed before it ran does not hold up the next loop's."""
    logs.configure("text", "info", configured)

    async def log_one() -> None:
        logs.log_access(EXCHANGES[0], 0.001)

    async def log_one_and_wait() -> None:
        logs.log_access(EXCHANGES[0], 0.001)
        await asyncio.sleep(logs.LogHandler.FLUSH_INTERVAL * 4)

    asyncio.run(log_one())  # its flush never runs: the loop is gone first
    assert _lines(configured) == []
    asyncio.run(log_one_and_wait())
    assert len(_lines(configured)) == 2


@pytest.mark.parametrize("created", [0.0, 1.0005, 1.9995, 1.9999995, 1.99999949, 1795000000.123456])
def test_text_time_is_what_logging_would_write(created: float) -> None:
    """The milliseconds come from a table, the second once a second: the text is logging's
    default formatTime's, to the millisecond."""
    record = logging.makeLogRecord({"created": created, "msecs": 0})
    record.msecs = int((created - int(created)) * 1000)
    expected = logging.Formatter().formatTime(record)
    assert logs.TextFormatter(colour=False)._time(created) == expected
