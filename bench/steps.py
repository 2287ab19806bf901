"""What each pure-Python step of the proxy's request path costs, one step at a time.

These mirror proxy.app.handle and proxy.forward.forward for the GET-small scenario (the request
wrk sends: only a Host header; the answer nginx gives: seven headers). What is not here (the
aiohttp server and client, the event loop, the socket writes) is seen in the profile instead.
Keep this in step with proxy/: a step that no longer runs is reported, not fatal.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from bench.micro import ACCESS_KEY, SECRET_KEY, per_call_us


def _steps() -> list[tuple[str, Callable[[], object]]]:
    from proxy.aws_config import Resolved
    from proxy.credentials import Identity
    from proxy.exchange import Exchange
    from proxy.headers import holds_control_bytes, request_header_lines, response_header_lines
    from proxy.logs import log_access
    from proxy.routing import Router, Upstream
    from proxy.settings import Route
    from proxy.signing import EMPTY_SHA256, AmzClock, Credentials, sign_request
    from proxy.skew import Clocks
    from proxy.target import split_target
    from proxy.wire import request_head

    amz_clock = AmzClock()
    upstream = Upstream.from_route(
        Route(prefix="/", url="http://127.0.0.1:9"), Resolved("us-east-1", "bench"), Identity()
    )
    router = Router([upstream])
    credentials = Credentials(ACCESS_KEY, SECRET_KEY)
    client_headers = CIMultiDictProxy(CIMultiDict([("Host", "127.0.0.1:8080")]))
    answer_headers = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Server", "nginx/1.22.1"),
                ("Date", "Sat, 21 Nov 2026 05:40:55 GMT"),
                ("Content-Type", "application/json"),
                ("Content-Length", "112"),
                ("Connection", "keep-alive"),
                ("x-amzn-RequestId", "aa516af68d9aed6fde5da642a99c4ec2"),
                ("X-Amzn-Trace-Id", "bench"),
            ]
        )
    )
    client_raw = tuple((name.encode(), value.encode()) for name, value in client_headers.items())
    answer_raw = tuple((name.encode(), value.encode()) for name, value in answer_headers.items())
    answer_lines = response_header_lines(answer_raw, None)
    body_10k = b"x" * 10240

    def signing() -> object:
        return sign_request(
            "GET",
            upstream.host_header,
            upstream.path_for("/small"),
            "",
            EMPTY_SHA256,
            credentials,
            upstream.region,
            upstream.service,
            amz_clock(),
        )

    # What issue #13 adds to every request: its origin's clock looked up, read, and the answer's
    # Date observed (the same second as the last answer's: one bytes compare).
    clocks = Clocks(tell=False)  # the bench's answer Date is old: nothing to warn about
    answer_date = b"Sat, 21 Nov 2026 05:40:55 GMT"
    clocks.get(upstream.origin, upstream.host).observe(answer_date)

    def skew_clock() -> None:
        clock = clocks.get(upstream.origin, upstream.host)
        clock()
        clock.observe(answer_date)

    def exchange_and_log() -> None:
        exchange = Exchange("GET", "/small")
        exchange.path, exchange.route, exchange.status = "/small", "/", 200
        exchange.request_id = "aa516af68d9aed6fde5da642a99c4ec2"
        log_access(exchange, 0.0012)

    access = logging.getLogger("proxy.access")

    def logged_on() -> None:
        access.setLevel(logging.INFO)

    def logged_off() -> None:
        access.setLevel(logging.WARNING)

    return [
        ("split_target('/small')", lambda: split_target("/small")),
        ("split_target('/users/42?b=2&a=1')", lambda: split_target("/users/42?b=2&a=1")),
        ("router.match", lambda: router.match("/small")),
        ("request_header_lines", lambda: request_header_lines(client_headers, client_raw)),
        ("datetime.now(UTC)", lambda: datetime.now(UTC)),
        ("x-amz-date (AmzClock, one for all)", amz_clock),
        ("x-amz-date per origin + Date observed (skew.py)", skew_clock),
        ("sign_request (x-amz-date cached per second)", signing),
        ("sha256 of a 10 KiB body", lambda: hashlib.sha256(body_10k).hexdigest()),
        (
            "signed request head (wire.request_head)",
            lambda: request_head(
                "GET", upstream, "/small", "", b"", 0, EMPTY_SHA256, credentials, amz_clock()
            ),
        ),
        ("response_header_lines", lambda: response_header_lines(answer_raw, None)),
        ("holds_control_bytes (those lines)", lambda: holds_control_bytes(answer_lines)),
        ("Exchange + log_access, log on", _with(logged_on, exchange_and_log)),
        ("Exchange + log_access, log off", _with(logged_off, exchange_and_log)),
    ]


def _with(setup: Callable[[], None], step: Callable[[], None]) -> Callable[[], object]:
    """A step that first puts logging in the state it needs (setup runs once, on first call)."""
    done: list[bool] = []

    def run() -> None:
        if not done:
            setup()
            done.append(True)
        step()

    return run


def steps(workdir: Path, repeat: int, seconds: float = 0.1) -> list[dict[str, Any]]:
    from proxy import logs

    root, access = logging.getLogger(), logging.getLogger("proxy.access")
    saved = (list(root.handlers), root.level, access.level)
    results: list[dict[str, Any]] = []
    # As the proxy logs by default: the text format, one line a request, to a file, in
    # batches (which needs a running event loop).
    with (workdir / "steps-access.log").open("a") as log_file:
        logs.configure("text", "info", log_file)

        async def measure() -> None:
            _measure(_steps(), repeat, seconds, results)

        try:
            asyncio.run(measure())
        except Exception as error:
            results.append({"step": "(set-up)", "us": None, "error": _why(error)})
        finally:
            if logs._handler is not None:
                logs._handler.flush()  # the lines still waiting, before the file closes
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
            access.setLevel(saved[2])
            logs._handler = None
    return results


def _why(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _measure(
    steps: list[tuple[str, Callable[[], object]]],
    repeat: int,
    seconds: float,
    results: list[dict[str, Any]],
) -> None:
    for name, step in steps:
        try:
            results.append({"step": name, "us": per_call_us(step, repeat, min_seconds=seconds)})
        except Exception as error:  # a step proxy/ no longer has: say so, go on
            results.append({"step": name, "us": None, "error": _why(error)})
