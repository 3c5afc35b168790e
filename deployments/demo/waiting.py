"""Waiting for something to happen, with a limit: the demo's steps and the tests use it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ppo_dr.errors import TransientError
from ppo_dr.waiting import poll

T = TypeVar("T")


class WaitTimedOut(TransientError, TimeoutError):
    """What was waited for did not happen in time (a ``TimeoutError`` too, so whoever
    catches the builtin still does)."""


def wait_for(what: str, check: Callable[[], T], timeout: float = 90.0, every: float = 0.5) -> T:
    """Poll *check* until it returns something true and return that; raise
    :class:`WaitTimedOut` naming *what* once *timeout* seconds have passed."""
    value = poll(check, timeout, every)
    if value is None:
        raise WaitTimedOut(f"timed out after {timeout:.0f} s waiting for {what}")
    return value
