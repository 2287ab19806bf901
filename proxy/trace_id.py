"""X-Amzn-Trace-Id: the client's passed on as it came, or one made here, so that every request
can be found in the function's logs and in X-Ray by the id in the proxy's access line.

The header is forwarded like any other the client sends and never signed (proxy/signing.py
signs a fixed set): Lambda and X-Ray may add to it on the way.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from typing import Any, Final

from multidict import MultiMapping, istr

HEADER: Final = istr("X-Amzn-Trace-Id")  # an istr: looked up without a case-folded copy
LINE_START: Final = str(HEADER) + ": "  # a str: an istr in an f-string is formatted slowly
SHOWN: Final = 256  # characters of a client's id kept for the log


def trace_ids(clock: Callable[[], float] = time.time) -> Callable[[], str]:
    """A maker of ids in X-Ray's format, Root=1-<the time, 8 hex digits>-<96 bits, 24 hex
    digits>, the 96 bits unique rather than random (X-Ray asks no more): 64 random bits drawn
    once per process (workers are spawned, not forked, so each draws its own), then a counter.
    A closure over locals: 1 us an id under load, where 96 fresh random bits cost 3 us."""
    process = f"{random.SystemRandom().getrandbits(64):016x}"
    # From 2**32 up, hex() has at least 9 digits: its last 8 are the counter's low 32 bits, in
    # a third less time than a format spec.
    count = itertools.count(1 << 32 | random.SystemRandom().getrandbits(32)).__next__
    head: list[Any] = [-1, ""]  # the second, and the id's text up to the counter

    def new_trace_id() -> str:
        second = int(clock())
        if second != head[0]:
            head[:] = second, f"Root=1-{second & 0xFFFFFFFF:08x}-{process}"
        return f"{head[1]}{hex(count())[-8:]}"

    return new_trace_id


new_trace_id: Final = trace_ids()


def trace_header(headers: MultiMapping[str]) -> tuple[str, bytes]:
    """The request's trace id, and the header line to add upstream (none: the client sent it)."""
    given = headers.get(HEADER)
    if given is not None:
        return given[:SHOWN], b""
    made = new_trace_id()
    return made, (LINE_START + made + "\r\n").encode()
