"""Canonical request-targets: one path and one query that are both sent upstream and signed.

AWS canonicalises what it receives (dot segments removed, slashes folded, query decoded,
re-encoded and sorted) while botocore signs what it is given. Sending exactly the canonical
form means the proxy, AWS and any verifier compute the same canonical request, whatever the
client typed. See ../shared/README.md, "Facts about the real AWS".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, unquote_to_bytes

from proxy.errors import BadRequest
from proxy.memo import remember

# What SigV4's URI encoding leaves bare (proxy.target._encode): a text of these alone is canonical.
_BARE: Final = r"[A-Za-z0-9\-._~]"
_UNRESERVED: Final = re.compile(f"{_BARE}*")
# A path already in canonical form: unreserved characters only, no empty or dot segments.
_CANONICAL_PATH: Final = re.compile(rf"(?:/(?!\.\.?(?:/|$)){_BARE}+)*/?")
_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
# A query of name=value pairs whose names and values are unreserved characters alone: each pair
# is in canonical form already, and only their order may need to change.
_PLAIN_QUERY: Final = re.compile(f"{_BARE}+={_BARE}*(?:&{_BARE}+={_BARE}*)*")


def _decode(text: str, where: str) -> bytes:
    if "%" not in text:
        return text.encode("utf-8", "surrogateescape")
    if bad := _BAD_PERCENT.search(text):
        raise BadRequest(
            f"malformed percent-encoding {text[bad.start() : bad.start() + 3]!r} in the {where}: "
            "'%' must be followed by two hex digits (send a literal '%' as '%25')"
        )
    return unquote_to_bytes(text)


def _encode(raw: bytes) -> str:
    # quote() leaves only A-Z a-z 0-9 - _ . ~ bare, with upper-case hex: SigV4's URI encoding.
    return quote(raw, safe="")


def _join_normalized(segments: Iterable[str]) -> str:
    """RFC 3986 dot-segment removal, with empty segments (repeated slashes) folded away."""
    kept: list[str] = []
    trailing_slash = False
    for segment in segments:
        if segment in ("", "."):
            trailing_slash = True
        elif segment == "..":
            if kept:
                kept.pop()
            trailing_slash = True
        else:
            kept.append(segment)
            trailing_slash = False
    if not kept:
        return "/"
    return "/" + "/".join(kept) + ("/" if trailing_slash else "")


def normalize_path(path: str) -> str:
    """SigV4's path normalisation of a path as it is on the wire, without decoding anything."""
    return _join_normalized(path[1:].split("/"))


def canonical_path(raw_path: str) -> str:
    """The path without its query, percent-encoded once, with dot segments and empty segments gone.

    An encoded slash (%2F) stays inside its segment: it can never become a separator.
    """
    if not raw_path.startswith("/"):
        raise BadRequest(
            f"request target {raw_path[:100]!r} is not a path: send origin-form requests such "
            "as 'GET /users/42'; this proxy is not a forward proxy"
        )
    if _CANONICAL_PATH.fullmatch(raw_path):
        return raw_path
    # Encoding first turns %2E%2E into "..", so encoded dot segments are removed too.
    return _join_normalized(_encode(_decode(part, "path")) for part in raw_path[1:].split("/"))


def canonical_query(raw_query: str) -> str:
    """Each name and value decoded and re-encoded (`+` is a literal plus), pairs sorted."""
    if not raw_query:
        return ""
    if _PLAIN_QUERY.fullmatch(raw_query):  # one check rather than two per pair
        if "&" not in raw_query:
            return raw_query
        return "&".join(sorted(raw_query.split("&"), key=_name_and_value))
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_canonical_part(name), _canonical_part(value)))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def _name_and_value(pair: str) -> tuple[str, str, str]:
    """A plain pair's sort key: by name, then value, as canonical_query sorts ("=" between)."""
    return pair.partition("=")


# The targets seen most: a frontend asks for the same few paths again and again. Bounded
# (proxy/memo.py): targets of at most 256 characters, 1024 of them.
_SEEN: Final[dict[str, tuple[str, str]]] = {}
SEEN_ENTRIES: Final = 1024
SEEN_LENGTH: Final = 256


def _canonical_part(text: str) -> str:
    """A query name or value decoded and re-encoded; one of unreserved characters only is that
    already (decoding and encoding give it back), at a tenth of the cost."""
    if _UNRESERVED.fullmatch(text):
        return text
    return _encode(_decode(text, "query"))


def split_target(raw_target: str) -> tuple[str, str]:
    """(canonical path, canonical query) of a raw request-target such as `/a/../b?y=2&x=1`."""
    split = _SEEN.get(raw_target)
    if split is not None:
        return split
    path, _, query = raw_target.partition("?")
    if not query:
        return _seen(raw_target, (canonical_path(path), ""))
    # One path with many queries (pages of results, a cache-buster): the path's canonical form
    # is kept as the bare path's, and only the query is new.
    bare = _SEEN.get(path) or _seen(path, (canonical_path(path), ""))
    return _seen(raw_target, (bare[0], canonical_query(query)))


def _seen(raw_target: str, split: tuple[str, str]) -> tuple[str, str]:
    """Keep a target's split in the cache, if it is short enough."""
    if len(raw_target) <= SEEN_LENGTH:
        remember(_SEEN, raw_target, split, SEEN_ENTRIES)
    return split
