"""Claiming the Prefect server's port: bound and listening before the server starts,
so two serves cannot both pick the same port (plain sockets, no Prefect)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from deployments.local_server import PREFERRED_PORT, ServeError, claim_port


@pytest.fixture
def claimed() -> Iterator[list[socket.socket]]:
    """Sockets a test claims; all closed at the end."""
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def test_a_claimed_port_is_listening_already(claimed: list[socket.socket]) -> None:
    claimed.append(claim_port(0))
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port_of(claimed[0]))) == 0


def test_no_port_asked_claims_two_different_ports_one_after_the_other(
    claimed: list[socket.socket],
) -> None:
    claimed.extend([claim_port(None), claim_port(None)])
    ports = [port_of(sock) for sock in claimed]
    assert ports[0] != ports[1]
    assert ports.count(PREFERRED_PORT) <= 1  # 4200 when it was free, never twice


def test_a_named_port_in_use_is_refused(claimed: list[socket.socket]) -> None:
    claimed.append(claim_port(0))
    taken = port_of(claimed[0])
    with pytest.raises(ServeError, match=f"port {taken} on 127.0.0.1 is in use"):
        claim_port(taken)


def test_a_named_free_port_is_the_one_claimed(claimed: list[socket.socket]) -> None:
    with claim_port(0) as first:
        port = port_of(first)
    claimed.append(claim_port(port))
    assert port_of(claimed[0]) == port
