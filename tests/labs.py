"""Labs of a test's own, for the tests that kill servers (the session ``lab`` is shared).

:func:`own_lab` brings a small ``--fast`` lab up, lets the workload write for a moment,
mirrors every app server once (recorded and verified, as the hourly mirror would) and
always takes it down. :func:`mirror_all` is that mirror run, usable again later (it
follows the store's placements, so after a failover it mirrors the new homes).
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppo_dr.fleet_access import FleetAccess
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.mirror.runbook import mirror_every_home
from ppo_dr.store import Store


def front_door(fleet: Fleet, client_id: str) -> tuple[int, str]:
    """(status, X-PPO-Server) of the client's health through the front door."""
    url = str(fleet.client(client_id).url).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, response.headers.get("X-PPO-Server", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-PPO-Server", "")


def mirror_all(lab: Lab) -> None:
    """One mirror run of every server to mirror, recorded and verified (the hourly mirror)."""
    fleet = load_fleet(lab.fleet_file)
    with FleetAccess(fleet) as access, Store.open(lab.store_url) as store:
        mirror_every_home(access, store)


@contextlib.contextmanager
def own_lab_of_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, clients: int, size_mb: int, settle_s: float
) -> Iterator[Lab]:
    """:func:`own_lab` in *tmp_path*, with this test's own ``PPO_DR_HOME`` and the lab's
    store (no ``PPO_DR_DB_URL`` from outside)."""
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PPO_DR_DB_URL", raising=False)
    with own_lab(tmp_path / "lab", clients=clients, size_mb=size_mb, settle_s=settle_s) as lab:
        yield lab


@contextlib.contextmanager
def own_lab(
    directory: Path, *, clients: int, size_mb: int, settle_s: float = 0.0, mirrored: bool = True
) -> Iterator[Lab]:
    """A ``--fast`` lab in *directory*: up, *settle_s* of workload writes, mirrored once
    unless *mirrored* is False; down at the end, whatever happened."""
    lab = Lab(directory)
    try:
        lab.up(clients=clients, size_mb=size_mb, fast=True, timeout=30.0)
        if settle_s:
            time.sleep(settle_s)  # a few acknowledged writes before the first snapshot
        if mirrored:
            mirror_all(lab)
        yield lab
    finally:
        lab.down()
