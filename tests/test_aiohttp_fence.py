"""The canary of the fence (proxy/_aiohttp.py): every private name of aiohttp the proxy relies on
is still there, with the parameters the proxy calls it with, and still does what the proxy needs.

A failure says which name, which aiohttp version and what of the proxy it breaks: adapt the fence
before taking that version (pyproject.toml pins the minor version this canary passed on)."""

from __future__ import annotations

import ast
import asyncio
import inspect
from typing import Any

import aiohttp
import pytest
from aiohttp import http_parser, http_writer, web, web_protocol, web_request, web_server
from aiohttp.test_utils import make_mocked_request

from proxy._aiohttp import FILLED, PRIVATE, JsonErrorServer, Written
from tests.conftest import ROOT

OWNERS: dict[str, Any] = {
    "web.StreamResponse": web.StreamResponse,
    "web_protocol.RequestHandler": web_protocol.RequestHandler,
    "web_protocol": web_protocol,
    "web_server.Server": web_server.Server,
    "http_parser.RawRequestMessage": http_parser.RawRequestMessage,
    "http_writer.StreamWriter": http_writer.StreamWriter,
    "web_request.BaseRequest": web_request.BaseRequest,
}


async def _nothing(request: web.BaseRequest) -> web.StreamResponse:
    return web.StreamResponse()


def _instance(owner: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """An object of `owner` whose instance attributes can be looked at."""
    if owner is web.StreamResponse:
        return web.StreamResponse()
    if owner is web_server.Server:
        return web_server.Server(_nothing, loop=loop)
    if owner is web_request.BaseRequest:
        return make_mocked_request("GET", "/")
    return owner


def _has(owner: Any, name: str, loop: asyncio.AbstractEventLoop) -> bool:
    slots = {
        slot for cls in getattr(owner, "__mro__", ()) for slot in getattr(cls, "__slots__", ())
    }
    return name in slots or hasattr(_instance(owner, loop), name)


@pytest.mark.parametrize(
    ("where", "name", "why", "parameters"), PRIVATE, ids=[f"{w}.{n}" for w, n, _, _ in PRIVATE]
)
def test_each_private_name_the_fence_relies_on(
    where: str, name: str, why: str, parameters: tuple[str, ...] | None
) -> None:
    broke = (
        f"aiohttp {aiohttp.__version__} changed {where}.{name}, which proxy/_aiohttp.py relies "
        f"on ({why}): adapt the fence before taking this aiohttp"
    )
    owner = OWNERS[where]
    loop = asyncio.new_event_loop()
    try:
        assert _has(owner, name, loop), broke + " (it is gone)"
    finally:
        loop.close()
    if parameters is None:
        return
    called = inspect.signature(getattr(owner, name)).parameters
    missing = [parameter for parameter in parameters if parameter not in called]
    assert not missing, f"{broke} (no parameter {', '.join(missing)}: it takes {list(called)})"


def test_no_module_but_the_fence_reaches_into_aiohttp() -> None:
    """Outside the fence, proxy/ uses aiohttp's public API only: `aiohttp` and `aiohttp.web`, no
    other submodule (web_protocol, http_parser, streams: aiohttp's own layout), and no private
    name PRIVATE lists on anything but its own objects (`self`)."""
    listed = {name for _, name, _, _ in PRIVATE if name.startswith("_") and name[1] != "_"}
    for path in sorted((ROOT / "proxy").glob("*.py")):
        if path.name == "_aiohttp.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            if module.startswith("aiohttp.") and module != "aiohttp.web":
                raise AssertionError(f"proxy/{path.name} imports {module}: only the fence may")
            if (
                isinstance(node, ast.Attribute)
                and node.attr in listed
                and not (isinstance(node.value, ast.Name) and node.value.id == "self")
            ):
                raise AssertionError(f"proxy/{path.name} uses .{node.attr}: only the fence may")


async def test_a_written_answer_is_not_written_again_and_says_if_the_connection_goes_on() -> None:
    """What Written relies on: with `_eof_sent`, aiohttp's prepare() and write_eof() return at
    once (they would write a second head on the socket), and `_keep_alive` is keep_alive."""
    for keep_alive in (True, False):
        written = Written(200, keep_alive)
        assert await written.prepare(None) is None  # type: ignore[arg-type]
        await written.write_eof()
        assert written.keep_alive is keep_alive


REQUESTS = (
    b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    b"GET /%7Ec HTTP/1.0\r\nHost: x\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok",
    b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
)


@pytest.mark.parametrize("sent", REQUESTS, ids=[r.split(b"\r\n")[0].decode() for r in REQUESTS])
async def test_the_properties_a_request_comes_with_are_aiohttps_own(sent: bytes) -> None:
    """JsonErrorServer's requests come with FILLED in the reified properties' cache: each is
    what aiohttp computes for the same message and payload, and reading a property reads that
    cache (else filling it would cost a store and spare nothing)."""
    seen: list[web.BaseRequest] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(request)
        return web.Response(text="ok")

    server = JsonErrorServer(handler)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(sent)
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
    finally:
        await runner.cleanup()
    (request,) = seen
    filled = dict(request._cache)
    plain = web_request.BaseRequest(
        request._message,
        request._payload,
        request.protocol,
        request.writer,
        request.task,
        asyncio.get_running_loop(),
    )
    broke = (
        f"aiohttp {aiohttp.__version__} computes BaseRequest.%s otherwise than the fence fills it"
    )
    for name in FILLED:
        assert filled[name] == getattr(plain, name), broke % name
        request._cache[name] = marker = object()
        assert getattr(request, name) is marker, (
            f"aiohttp {aiohttp.__version__} no longer reads BaseRequest.{name} from _cache: "
            "filling it (proxy/_aiohttp.py FILLED) spares nothing"
        )
