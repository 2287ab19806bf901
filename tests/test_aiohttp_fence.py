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
from aiohttp import http_parser, http_writer, web, web_protocol, web_server

from proxy._aiohttp import PRIVATE, Written
from tests.conftest import ROOT

OWNERS: dict[str, Any] = {
    "web.StreamResponse": web.StreamResponse,
    "web_protocol.RequestHandler": web_protocol.RequestHandler,
    "web_protocol": web_protocol,
    "web_server.Server": web_server.Server,
    "http_parser.RawRequestMessage": http_parser.RawRequestMessage,
    "http_writer.StreamWriter": http_writer.StreamWriter,
}


async def _nothing(request: web.BaseRequest) -> web.StreamResponse:
    return web.StreamResponse()


def _instance(owner: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """An object of `owner` whose instance attributes can be looked at."""
    if owner is web.StreamResponse:
        return web.StreamResponse()
    if owner is web_server.Server:
        return web_server.Server(_nothing, loop=loop)
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
