"""Waiting for something to become true, with a limit: the one polling loop.

The demo, the chaos runner and the tests wait on records other processes write (the
store, the outbox, Prefect's API); each asks the same question every so often until
a deadline. What to do on timeout differs (raise, or record it as a finding), so
:func:`poll` returns None then and the caller decides.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    check: Callable[[], T | None],
    timeout: float,
    every: float = 0.5,
    *,
    riding: tuple[type[Exception], ...] = (),
) -> T | None:
    """*check*'s first true answer within *timeout* seconds (asked every *every*), else None.

    An error of a type in *riding* counts as no answer yet: an observer asking a store
    that is restarting waits for it, as the runbooks' retries do.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except riding:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(every)
