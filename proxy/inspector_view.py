"""What the inspector's page shows of a recorded request, as pure functions: the list's row, the
detail (headers redacted, bodies as text, JSON or a size, timings, what was signed, the
diagnosis) and the request as a curl command against the proxy. Rendered only when a page asks.

Never a secret: Authorization, X-Amz-Security-Token and the proxy's token are replaced, cookie
values masked, the session token left out of the canonical request (proxy/trace.py), and any
text that still holds the proxy's access token has it replaced (`scrub`).
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from collections.abc import Iterable
from typing import Any, Final

from proxy.inspector import Entry
from proxy.logs import upstream_hint
from proxy.trace import shown_signature

TIMINGS: Final = ("credentials_ms", "signing_ms", "connect_ms", "first_byte_ms", "total_ms")

REDACTED: Final = "<redacted>"
MASKED: Final = "<masked>"
# Headers whose whole value is a credential (the scheme of an Authorization is kept).
SECRET: Final = frozenset(
    {"authorization", "proxy-authorization", "x-amz-security-token", "x-proxy-token"}
)
SCHEMED: Final = frozenset({"authorization", "proxy-authorization"})  # their scheme is shown
SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,40}")  # Bearer, Basic, AWS4-HMAC-SHA256
DIAGNOSIS: Final = "x-proxy-diagnosis"
# Left out of the curl command: curl frames the body and names the host itself; the hop-by-hop
# headers are not the request's; credentials are never shown (the proxy's token is named by its
# environment variable instead) and the proxy drops the client's Authorization and X-Amz-*
# before signing anyway; cookies are only shown masked, and a masked cookie would be a wrong one.
NOT_IN_CURL: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "cookie",
        *SECRET,
    }
)
TOKEN_VARIABLE: Final = "LAMBDA_URL_PROXY_ACCESS_TOKEN"  # noqa: S105 - a variable's name
JSON_TYPES: Final = ("application/json", "+json")


def redact(name: str, value: str) -> str:
    """A header's value as the page may show it."""
    lower = name.lower()
    if lower in SECRET:
        scheme, space, _ = value.partition(" ")
        if space and lower in SCHEMED and SCHEME.fullmatch(scheme):
            return f"{scheme} {REDACTED}"
        return REDACTED
    if lower == "cookie":
        return "; ".join(
            f"{pair.partition('=')[0].strip()}={MASKED}" for pair in value.split(";") if pair
        )
    if lower == "set-cookie":  # name=value, then attributes (Path, HttpOnly...) kept
        first, semicolon, attributes = value.partition(";")
        return f"{first.partition('=')[0].strip()}={MASKED}{semicolon}{attributes}"
    return value


def shown_headers(pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    return [[name, redact(name, value)] for name, value in pairs]


def _decoded(pairs: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(n.decode("latin-1"), v.decode("utf-8", "replace")) for n, v in pairs]


def response_headers(entry: Entry) -> list[tuple[str, str]]:
    """The answer's headers as the client got them (the upstream's, less the hop-by-hop ones;
    or the proxy's own answer's), without the CORS headers the proxy adds."""
    lines = entry.capture.response_lines.split(b"\r\n")
    return _decoded((name, value) for name, _, value in map(_split, lines) if name)


def _split(line: bytes) -> tuple[bytes, bytes, bytes]:
    return line.partition(b": ")


def _header(pairs: Iterable[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in pairs if key.lower() == name), None)


def body_view(data: bytes | bytearray, size: int, content_type: str | None) -> dict[str, Any]:
    """A body as the page shows it: JSON pretty-printed, text as it is, binary as its size;
    `truncated` when the ring kept only its beginning."""
    view: dict[str, Any] = {"size": size, "truncated": len(data) < size, "kind": "none"}
    if not size:
        return view
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        if view["truncated"]:  # perhaps cut inside a character
            text = bytes(data).decode("utf-8", "ignore")
            if not text or "\x00" in text:
                view["kind"] = "binary"
                return view
        else:
            view["kind"] = "binary"
            return view
    if "\x00" in text:
        view["kind"] = "binary"
        return view
    kind = "text"
    if not view["truncated"] and (
        (content_type or "").split(";")[0].strip().lower().endswith(JSON_TYPES)
        or text.lstrip()[:1] in ("{", "[")
    ):
        with contextlib.suppress(ValueError):
            text, kind = json.dumps(json.loads(text), indent=2, ensure_ascii=False), "json"
    view.update(kind=kind, text=text)
    return view


def _ms(start: float | None, end: float | None) -> float | None:
    return round((end - start) * 1000, 3) if start and end else None


def timings(entry: Entry) -> dict[str, float | None]:
    """The steps' durations; only the total for a request that passed with no page open (its
    clock readings were not taken). A forwarded request connects, then signs; an invoked one
    (proxy/invoke.py) signs, then connects: each step counts from the one before it."""
    total = round(entry.duration * 1000, 3)
    steps = entry.steps
    if steps is None:
        return dict.fromkeys(TIMINGS, None) | {"total_ms": total}
    waited = steps.waited
    ready = steps.ready or waited or steps.started  # credentials in hand and body read
    connected, signed = steps.connected, steps.signed_at or None
    connects_first = connected is not None and (signed is None or connected <= signed)
    return {
        "credentials_ms": _ms(steps.started, waited) if waited else 0.0,
        "signing_ms": _ms(connected if connects_first else ready, signed),
        "connect_ms": _ms(ready if connects_first else signed, connected),
        "first_byte_ms": _ms(signed if connects_first else connected, steps.first_byte),
        "total_ms": total,
    }


def summary(entry: Entry) -> dict[str, Any]:
    """The list's row."""
    exchange = entry.exchange
    return {
        "id": entry.id,
        "time": entry.time,
        "method": exchange.method,
        "path": entry.target,
        "route": exchange.route,
        "status": exchange.status,
        "duration_ms": round(entry.duration * 1000, 1),
        "bytes": exchange.bytes_sent,
        "request_id": exchange.request_id,
        "outcome": exchange.outcome,
    }


def signature(entry: Entry) -> dict[str, Any] | None:
    """What was signed, or None: never signed, not recorded (no page open) or not signed at
    all (a URL of AuthType NONE); `not_signed` says which."""
    signed = entry.steps and entry.steps.signed_as
    if not signed or signed.upstream.unsigned:
        return None
    request, to_sign, headers = shown_signature(signed)
    return {"canonical_request": request, "string_to_sign": to_sign, "signed_headers": headers}


def diagnosis(entry: Entry, code: str | None) -> str | None:
    """What the access line explains (a refusal's review, proxy/review.py, or the upstream's
    error type), after the code of the `X-Proxy-Diagnosis` the answer carried, if any."""
    exchange = entry.exchange
    explained = (
        exchange.hint or upstream_hint(exchange.status, exchange.error_type) or exchange.detail
    )
    return f"{code}: {explained}" if code and explained else code or explained


def not_signed(entry: Entry) -> str | None:
    """Why the page shows no signature, or None when it shows one."""
    steps = entry.steps
    if steps is None:
        return "not recorded: no inspector page was open when it passed"
    if steps.signed_as is None:
        return "not signed: the proxy answered itself"
    if steps.signed_as.upstream.unsigned:
        return "not signed: the route's function URL has AuthType NONE"
    return None


def detail(entry: Entry, token: str | None) -> dict[str, Any]:
    """Everything the page shows of one request; `token` (the proxy's access token) is
    scrubbed from all of it."""
    request_headers = entry.headers
    answer_headers = response_headers(entry)
    capture = entry.capture
    exchange = entry.exchange
    data = {
        **summary(entry),
        "http_version": "{}.{}".format(*entry.version),
        "request_headers": shown_headers(request_headers),
        "response_headers": shown_headers(answer_headers),
        "request_body": body_view(
            capture.request_body, entry.request_size, _header(request_headers, "content-type")
        ),
        "response_body": body_view(
            capture.response_body, entry.response_size, _header(answer_headers, "content-type")
        ),
        "timings": timings(entry),
        "signature": signature(entry),
        "not_signed": not_signed(entry),
        "diagnosis": diagnosis(entry, _header(answer_headers, DIAGNOSIS)),
        "upstream_error_type": exchange.error_type,
        "curl": curl(entry, token is not None),
        "replayable": entry.request_size == len(capture.request_body),
    }
    return scrub(data, token)


def scrub(data: dict[str, Any], token: str | None) -> dict[str, Any]:
    """`data` with every occurrence of the proxy's access token replaced, wherever it hides (a
    query string, a body, a header the redaction did not know)."""
    if not token:
        return data
    text = json.dumps(data)
    encoded = json.dumps(token)[1:-1]
    if encoded not in text:
        return data
    scrubbed: dict[str, Any] = json.loads(text.replace(encoded, REDACTED))
    return scrubbed


def curl(entry: Entry, with_token: bool) -> str:
    """The request as a curl command against the proxy, as the client addressed it: it needs no
    AWS knowledge, the proxy signs it again. The proxy's token, when it needs one, comes from
    its environment variable; a body the ring holds only the beginning of, or that is not text,
    is read from a file (`body.bin`) the user provides."""
    method = entry.exchange.method
    capture = entry.capture
    has_body = entry.request_size > 0
    args = ["curl"]
    if method == "HEAD":
        args.append("--head")
    elif not ((method == "GET" and not has_body) or (method == "POST" and has_body)):
        args += ["-X", method]
    args.append(f"http://{entry.host or '127.0.0.1'}{entry.target}")
    for name, value in entry.headers:
        if name.lower() not in NOT_IN_CURL:
            args += ["-H", f"{name}: {value}" if value else f"{name};"]
    command = shlex.join(args)
    if with_token:
        command += f' -H "X-Proxy-Token: ${TOKEN_VARIABLE}"'
    if has_body:
        body = bytes(capture.request_body)
        view = body_view(body, entry.request_size, None)
        if view["kind"] in ("text", "json") and not view["truncated"]:
            command += " --data-binary " + shlex.quote(body.decode("utf-8"))
        else:
            command += " --data-binary @body.bin"
    return command


def event(entry: Entry, token: str | None) -> bytes:
    """A row as one Server-Sent Event."""
    data = json.dumps(scrub(summary(entry), token))
    return b"id: %d\nevent: request\ndata: %s\n\n" % (entry.id, data.encode())
