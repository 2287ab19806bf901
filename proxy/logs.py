"""Log set-up (text or one JSON object a line) and the access log line."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp.http_exceptions import HttpProcessingError

from proxy.upstream import Exchange

access_log = logging.getLogger("proxy.access")

# What an upstream 403 usually means, by x-amzn-ErrorType.
FORBIDDEN_HINTS: Final = {
    "InvalidSignatureException": "AWS rejected the signature: check the clock and the secret "
    "key; if both are right, report the request path as a bug",
    "AccessDeniedException": "the identity lacks permission: allow lambda:InvokeFunctionUrl and, "
    "for Function URLs created since October 2025, lambda:InvokeFunction on the function",
    "UnrecognizedClientException": "AWS does not know these credentials: check the access key",
    "ExpiredTokenException": "the credentials have expired: refresh them (aws sso login, or new "
    "temporary keys)",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a traceback for each request its parser refuses; a client's bad bytes are
    not the proxy's error: one warning line says what was refused."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            error = record.exc_info[1]
            record.msg = "refused a malformed request (%d): %s"
            record.args = (error.code, " ".join(error.message.split())[:300])
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


# ANSI colours for a terminal: status classes and log levels.
_RESET: Final = "\x1b[0m"
_STATUS_COLOURS: Final = {2: "\x1b[32m", 3: "\x1b[36m", 4: "\x1b[33m", 5: "\x1b[31m"}
_LEVEL_COLOURS: Final = {"WARNING": "\x1b[33m", "ERROR": "\x1b[31m", "CRITICAL": "\x1b[31m"}


class TextFormatter(logging.Formatter):
    """Readable lines; access lines in aligned columns, coloured on a terminal."""

    def __init__(self, colour: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields and fields.get("event") == "access":
            line = f"{self.formatTime(record)} {record.levelname:<7} {self._access_line(fields)}"
        else:
            line = super().format(record)
        if self.colour and (colour := _LEVEL_COLOURS.get(record.levelname)):
            line = line.replace(record.levelname, f"{colour}{record.levelname}{_RESET}", 1)
        return line

    def _access_line(self, f: dict[str, Any]) -> str:
        status = f"{f['status']:3d}"
        if self.colour and (colour := _STATUS_COLOURS.get(f["status"] // 100)):
            status = f"{colour}{status}{_RESET}"
        extra = f" {f['outcome']}" if f["outcome"] else ""
        if f.get("detail"):
            extra += f": {f['detail']}"
        if f.get("hint"):
            error_type = f["upstream_error_type"]
            extra += f" {error_type}: {f['hint']}" if error_type else f": {f['hint']}"
        return (
            f"{f['method']:<7} {status} {f['duration_ms']:>8.1f}ms {f['bytes']:>9}B "
            f"{f['route']:<12} {f['path']} id={f['upstream_request_id'] or '-'}{extra}"
        )


def use_colour(stream: Any) -> bool:
    """https://no-color.org: NO_COLOR set (to anything) means no colour."""
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ


def configure(log_format: str, level: str) -> None:
    # The logging HOWTO's "Optimization" switches: no thread, process or caller look-up for
    # every record; the proxy's lines use none of them. bench/README.md: -12 to -15 us/request.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MalformedRequestFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(colour=use_colour(sys.stderr)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # botocore narrates every credential look-up, and logs a traceback for each failed refresh;
    # the proxy reports outcomes itself, once per failure streak.
    logging.getLogger("botocore").setLevel(logging.DEBUG if level == "debug" else logging.ERROR)
    logging.captureWarnings(True)


def upstream_hint(status: int, error_type: str | None) -> str | None:
    """What an upstream failure usually means, from its status and x-amzn-ErrorType."""
    if status == 403:
        return FORBIDDEN_HINTS.get(error_type or "")
    if status == 429:
        return (
            "Lambda throttled the call: the function's reserved concurrency or the account's "
            "concurrency limit is used up; retry with back-off or raise the limit"
        )
    if status >= 500 and error_type:
        return (
            "AWS Lambda itself failed the invocation (the function may have crashed or timed out)"
        )
    return None


# Outcomes that are part of normal operation, logged at INFO.
ROUTINE_OUTCOMES: Final = frozenset({None, "cors_preflight", "client_disconnected"})
PREFLIGHT_HINT: Final = (
    "a CORS preflight was forwarded to the function because CORS is off: start the proxy with "
    "--cors-origin <the page's origin> to have it answered here"
)


def log_access(exchange: Exchange, seconds: float) -> None:
    hint = upstream_hint(exchange.status, exchange.error_type)
    if exchange.outcome == "preflight_forwarded":
        hint = PREFLIGHT_HINT
    level = logging.WARNING if hint or exchange.outcome not in ROUTINE_OUTCOMES else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    fields = {
        "event": "access",
        "method": exchange.method,
        "path": exchange.path,
        "route": exchange.route,
        "status": exchange.status,
        "duration_ms": round(seconds * 1000, 1),
        "bytes": exchange.bytes_sent,
        "upstream_request_id": exchange.request_id,
        "upstream_error_type": exchange.error_type,
        "outcome": exchange.outcome,
        "detail": exchange.detail,
        "hint": hint,
    }
    extra = f" {exchange.outcome}" if exchange.outcome else ""
    if exchange.detail:
        extra += f": {exchange.detail}"
    if hint:
        extra += f" {exchange.error_type}: {hint}" if exchange.error_type else f": {hint}"
    access_log.log(
        level,
        "%s %s -> %s %d %.1fms %dB id=%s%s",
        exchange.method,
        exchange.path,
        exchange.route,
        exchange.status,
        seconds * 1000,
        exchange.bytes_sent,
        exchange.request_id or "-",
        extra,
        extra={"fields": fields},
    )
