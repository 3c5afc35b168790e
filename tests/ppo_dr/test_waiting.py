"""The one polling loop: the first true answer, or None once the limit has passed."""

from __future__ import annotations

import time

from ppo_dr.waiting import poll


def test_poll_returns_the_first_true_answer() -> None:
    answers = iter([None, 0, "", "found", "later"])
    assert poll(lambda: next(answers), timeout=5, every=0.01) == "found"


def test_poll_gives_none_after_the_limit_having_asked_until_then() -> None:
    asked = []
    started = time.monotonic()
    assert poll(lambda: asked.append(1), timeout=0.2, every=0.05) is None
    assert time.monotonic() - started >= 0.2
    assert len(asked) >= 3
