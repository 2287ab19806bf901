"""Log set-up (text or one JSON object a line) and the access log line."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import os
import sys
import time
from json.encoder import encode_basestring_ascii as _json_str  # json.dumps's own (in C)
from typing import Any, Final, TextIO

from proxy.exchange import Exchange

access_log = logging.getLogger("proxy.access")

# Silenced below ERROR at every level, debug included: botocore narrates every credential
# look-up (and renames its events by the hundred at start-up), logs a traceback for each failed
# refresh, which the proxy reports itself once per failure streak; urllib3 (botocore's HTTP
# client for STS, SSO and instance metadata) narrates its connections. `--log-level debug`
# shows the proxy's own decisions instead (proxy/trace.py).
QUIET_LIBRARIES: Final = ("botocore", "urllib3")

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


# ".000+00:00" to ".999+00:00": the JSON time's milliseconds and zone, by index.
_MILLISECONDS_UTC: Final = tuple(f".{n:03d}+00:00" for n in range(1000))


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        entry = self._entry(record.created, record.levelname, record.name, record.getMessage())
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

    def access_line(
        self,
        created: float,
        levelname: str,
        exchange: Exchange,
        duration_ms: float,
        hint: str | None,
    ) -> str:
        # What json.dumps writes for _entry() updated with access_fields(), written out
        # directly: a third of its cost, on every request of a container (JSON by default).
        # tests/test_logs.py checks the two are the same bytes (durations up to 1e7 ms among
        # them). f"{x:.1f}" is what json.dumps writes of round(x, 1) (both round correctly to
        # one decimal; repr keeps fixed notation below 1e16), and the message's text besides.
        duration = f"{duration_ms:.1f}"
        request_id, trace_id = exchange.request_id, exchange.trace_id
        error_type, outcome, detail = exchange.error_type, exchange.outcome, exchange.detail
        return (
            f'{{"time": "{self._time(created)}", "level": "{levelname.lower()}", '
            f'"logger": "{access_log.name}", '
            f'"message": {_json_str(_message(exchange, duration, hint))}, '
            f'"event": "access", "method": {_json_str(exchange.method)}, '
            f'"path": {_json_str(exchange.path)}, "route": {_json_str(exchange.route)}, '
            f'"status": {exchange.status}, "duration_ms": {duration}, '
            f'"bytes": {exchange.bytes_sent}, '
            f'"upstream_request_id": {"null" if request_id is None else _json_str(request_id)}, '
            f'"trace_id": {"null" if trace_id is None else _json_str(trace_id)}, '
            f'"upstream_error_type": {"null" if error_type is None else _json_str(error_type)}, '
            f'"outcome": {"null" if outcome is None else _json_str(outcome)}, '
            f'"detail": {"null" if detail is None else _json_str(detail)}, '
            f'"hint": {"null" if hint is None else _json_str(hint)}}}'
        )

    def _entry(self, created: float, levelname: str, logger: str, message: str) -> dict[str, Any]:
        return {
            "time": self._time(created),
            "level": levelname.lower(),
            "logger": logger,
            "message": message,
        }

    def _time(self, created: float) -> str:
        """datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"), with the
        date and time formatted once a second rather than once a line."""
        fraction, whole = math.modf(created)
        second = int(whole)
        microseconds = round(fraction * 1e6)  # as datetime rounds: half to even
        if microseconds >= 1_000_000:
            second += 1
            microseconds -= 1_000_000
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._second_text + _MILLISECONDS_UTC[microseconds // 1000]


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a traceback for each request its parser refuses; a client's bad bytes are
    not the proxy's error: one warning line says what was refused."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Looked up, not imported: `--help` and `check` never load aiohttp, and until something
        # has, none of its errors can be logged.
        exceptions = sys.modules.get("aiohttp.http_exceptions")
        error = record.exc_info[1] if record.exc_info else None
        if exceptions is not None and isinstance(error, exceptions.HttpProcessingError):
            record.msg = "refused a malformed request (%d): %s"
            record.args = (error.code, " ".join(error.message.split())[:300])
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


# ANSI colours for a terminal: status classes and log levels.
_RESET: Final = "\x1b[0m"
_STATUS_COLOURS: Final = {2: "\x1b[32m", 3: "\x1b[36m", 4: "\x1b[33m", 5: "\x1b[31m"}
_LEVEL_COLOURS: Final = {"WARNING": "\x1b[33m", "ERROR": "\x1b[31m", "CRITICAL": "\x1b[31m"}


# The text access line: time, level, method, status, duration, bytes, route, path, upstream id.
# ",000" to ",999": an index, where a format spec per line costs a fifth of the access line.
_MILLISECONDS: Final = tuple(f",{n:03d}" for n in range(1000))
_ACCESS_LINE: Final = "%s %-7s %-7s %3s %8.1fms %9dB %-12s %s id=%s"


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
        return self._second_text + _MILLISECONDS[int((created - second) * 1000)]

    def format(self, record: logging.LogRecord) -> str:
        if access := getattr(record, "access", None):
            return self.access_line(record.created, record.levelname, *access)
        return self._coloured(super().format(record), record.levelname)

    def access_line(
        self,
        created: float,
        levelname: str,
        exchange: Exchange,
        duration_ms: float,
        hint: str | None,
    ) -> str:
        # One %-format: a third of the cost of the f-string with a format spec per field.
        status: int | str = exchange.status
        if self.colour and (colour := _STATUS_COLOURS.get(exchange.status // 100)):
            status = f"{colour}{exchange.status:3d}{_RESET}"
        line = _ACCESS_LINE % (
            self._time(created),
            levelname,
            exchange.method,
            status,
            duration_ms,
            exchange.bytes_sent,
            exchange.route,
            exchange.path,
            exchange.request_id or "-",
        )
        if exchange.trace_id is not None:
            line += " trace=" + exchange.trace_id
        if exchange.outcome or exchange.detail or hint:
            line += _outcome_text(exchange.outcome, exchange.detail, exchange.error_type, hint)
        if self.colour:
            return self._coloured(line, levelname)
        return line

    def _coloured(self, line: str, levelname: str) -> str:
        if self.colour and (colour := _LEVEL_COLOURS.get(levelname)):
            return line.replace(levelname, f"{colour}{levelname}{_RESET}", 1)
        return line


class LogHandler(logging.StreamHandler[TextIO]):
    """The proxy's one log handler. Access lines wait in memory and go out in batches, one
    write per FLUSH_INTERVAL rather than one per request; any other line, and flush(), write
    the waiting access lines first, so the log keeps its order.

    Under load, a LogRecord and logging's dispatch cost about 40 us per request, and one write
    per line 15 us more (bench/README.md), for a line whose level and destination are known at
    start-up. An access line is the formatter's own (the same text as through logging), so it
    needs no LogRecord. Waiting lines are written with the handler's lock held, which keeps
    them whole beside other threads' records; they wait in a deque, appended to without it."""

    FLUSH_INTERVAL: Final = 0.05  # seconds: too short to notice on a terminal
    FLUSH_LINES: Final = 512  # memory stays bounded under any load

    def __init__(self, stream: TextIO, formatter: JsonFormatter | TextFormatter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.access_formatter = formatter  # its access_line(), without a LogRecord
        self._waiting: collections.deque[str] = collections.deque()
        self._flush_on: asyncio.AbstractEventLoop | None = None  # a flush is scheduled there

    def write_access(
        self, levelname: str, exchange: Exchange, duration_ms: float, hint: str | None
    ) -> None:
        line = self.access_formatter.access_line(
            time.time(), levelname, exchange, duration_ms, hint
        )
        # No lock (2 000 instructions a line): a deque's append and popleft are atomic, so a
        # line appended while another thread writes the waiting ones goes out next time.
        waiting = self._waiting
        waiting.append(line)
        if len(waiting) >= self.FLUSH_LINES:
            self.flush()
            return
        if self._flush_on is not None and not self._flush_on.is_closed():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to flush later (a test, a script): now
            self.flush()
        else:
            loop.call_later(self.FLUSH_INTERVAL, self.flush)
            self._flush_on = loop

    def _write_waiting(self) -> None:
        """With the lock held. A pending timer is left to find nothing: cancelling it from
        another thread (one that logs a line) would not be safe."""
        self._flush_on = None
        waiting = self._waiting
        if not waiting:
            return
        text = "\n".join([waiting.popleft() for _ in range(len(waiting))]) + "\n"
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # as logging does: a broken log stream never fails a request
            self.handleError(logging.makeLogRecord({"msg": text}))

    def emit(self, record: logging.LogRecord) -> None:
        self._write_waiting()  # logging.Handler.handle holds the lock
        super().emit(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_waiting()
            super().flush()


_handler: LogHandler | None = None


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
    global _handler
    if _handler is not None:
        _handler.flush()  # what it still holds, before it is replaced
    stream = stream or sys.stderr
    formatter: JsonFormatter | TextFormatter
    if log_format == "json":
        formatter = JsonFormatter()
    else:
        formatter = TextFormatter(colour=use_colour(stream))
    _handler = handler = LogHandler(stream, formatter)
    handler.addFilter(MalformedRequestFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
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


def _outcome_text(
    outcome: str | None, detail: str | None, error_type: str | None, hint: str | None
) -> str:
    text = f" {outcome}" if outcome else ""
    if detail:
        text += f": {detail}"
    if hint:
        text += f" {error_type}: {hint}" if error_type else f": {hint}"
    return text


def access_message(exchange: Exchange, duration_ms: float, hint: str | None) -> str:
    """The access line's message, as the JSON format's "message" carries it."""
    return _message(exchange, f"{duration_ms:.1f}", hint)


def _message(exchange: Exchange, duration: str, hint: str | None) -> str:
    """access_message() with the duration already written: the JSON line writes the same text
    in its "duration_ms" field."""
    message = (
        f"{exchange.method} {exchange.path} -> {exchange.route} {exchange.status} "
        f"{duration}ms {exchange.bytes_sent}B id={exchange.request_id or '-'}"
    )
    if exchange.outcome or exchange.detail or hint:
        message += _outcome_text(exchange.outcome, exchange.detail, exchange.error_type, hint)
    return message


def access_fields(exchange: Exchange, duration_ms: float, hint: str | None) -> dict[str, Any]:
    """The access line's structured fields, as the JSON format carries them."""
    return {
        "event": "access",
        "method": exchange.method,
        "path": exchange.path,
        "route": exchange.route,
        "status": exchange.status,
        "duration_ms": round(duration_ms, 1),
        "bytes": exchange.bytes_sent,
        "upstream_request_id": exchange.request_id,
        "trace_id": exchange.trace_id,
        "upstream_error_type": exchange.error_type,
        "outcome": exchange.outcome,
        "detail": exchange.detail,
        "hint": hint,
    }


def log_access(exchange: Exchange, seconds: float) -> None:
    if exchange.outcome is None and exchange.status < 400:  # routine, and no hint applies
        hint = None
        level = logging.INFO
    else:
        hint = exchange.hint or upstream_hint(exchange.status, exchange.error_type)
        if exchange.outcome == "preflight_forwarded":
            hint = PREFLIGHT_HINT
        routine = not hint and exchange.outcome in ROUTINE_OUTCOMES
        level = logging.INFO if routine else logging.WARNING
    if not access_log.isEnabledFor(level):
        return
    duration_ms = seconds * 1000
    if _handler is not None:
        _handler.write_access(
            "INFO" if level == logging.INFO else "WARNING", exchange, duration_ms, hint
        )
    else:  # logging not configured by the CLI (the app embedded, its tests): plain logging
        fields = access_fields(exchange, duration_ms, hint)
        access_log.log(
            level,
            access_message(exchange, duration_ms, hint),
            extra={"fields": fields, "access": (exchange, duration_ms, hint)},
        )
