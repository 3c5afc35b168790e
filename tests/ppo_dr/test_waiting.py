"""The one polling loop: the first true answer, or None once the limit has passed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from ppo_dr.errors import PermanentError, TransientError
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


def test_poll_rides_the_errors_it_is_told_to_and_raises_the_others() -> None:
    answers: Iterator[Callable[[], str]] = iter([_store_down, _store_down, lambda: "back"])
    assert poll(lambda: next(answers)(), timeout=5, every=0.01, riding=(TransientError,)) == "back"
    with pytest.raises(TransientError):
        poll(_store_down, timeout=5, every=0.01)
    with pytest.raises(PermanentError):  # not a kind it rides
        poll(_refused, timeout=5, every=0.01, riding=(TransientError,))
    assert poll(_store_down, timeout=0.1, every=0.02, riding=(TransientError,)) is None


def _store_down() -> str:
    raise TransientError("state store unavailable or busy")


def _refused() -> str:
    raise PermanentError("refused")
