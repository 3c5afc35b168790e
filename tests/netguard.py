"""Keep a test on 127.0.0.1: the one loopback guard every network test fixture uses.

Any name lookup or connection to a host that is not loopback fails the test at once
with ``pytest.fail`` (a BaseException, so neither a client library's retry loop nor an
``except Exception`` in our error mapping can swallow it), and again at teardown if
something swallowed it anyway. Real SaaS and cloud hosts are never contacted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest


def is_loopback(host: Any) -> bool:
    """True for 127.0.0.0/8, ::1, 'localhost' and the empty host (a local bind)."""
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def loopback_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse, loudly, any lookup or connection beyond 127.0.0.1 / ::1."""
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def refuse(what: str) -> None:
        attempts.append(what)
        pytest.fail(f"a client tried to reach {what}: tests stay on 127.0.0.1", pytrace=True)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_loopback(host):
            refuse(f"name lookup {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(address: Any) -> None:
        if isinstance(address, tuple) and not is_loopback(address[0]):
            refuse(f"connection to {address[0]!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield attempts
    if attempts:
        pytest.fail(f"non-loopback network use (even if swallowed): {attempts}")
