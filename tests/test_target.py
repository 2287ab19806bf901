"""Canonical request-targets: what the proxy sends and signs, whatever the client typed."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import BadRequest
from proxy.target import canonical_path, canonical_query, normalize_path, split_target


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/users/42", "/users/42"),
        ("/a/b/", "/a/b/"),
        ("/a//b", "/a/b"),
        ("//evil.example/x", "/evil.example/x"),
        ("/a/./b/../c", "/a/c"),
        ("/a/..", "/"),
        ("/a/b/..", "/a/"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/%2e%2E/x", "/x"),
        ("/a/.", "/a/"),
        ("/café x", "/caf%C3%A9%20x"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%2Fb/c", "/a%2Fb/c"),
        ("/..%2F..", "/..%2F.."),
        ("/%41%7e", "/A~"),
        ("/!*'()@:=+$,;", "/%21%2A%27%28%29%40%3A%3D%2B%24%2C%3B"),
    ],
)
def test_canonical_path(raw: str, expected: str) -> None:
    assert canonical_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ""),
        ("b=2&a=1", "a=1&b=2"),
        ("a=2&a=1&a=10", "a=1&a=10&a=2"),
        ("a=x+y", "a=x%2By"),
        ("a=x%20y", "a=x%20y"),
        ("flag", "flag="),
        ("flag&x=", "flag=&x="),
        ("=v", "=v"),
        ("a=1&&b=2&", "a=1&b=2"),
        ("k=/&e==", "e=%3D&k=%2F"),
        ("a=%7e&b=~", "a=~&b=~"),
        (
            "%E1%88%B4=Value1&Param=Value2&Param-3=Value3",
            "%E1%88%B4=Value1&Param=Value2&Param-3=Value3",
        ),
        ("q=caf\u00e9&q=!*'()@:", "q=%21%2A%27%28%29%40%3A&q=caf%C3%A9"),
    ],
)
def test_canonical_query(raw: str, expected: str) -> None:
    assert canonical_query(raw) == expected


@pytest.mark.parametrize("raw", ["/a%zz", "/a%", "/a%2"])
def test_bad_percent_encoding_in_path_is_a_bad_request(raw: str) -> None:
    with pytest.raises(BadRequest, match="malformed percent-encoding"):
        canonical_path(raw)


def test_bad_percent_encoding_in_query_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="in the query"):
        canonical_query("a=%g1")


@pytest.mark.parametrize("raw", ["http://evil.example/x", "evil.example:443", "*"])
def test_only_origin_form_targets(raw: str) -> None:
    with pytest.raises(BadRequest, match="not a path"):
        split_target(raw)


def test_normalize_path_does_not_decode() -> None:
    assert normalize_path("/a b/./c/../%41//") == "/a b/%41/"


CANONICAL_PATH = re.compile(
    r"/(?:[A-Za-z0-9\-._~]|%[0-9A-F]{2})+(?:/(?:[A-Za-z0-9\-._~]|%[0-9A-F]{2})+)*/?|/"
)


@given(st.lists(st.text(max_size=6), max_size=6), st.booleans())
def test_any_path_becomes_canonical_and_stays_so(segments: list[str], encode: bool) -> None:
    from urllib.parse import quote

    raw = "/" + "/".join(quote(s, safe="") if encode else s.replace("%", "%25") for s in segments)
    raw = raw.replace("?", "%3F").replace("#", "%23")
    path = canonical_path(raw)
    assert CANONICAL_PATH.fullmatch(path), path
    assert "/./" not in path + "/" and "/../" not in path + "/" and "//" not in path
    assert canonical_path(path) == path  # idempotent: sent == signed == verified


@given(st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=5))
def test_any_query_becomes_sorted_and_stays_so(pairs: list[tuple[str, str]]) -> None:
    from urllib.parse import quote

    raw = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    query = canonical_query(raw)
    assert canonical_query(query) == query
    decoded = [tuple(p.split("=")) for p in query.split("&")] if query else []
    assert decoded == sorted(decoded)


query_text = st.lists(
    st.sampled_from([*"aZ09-._~+=&%/?! ", "%41", "%2f", "%7E", "\u00e9", "%zz"]), max_size=12
).map("".join)


@given(query_text)
def test_an_unreserved_name_or_value_is_kept_as_it_is_decoding_would_give_it_back(
    raw: str,
) -> None:
    """canonical_query skips decoding and encoding a part made of unreserved characters only:
    its answer (or its refusal) is what decoding and re-encoding every part gives."""
    from proxy.target import _decode, _encode

    def every_part_decoded(raw: str) -> str:
        pairs = []
        for part in raw.split("&"):
            if part:
                name, _, value = part.partition("=")
                pairs.append((_encode(_decode(name, "q")), _encode(_decode(value, "q"))))
        return "&".join(f"{name}={value}" for name, value in sorted(pairs))

    try:
        expected = every_part_decoded(raw)
    except BadRequest:
        with pytest.raises(BadRequest):
            canonical_query(raw)
        return
    assert canonical_query(raw) == expected


def _counted_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """An empty target cache, and the paths canonical_path is asked for from now on."""
    from proxy import target

    monkeypatch.setattr(target, "_SEEN", {})
    calls: list[str] = []
    real = target.canonical_path

    def counted(raw: str) -> str:
        calls.append(raw)
        return real(raw)

    monkeypatch.setattr(target, "canonical_path", counted)
    return calls


def test_targets_seen_again_come_from_a_bounded_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same target twice is canonicalised once; the cache is emptied when full (and fills
    again), never keeps a long target, and never keeps a refusal (it is raised again)."""
    from proxy import target

    calls = _counted_paths(monkeypatch)
    assert split_target("/a/../b?y=2&x=1") == ("/b", "x=1&y=2")
    assert split_target("/a/../b?y=2&x=1") == ("/b", "x=1&y=2")
    assert calls == ["/a/../b"]
    long = "/" + "x" * target.SEEN_LENGTH
    split_target(long)
    assert long not in target._SEEN
    for _ in range(2):
        with pytest.raises(BadRequest):
            split_target("/a%zz")
    assert "/a%zz" not in target._SEEN
    target._SEEN.clear()
    for index in range(target.SEEN_ENTRIES + 10):
        split_target(f"/n{index}")
    assert len(target._SEEN) == 10  # emptied when full, then filled again
    calls.clear()
    split_target(f"/n{target.SEEN_ENTRIES + 9}")  # the newest is there
    split_target("/a/../b?y=2&x=1")  # asked for again: computed, then kept again
    split_target("/a/../b?y=2&x=1")
    assert calls == ["/a/../b"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("n=5", "n=5"),
        ("b=1&a=2", "a=2&b=1"),
        # By name, then value: "a" before "a-b" although "-" sorts before "=" in the texts.
        ("a-b=2&a=1", "a=1&a-b=2"),
        ("a=2&a=1&a=10", "a=1&a=10&a=2"),
        ("x=&x=~", "x=&x=~"),
    ],
)
def test_plain_pairs_are_only_put_in_order(raw: str, expected: str) -> None:
    """Pairs of unreserved names and values take canonical_query's one-check path: the same
    answer as decoding and re-encoding each."""
    from proxy import target

    assert target._PLAIN_QUERY.fullmatch(raw)
    assert canonical_query(raw) == expected


def test_a_path_asked_for_with_many_queries_is_canonicalised_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pages of results, cache-busters: the path's canonical form is kept as the bare path's
    split, and each new query is the only new work; the bare path then splits from the cache."""
    from proxy import target

    calls = _counted_paths(monkeypatch)
    for page in range(5):
        assert split_target(f"/a/./items?page={page}&_=17") == ("/a/items", f"_=17&page={page}")
    assert split_target("/a/./items") == ("/a/items", "")
    assert calls == ["/a/./items"]
    with pytest.raises(BadRequest):
        split_target("/a/./items?bad=%zz")  # the query refused, the path still right
    assert target._SEEN["/a/./items"] == ("/a/items", "")
