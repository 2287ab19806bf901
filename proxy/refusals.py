"""What the proxy says, and logs, about a request its HTTP parser refused: the request line the
parser's reason shows, printable, and the error the client gets (proxy/_aiohttp.py answers it).
Pure: no aiohttp."""

from __future__ import annotations

import ast
import re
from typing import Final
from urllib.parse import quote

from proxy.errors import BadRequest, HeadTooLarge, ProxyError
from proxy.exchange import Exchange

# aiohttp's C parser (llhttp) shows the line it refused as a bytes repr on a line of its own:
# "Invalid char in url query:\n\n  b'GET /search?q=caf\\xc3\\xa9 HTTP/1.1'\n   ^".
_REFUSED_LINE: Final = re.compile(r"^\s*(b'.*'|b\".*\")$", re.MULTILINE)
# Where a parser's reason goes on to show the client's bytes (which may hold a header's value).
_SHOWN_BYTES: Final = re.compile(r":?\s*(?:bytearray\()?b['\"]|:?\n")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
CURL_HINT: Final = (
    "with curl, let it encode the query: curl -G localhost:8080/search --data-urlencode "
    "'q=café' (it writes a space as '+', which the function gets as a literal '+': write a "
    "space as %20)"
)


def request_line(reason: str) -> tuple[str, bytes] | None:
    """(method, target) of the request line a parser error shows, if it shows one."""
    shown = _REFUSED_LINE.search(reason)
    if shown is None:
        return None
    try:
        line = ast.literal_eval(shown[1])  # only ever a bytes literal: safe
    except (ValueError, SyntaxError):
        return None
    parts = line.split(b" ") if isinstance(line, bytes) else []
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    return printable(parts[0][:20]), parts[1]


def printable(target: bytes) -> str:
    """A refused request-target as text for a log line or a message: UTF-8, control
    characters escaped (the parser refused it, so it may hold anything but CR LF)."""
    text = target.decode("utf-8", "replace")
    return _CONTROL.sub(lambda char: f"\\x{ord(char[0]):02x}", text)


def short_reason(reason: str) -> str:
    """A parser's reason without the bytes it quotes: "Invalid char in url query"."""
    return " ".join(_SHOWN_BYTES.split(reason, maxsplit=1)[0].split())[:200]


def non_ascii_target(target: bytes) -> BadRequest | None:
    """The proxy's answer to a request-target with raw non-ASCII bytes (RFC 9112 allows only
    ASCII), which curl sends for a query typed as `?q=café`."""
    if target.isascii():
        return None
    where = "query" if target.partition(b"?")[0].isascii() else "path"
    text = printable(target)
    first = next(char for char in text if not char.isascii())
    example = f" ({first} is {quote(first)})" if first != "\ufffd" else ""
    message = (
        f"the request target {text[:200]!r} has non-ASCII characters in its {where}; HTTP "
        f"allows only ASCII there: percent-encode them as UTF-8{example}"
    )
    return BadRequest(f"{message}; {CURL_HINT}" if where == "query" else message)


def refused_request(status: int, reason: str) -> tuple[ProxyError, Exchange]:
    """The error for a request the parser refused with `reason`, and its access record."""
    method, target = request_line(reason) or ("-", b"-")
    folded = " ".join(reason.split())
    error = non_ascii_target(target) or BadRequest(f"malformed HTTP request: {folded[:300]}")
    exchange = Exchange(method, printable(target[:2048]), status=status)
    exchange.outcome = error.code
    exchange.detail = short_reason(reason)
    return error, exchange


def refused_head(error: HeadTooLarge, start: bytes, limit: int) -> Exchange:
    """The access record of a head over max_head_size: the method and path it began with, if it
    got that far."""
    line = start.partition(b"\r\n")[0].lstrip(b"\r\n").split(b" ")
    method, target = (printable(line[0][:20]), line[1]) if len(line) > 2 else ("-", b"-")
    exchange = Exchange(method, printable(target.partition(b"?")[0][:2048]), status=error.status)
    exchange.outcome = error.code
    exchange.detail = f"head over max_head_size ({limit} bytes)"
    return exchange
