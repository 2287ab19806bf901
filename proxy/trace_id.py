"""X-Amzn-Trace-Id: the client's passed on as it came, or one made here, so that every request
can be found in the function's logs and in X-Ray by the id in the proxy's access line.

The header is forwarded like any other the client sends and never signed (proxy/signing.py
signs a fixed set): Lambda and X-Ray may add to it on the way.
"""

from __future__ import annotations

import random
import time
from typing import Final

from multidict import MultiMapping

HEADER: Final = "X-Amzn-Trace-Id"
SHOWN: Final = 256  # characters of a client's id kept for the log

# Seeded from os.urandom once per process (workers are spawned, not forked): an id needs to be
# unique, not secret, and SystemRandom costs a system call per id (2.7 us against 0.5).
_bits: Final = random.Random().getrandbits  # noqa: S311


def new_trace_id(now: float | None = None) -> str:
    """X-Ray's format: Root=1-<the time, 8 hex digits>-<96 random bits, 24 hex digits>."""
    epoch = int(time.time() if now is None else now)
    return f"Root=1-{epoch:08x}-{_bits(96):024x}"


def trace_header(headers: MultiMapping[str]) -> tuple[str, bytes]:
    """The request's trace id, and the header line to add upstream (none: the client sent it)."""
    given = headers.get(HEADER)
    if given is not None:
        return given[:SHOWN], b""
    made = new_trace_id()
    return made, f"{HEADER}: {made}\r\n".encode()
