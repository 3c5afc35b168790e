"""Threads in tests: one piece of work in several threads at once, for what must hold
under concurrency (one pooled connection, whole outbox lines, one spare per claim), and
a local server served from a thread for as long as a test needs it."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def serving(server: socketserver.BaseServer, poll_s: float = 0.5) -> Iterator[None]:
    """Serve *server* from a daemon thread until the block ends, then stop it and close
    its socket, so no test leaves a port bound or a thread behind."""
    thread = threading.Thread(target=server.serve_forever, args=(poll_s,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


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
