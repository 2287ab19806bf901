"""proxy/memo.py: a memo keeps what it is given until full, then starts afresh."""

from __future__ import annotations

from proxy.memo import remember


def test_a_full_memo_is_emptied_before_the_next_entry() -> None:
    memo: dict[str, int] = {}
    assert remember(memo, "a", 1, entries=2) == 1
    remember(memo, "b", 2, entries=2)
    assert memo == {"a": 1, "b": 2}
    assert remember(memo, "c", 3, entries=2) == 3
    assert memo == {"c": 3}
