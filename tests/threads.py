"""Running one piece of work in several threads at once, for the tests of what must hold
under concurrency (one pooled connection, whole outbox lines, one spare per claim)."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_in_threads(work: Callable[[int], object], count: int, timeout: float = 60.0) -> None:
    """Run ``work(0)`` … ``work(count - 1)`` in *count* threads at once and wait for all.

    The first exception a thread raised is raised here; a thread still running after
    *timeout* seconds fails the test instead of hanging it.
    """
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    stuck = sum(thread.is_alive() for thread in threads)
    assert not stuck, f"{stuck} of {count} threads still running after {timeout} s"
    if errors:
        raise errors[0]
