"""The request path in three parts, as the files say it (issue #16): the signed head is built by a
pure module, only the upstream client touches the upstream's socket, only the downstream writer
touches the client's, and the two functions a request goes through read top to bottom."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy import app, forward
from tests.conftest import ROOT

MODULES = sorted((ROOT / "proxy").glob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_only_the_downstream_writer_touches_the_clients_socket() -> None:
    """`request.transport` (the client's socket) appears in proxy/downstream.py only."""
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "transport"
                and isinstance(node.value, ast.Name)
                and node.value.id == "request"
            ):
                assert path.name == "downstream.py", f"proxy/{path.name}:{node.lineno}"


def test_only_the_upstream_client_opens_and_parses_upstream_connections() -> None:
    for path in MODULES:
        tree = _tree(path)
        calls = {
            node.func.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        }
        if path.name != "upstream.py":
            assert "httptools" not in _imports(tree), path.name
            assert not calls & {"create_connection", "start_tls"}, path.name


def test_the_signed_head_is_built_without_io() -> None:
    """proxy/wire.py: no socket, no event loop, no clock, no aiohttp."""
    imported = _imports(_tree(ROOT / "proxy" / "wire.py"))
    assert not {name.split(".")[0] for name in imported} & {
        "asyncio",
        "socket",
        "time",
        "aiohttp",
        "httptools",
    }, imported


@pytest.mark.interpreted  # reads the functions' source
@pytest.mark.parametrize(
    "function", [app.handle, app._serve, forward.forward], ids=["handle", "_serve", "forward"]
)
def test_the_request_path_reads_top_to_bottom(function: Callable[..., Any]) -> None:
    lines = inspect.getsource(function).splitlines()
    assert len(lines) < 40, f"{len(lines)} lines"
