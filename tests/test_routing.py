"""Longest prefix on a segment boundary; prefix stripping; base paths kept."""

from __future__ import annotations

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
