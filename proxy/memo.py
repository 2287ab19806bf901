"""Bounded memos for the request path: a plain dict read with `get`, filled by `remember`.

A full memo is emptied rather than evicting one entry at a time: a hit costs one look-up and
no bookkeeping, and what is asked for often is back in it at once. proxy/target.py (targets),
proxy/headers.py (forwarded header lines), proxy/upstream.py (plans of answers' headers) and
proxy/routing.py (the route of each path) use it.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, entries: int) -> V:
    """Keep `value` under `key` (emptying a memo that holds `entries` first); return it."""
    if len(memo) >= entries:
        memo.clear()
    memo[key] = value
    return value
