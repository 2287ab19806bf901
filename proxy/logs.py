"""Log set-up (text or one JSON object a line) and the access log line."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TextIO

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


class AccessFormatter(Protocol):
    def access_line(self, created: float, levelname: str, fields: dict[str, Any]) -> str: ...


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = self._entry(record.created, record.levelname, record.name, record.getMessage())
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

    def access_line(self, created: float, levelname: str, fields: dict[str, Any]) -> str:
        entry = self._entry(created, levelname, access_log.name, access_message(fields))
        entry.update(fields)
        return json.dumps(entry, default=str)

    @staticmethod
    def _entry(created: float, levelname: str, logger: str, message: str) -> dict[str, Any]:
        return {
            "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": levelname.lower(),
            "logger": logger,
            "message": message,
        }


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
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created)

    def _time(self, created: float) -> str:
        """As logging's default (local time, milliseconds after a comma), formatted once a
        second rather than once a line."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._second_text},{int((created - second) * 1000):03d}"

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields and fields.get("event") == "access":
            return self.access_line(record.created, record.levelname, fields)
        return self._coloured(super().format(record), record.levelname)

    def access_line(self, created: float, levelname: str, fields: dict[str, Any]) -> str:
        line = f"{self._time(created)} {levelname:<7} {self._access_line(fields)}"
        return self._coloured(line, levelname)

    def _coloured(self, line: str, levelname: str) -> str:
        if self.colour and (colour := _LEVEL_COLOURS.get(levelname)):
            return line.replace(levelname, f"{colour}{levelname}{_RESET}", 1)
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


class AccessWriter:
    """Access lines written straight to the log handler's stream, formatted by its formatter.

    Under load, a LogRecord and logging's dispatch cost about 40 us per request, a fifth of the
    proxy's whole budget (bench/README.md), for a line whose level and destination are known
    at start-up. The line is the same one the formatter gives the logging path; the handler's
    lock keeps it whole beside lines that other threads log."""

    def __init__(self, handler: logging.StreamHandler[Any], formatter: AccessFormatter) -> None:
        self._handler = handler
        self._formatter = formatter

    def write(self, levelname: str, fields: dict[str, Any]) -> None:
        line = self._formatter.access_line(time.time(), levelname, fields)
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(line + "\n")
            handler.flush()
        except Exception:  # as logging does: a broken log stream never fails a request
            handler.handleError(logging.makeLogRecord({"msg": line}))
        finally:
            handler.release()


_access_writer: AccessWriter | None = None


def use_colour(stream: Any) -> bool:
    """https://no-color.org: NO_COLOR set (to anything) means no colour."""
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ


def configure(log_format: str, level: str, stream: TextIO | None = None) -> None:
    """Log to `stream` (stderr by default) in `log_format`, from `level` up."""
    # The logging HOWTO's "Optimization" switches: no thread, process or caller look-up for
    # every record; the proxy's lines use none of them. bench/README.md: -12 to -15 us/request.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    global _access_writer
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.addFilter(MalformedRequestFilter())
    formatter: JsonFormatter | TextFormatter
    if log_format == "json":
        formatter = JsonFormatter()
    else:
        formatter = TextFormatter(colour=use_colour(stream))
    handler.setFormatter(formatter)
    _access_writer = AccessWriter(handler, formatter)
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


def access_message(fields: dict[str, Any]) -> str:
    """The access line's message, as the JSON format's "message" carries it."""
    extra = f" {fields['outcome']}" if fields["outcome"] else ""
    if fields["detail"]:
        extra += f": {fields['detail']}"
    if hint := fields["hint"]:
        error_type = fields["upstream_error_type"]
        extra += f" {error_type}: {hint}" if error_type else f": {hint}"
    return (
        f"{fields['method']} {fields['path']} -> {fields['route']} {fields['status']} "
        f"{fields['duration_ms']:.1f}ms {fields['bytes']}B "
        f"id={fields['upstream_request_id'] or '-'}{extra}"
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
    if _access_writer is not None:
        _access_writer.write("WARNING" if level == logging.WARNING else "INFO", fields)
    else:  # logging not configured by the CLI (the app embedded, its tests): plain logging
        access_log.log(level, access_message(fields), extra={"fields": fields})
