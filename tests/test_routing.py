"""Longest prefix on a segment boundary; prefix stripping; base paths kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.aws_config import Resolved
from proxy.credentials import Identity
from proxy.routing import Router, Upstream
from proxy.settings import Route


def upstream(
    prefix: str, url: str = "https://abc.lambda-url.us-east-1.on.aws", **kw: object
) -> Upstream:
    region = Resolved("us-east-1", "the URL's host")
    return Upstream.from_route(Route(prefix=prefix, url=url, **kw), region, Identity())


@pytest.fixture
def router() -> Router:
    return Router([upstream("/api"), upstream("/api/v2"), upstream("/users")])


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/api", "/api"),
        ("/api/", "/api"),
        ("/api/x", "/api"),
        ("/api/v2", "/api/v2"),
        ("/api/v2/x/y", "/api/v2"),
        ("/api/v22", "/api"),
        ("/apix", None),
        ("/users/42", "/users"),
        ("/", None),
        ("/other", None),
    ],
)
def test_longest_prefix_on_segment_boundary(router: Router, path: str, prefix: str | None) -> None:
    match = router.match(path)
    assert (match.prefix if match else None) == prefix


def test_root_prefix_catches_everything_else() -> None:
    router = Router([upstream("/"), upstream("/api")])
    assert router.match("/anything/at/all").prefix == "/"  # type: ignore[union-attr]
    assert router.match("/api/x").prefix == "/api"  # type: ignore[union-attr]


@pytest.mark.interpreted  # replaces the memory's bounds
def test_a_path_seen_again_is_routed_from_a_bounded_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The route of a path seen is remembered by the path: asked again, it is not looked for
    segment by segment; a path with no route and a long path are not kept, a full memory is
    emptied rather than frozen, and each Router (a reload makes a new one) has its own."""
    from proxy import routing

    monkeypatch.setattr(routing, "FOUND_ENTRIES", 2)
    router = Router([upstream("/api"), upstream("/users")])
    looked: list[str] = []
    find = router.find

    def counted(path: str) -> Upstream | None:
        looked.append(path)
        return find(path)  # type: ignore[return-value]

    monkeypatch.setattr(router, "find", counted)
    assert router.match("/api/x").prefix == "/api"  # type: ignore[union-attr]
    assert router.match("/api/x").prefix == "/api"  # type: ignore[union-attr]
    assert looked == ["/api/x"]
    assert router.match("/nowhere") is None and router.match("/nowhere") is None
    assert looked == ["/api/x", "/nowhere", "/nowhere"]  # no route: never kept
    router.match("/api/" + "x" * routing.FOUND_PATH)
    assert list(router._found) == ["/api/x"]  # too long to keep
    router.match("/users/1")
    router.match("/users/2")  # full: emptied first
    assert list(router._found) == ["/users/2"]
    again = Router([upstream("/users", url="https://other.lambda-url.us-east-1.on.aws")])
    assert again.match("/users/2").url == "https://other.lambda-url.us-east-1.on.aws"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("prefix", "url", "strip", "path", "expected"),
    [
        ("/users", "https://abc.lambda-url.us-east-1.on.aws", True, "/users/42", "/42"),
        ("/users", "https://abc.lambda-url.us-east-1.on.aws", True, "/users", "/"),
        ("/users", "https://abc.lambda-url.us-east-1.on.aws", True, "/users/", "/"),
        ("/users", "https://abc.lambda-url.us-east-1.on.aws", False, "/users/42", "/users/42"),
        ("/users", "https://abc.lambda-url.us-east-1.on.aws/v1", True, "/users/42", "/v1/42"),
        ("/users", "https://abc.lambda-url.us-east-1.on.aws/v1/", True, "/users", "/v1"),
        ("/users", "https://abc.lambda-url.us-east-1.on.aws/v1", False, "/users/4", "/v1/users/4"),
        ("/", "https://abc.lambda-url.us-east-1.on.aws/base", True, "/x/y", "/base/x/y"),
    ],
)
def test_upstream_path(prefix: str, url: str, strip: bool, path: str, expected: str) -> None:
    assert upstream(prefix, url, strip_prefix=strip).path_for(path) == expected


def test_host_header_keeps_an_explicit_port() -> None:
    assert (
        upstream("/a", "http://127.0.0.1:9000", region="us-east-1").host_header == "127.0.0.1:9000"
    )
    assert upstream("/a").host_header == "abc.lambda-url.us-east-1.on.aws"


# --- the proxy the environment names, read once per route ---------------------------------------


def test_https_proxy_with_its_credentials_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:s3cret@10.0.0.1:3128")
    through = upstream("/fn").proxy
    assert through is not None and (through.host, through.port) == ("10.0.0.1", 3128)
    assert through.authorization == "Basic YWxpY2U6czNjcmV0"
    assert upstream("/fn", "http://127.0.0.1:9000").proxy is None  # HTTP_PROXY is not set
    monkeypatch.setenv("NO_PROXY", ".on.aws")
    assert upstream("/fn").proxy is None


def test_a_proxy_without_credentials_takes_them_from_netrc(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine proxy.corp login bob password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:8080")  # no scheme: http
    through = upstream("/fn").proxy
    assert through is not None and str(through) == "http://proxy.corp:8080"
    assert through.authorization == "Basic Ym9iOmh1bnRlcjI="


def test_a_tls_proxy_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TLS connection to the proxy itself is not supported (nor was it with aiohttp)."""
    monkeypatch.setenv("HTTPS_PROXY", "https://10.0.0.1:3128")
    assert upstream("/fn").proxy is None
