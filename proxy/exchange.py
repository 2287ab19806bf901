"""The access record of one request: what the access log line is made of.

Its own module so that the log (proxy/logs.py) needs nothing of the request path: `--help` and
`check` load neither aiohttp nor the upstream client.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Exchange:
    """What one request did, for the access log and the metrics (proxy/metrics.py)."""

    method: str
    path: str
    route: str = "-"
    status: int = 0
    bytes_sent: int = 0
    request_id: str | None = None
    error_type: str | None = None
    outcome: str | None = None  # the error code, or how a stream ended abnormally
    detail: str | None = None  # what the proxy told the client, for its own 5xx errors
    hint: str | None = None  # what an upstream failure's body says it means (a 403's region)
    quiet: bool = False  # no access line: an answer of /_proxy/* (a refused one is logged)
    trace_id: str | None = None  # X-Amzn-Trace-Id, the client's or the proxy's (forwarded)
    bytes_received: int = 0  # the request body forwarded
    started: float = 0.0  # perf_counter() readings: when the request arrived,
    first_byte: float = 0.0  # and when the upstream's answer began (0: it never did)
