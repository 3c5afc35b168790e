"""Opening a TCP connection, from inside a network namespace when one is named.

``PPO_DR_NETNS=NAME`` makes every SSH connection this process (and its children)
opens start inside the Linux network namespace ``/run/netns/NAME``: a socket belongs
to the namespace it was created in, so it is created on a short-lived thread that
entered the namespace (``setns`` moves only that thread) and then used from anywhere.
This is how a management network kept in a namespace (or a VRF-like setup) is
reached, and how the distributed lab's chaos run sees the servers from its ``wan``,
where their public addresses are, instead of routing them out of the host. Entering a
namespace needs root (``CAP_SYS_ADMIN``); without the variable nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ppo_dr.errors import PermanentError

NETNS_ENV = "PPO_DR_NETNS"
_NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _enter(namespace: str) -> None:
    if not namespace or "/" in namespace or namespace in (".", ".."):
        raise PermanentError(f"{NETNS_ENV}={namespace!r} is not a network namespace's name")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(_NETNS_DIR / namespace, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"cannot enter network namespace {namespace}")
    finally:
        os.close(fd)


def on_entered_thread(enter: Callable[[], None], work: Callable[[], T], name: str) -> T:
    """*work*'s result (or its error, raised here) from a short-lived thread that first
    ran *enter*: a ``setns`` moves only the calling thread, and sockets made there
    stay in that namespace wherever they are used. :func:`ppo_dr.lab.netns.call_in`
    runs on this too."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            enter()
            outcome.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def dial(host: str, port: int, timeout: float) -> socket.socket:
    """A connected TCP socket to *host*:*port*, made in :data:`NETNS_ENV`'s namespace
    when the variable is set (its errors are the caller's ``OSError``, as here)."""
    namespace = os.environ.get(NETNS_ENV)
    if not namespace:
        return socket.create_connection((host, port), timeout=timeout)
    return on_entered_thread(
        functools.partial(_enter, namespace),
        functools.partial(socket.create_connection, (host, port), timeout=timeout),
        f"dial-{namespace}",
    )
