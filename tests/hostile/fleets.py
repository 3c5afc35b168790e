"""What the hostile-input tests start from: the fleet the runbooks run on
(``examples/fleet.yaml`` with every server on 127.0.0.1 at a port nothing listens on,
so a step that should never have run fails fast instead of reaching a real host), and
a migrated store with one open incident."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

import yaml

from ppo_dr.store import Store
from tests.cli.entry import ROOT


def closed_ports(n: int) -> list[int]:
    """*n* distinct ports of 127.0.0.1 that nothing listens on (bound together, closed)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def loopback_example() -> dict[str, Any]:
    """The example fleet's document, every ssh and http endpoint on a dead loopback port."""
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text("utf-8"))
    endpoints = [s[e] for s in doc["servers"] for e in ("ssh", "http") if e in s]
    for endpoint, port in zip(endpoints, closed_ports(len(endpoints)), strict=True):
        endpoint.update(host="127.0.0.1", port=port)
    return doc


def store_with_an_incident(db: Path) -> Path:
    """A migrated SQLite store at *db* with incident 1 open (app-jhb1-1 down)."""
    with Store(f"sqlite:///{db}") as store:
        store.upgrade()
        store.open_incident("server-outage", "server:app-jhb1-1", "down", {"server": "app-jhb1-1"})
    return db
