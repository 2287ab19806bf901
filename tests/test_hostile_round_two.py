"""Hostile input, round two (issue #12): each finding of the adversarial review, reproduced through
the installed command with raw bytes on a socket, as the attacker would send them."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
from typing import Any

import pytest

from tests.fake_function_url import FakeFunctionUrl

# Not in the development loop (-m "not slow"): each test starts the installed command.
pytestmark = pytest.mark.slow

TOKEN = "round-two-token"


async def send(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Write `data`, read until the proxy closes the connection or `timeout` passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        received = b""
        try:
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    received += chunk
        except TimeoutError:
            pass
        return received
    finally:
        writer.close()


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The Content-Length-framed responses in `data`: (status, headers, body)."""
    found = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        found.append((int(lines[0].split()[1]), headers, rest[:length]))
        data = rest[length:]
    return found


def echo(body: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(body)
    return decoded


# --- 1. compressed request bodies pass byte for byte ----------------------------------------------

COMPRESSED = gzip.compress(b"A" * 1000, mtime=0)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_gzip_request_body_reaches_the_function_as_sent(
    started: Any, fake: FakeFunctionUrl, framing: str
) -> None:
    proxy = await started()
    if framing == "chunked":
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(COMPRESSED), COMPRESSED)
        length = b"Transfer-Encoding: chunked"
    else:
        body, length = COMPRESSED, b"Content-Length: %d" % len(COMPRESSED)
    answer = await send(
        proxy.port,
        b"POST /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: gzip\r\n"
        + length
        + b"\r\nConnection: close\r\n\r\n"
        + body,
    )
    [(status, _, reply)] = responses(answer)
    assert status == 200, answer[:300]
    seen = echo(reply)
    assert seen["body_length"] == len(COMPRESSED)
    assert seen["body_sha256"] == hashlib.sha256(COMPRESSED).hexdigest()
    assert ["Content-Encoding", "gzip"] in seen["headers"]
    assert fake.received[-1].verified and fake.received[-1].body == COMPRESSED


async def test_a_body_that_only_claims_to_be_gzip_is_forwarded_not_a_500(
    started: Any, fake: FakeFunctionUrl
) -> None:
    proxy = await started()
    answer = await send(
        proxy.port,
        b"POST /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 11\r\nConnection: close\r\n\r\nnot gzip!!!",
    )
    [(status, _, reply)] = responses(answer)
    assert status == 200 and echo(reply)["body"] == "not gzip!!!"
    assert "Traceback" not in "".join(proxy.lines)


async def test_a_gzip_bomb_is_forwarded_compressed_and_never_inflated(
    started: Any, fake: FakeFunctionUrl
) -> None:
    # 1 MiB of gzip that inflates to 1 GiB: decompressing it blocked the event loop for seconds.
    bomb = gzip.compress(b"\0" * (256 * 1024 * 1024), compresslevel=9, mtime=0)
    proxy = await started()
    head = (
        b"POST /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(bomb)
    )
    upload = asyncio.create_task(send(proxy.port, head + bomb, timeout=30))
    health = await send(
        proxy.port, b"GET /_proxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert responses(health)[0][0] == 200
    [(status, _, reply)] = responses(await upload)
    assert status == 200 and echo(reply)["body_length"] == len(bomb)


# --- 3. blind cross-site requests -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (
            b"Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: image\r\n",
            403,
        ),
        (b"Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\n", 403),
        (b"Sec-Fetch-Site: cross-site\r\nOrigin: http://evil.test\r\n", 403),
        (b"Sec-Fetch-Site: same-site\r\nOrigin: http://evil.test\r\n", 403),
        (b"Sec-Fetch-Site: cross-site\r\nOrigin: http://localhost:5173\r\n", 200),  # a dev page
        (b"Sec-Fetch-Site: same-site\r\n", 200),
        (b"Sec-Fetch-Site: same-origin\r\n", 200),
        (b"Sec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\n", 200),  # typed in the bar
        (b"", 200),  # curl, a dev server's proxy
    ],
    ids=[
        "img",
        "navigation",
        "cors-remote",
        "same-site-remote",
        "cors-loopback",
        "same-site",
        "same-origin",
        "none",
        "no-fetch-metadata",
    ],
)
async def test_requests_another_site_made_are_refused(
    started: Any, fake: FakeFunctionUrl, headers: bytes, status: int
) -> None:
    proxy = await started()
    answer = await send(
        proxy.port,
        b"GET /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"Connection: close\r\n\r\n",
    )
    [(got, received, _)] = responses(answer)
    assert got == status, answer[:400]
    if status == 403:
        assert received["x-proxy-error"] == "origin_not_allowed"
        assert fake.received == []
    else:
        assert fake.received[-1].verified


# --- 4. DNS rebinding on a wide bind --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "flags", "status"),
    [
        ("evil.example", [], 403),
        ("evil.example:8080", [], 403),
        ("127.0.0.1:8080", [], 200),
        ("localhost", [], 200),
        ("10.1.2.3:8080", [], 200),  # an IP literal: no name to re-point
        ("[::1]:8080", [], 200),
        ("lambda-url-proxy:8080", [], 200),  # a Compose service name
        ("proxy.internal", ["--allowed-host", "proxy.internal"], 200),
        ("a.svc.cluster.local", ["--allowed-host", ".svc.cluster.local"], 200),
        ("evil.example", ["--allowed-host", ".svc.cluster.local"], 403),
        ("evil.example", ["--allowed-host", "*"], 200),
    ],
)
async def test_a_wide_bind_answers_only_names_it_is_known_by(
    started: Any, fake: FakeFunctionUrl, host: str, flags: list[str], status: int
) -> None:
    proxy = await started("--host", "0.0.0.0", *flags)
    answer = await send(
        proxy.port, f"GET /fn/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    [(got, headers, body)] = responses(answer)
    assert got == status, answer[:400]
    if status == 403:
        assert headers["x-proxy-error"] == "host_not_allowed"
        assert "add it to allowed_hosts (--allowed-host evil.example)" in echo(body)["message"]
        assert fake.received == []


async def test_allowed_hosts_extends_a_loopback_bind_too(
    started: Any, fake: FakeFunctionUrl
) -> None:
    proxy = await started("--allowed-host", "dev.test")
    for host, status in (("dev.test", 200), ("10.1.2.3", 403), ("other.test", 403)):
        answer = await send(
            proxy.port, f"GET /fn/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        assert responses(answer)[0][0] == status, (host, answer[:300])


# --- 5. a chunked request's trailer never becomes the next request's header -----------------------


@pytest.mark.parametrize(("path", "status"), [(b"/fn/a", 200), (b"/nowhere", 404)])
async def test_a_trailer_never_reaches_the_function_as_a_header(
    started: Any, fake: FakeFunctionUrl, path: bytes, status: int
) -> None:
    """Whether the chunked request is forwarded or refused before its body is read."""
    proxy = await started()
    answer = await send(
        proxy.port,
        b"POST %s HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        % path
        + b"5\r\nhello\r\n0\r\nX-T1: a\r\nCookie: session=attacker\r\n\r\n"
        b"GET /fn/b HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    assert [status for status, _, _ in responses(answer)] == [status]
    for record in fake.received:
        names = {name.lower() for name, _ in record.headers}
        assert not names & {"cookie", "x-t1"}, record
    # The connection closed after it: the next request is never served.
    assert [r.raw_path for r in fake.received] == (["/a"] if status == 200 else [])


# --- 6. a token that is not UTF-8 -----------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [b"X-Proxy-Token: caf\xe9", b"Authorization: Bearer \xff\xfe", b"X-Proxy-Token: \x80"]
)
async def test_a_token_that_is_not_utf8_gets_401_not_500(
    started: Any, fake: FakeFunctionUrl, header: bytes
) -> None:
    proxy = await started("--host", "0.0.0.0", "--access-token", TOKEN)
    answer = await send(
        proxy.port, b"GET /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n\r\n", 2
    )
    assert responses(answer)[0][0] == 401, answer[:300]
    assert fake.received == []
    assert "Traceback" not in "".join(proxy.lines)


# --- 7. CONNECT with a path -----------------------------------------------------------------------


async def test_connect_with_a_path_is_refused_never_signed(
    started: Any, fake: FakeFunctionUrl
) -> None:
    proxy = await started()
    answer = await send(proxy.port, b"CONNECT /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 2)
    [(status, headers, body)] = responses(answer)
    assert status == 400 and headers["x-proxy-error"] == "bad_request"
    assert re.search("not (a forward proxy|one)", echo(body)["message"])
    assert fake.received == []
