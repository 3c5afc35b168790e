"""The store's database in a namespaced control plane (as root): reachable from a
data centre's namespace, the wan and this host (through HAProxy), by the ``ppo`` role
with its password only; the data written from one side is read on the others."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from ppo_dr.errors import TransientError
from ppo_dr.lab import controlplane, netns, store_network
from ppo_dr.store import Store
from tests.topology.conftest import needs_binaries, needs_namespaces, reachable_tempdir

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    needs_binaries,
    needs_namespaces,
]


def _home_of(url: str, client: str) -> str:
    with Store(url) as store:
        placement = store.placement(client)
        assert placement is not None
        return placement.server_id


def _refusal(address: str, port: int, user: str, passfile: Path) -> str:
    """The server's answer to a login as *user* to the store (empty if it let us in)."""
    try:
        psycopg.connect(
            host=address,
            port=port,
            user=user,
            dbname="store",
            passfile=str(passfile),
            connect_timeout=10,
        ).close()
    except psycopg.OperationalError as exc:
        return str(exc)
    return ""


def test_the_store_is_reachable_from_every_site_and_only_by_the_lab_role() -> None:
    directory = reachable_tempdir()
    plan = netns.plan_for(directory, ("jhb1",))
    netns.create(plan)
    cp_dir = directory / "control-plane"
    cp_dir.mkdir()
    try:
        plane = controlplane.up(
            cp_dir,
            echo=lambda _: None,
            netns=plan.control.namespace,
            netns_address=plan.control.address,
        )
        urls = store_network.store_urls(plane)
        with Store(urls.url) as host_side:  # through HAProxy into the control site
            host_side.upgrade()
            host_side.seed_placements({"acme-mining": "app-jhb1-1"})
        dc = plan.dc("jhb1").namespace
        assert netns.call_in(dc, lambda: _home_of(urls.inner_url, "acme-mining")) == "app-jhb1-1"
        assert netns.call_in(plan.wan, lambda: _home_of(urls.inner_url, "acme-mining")) == (
            "app-jhb1-1"
        )
        # The host's namespace has no route into the lab: only HAProxy's port works.
        with pytest.raises(TransientError):
            _home_of(urls.inner_url, "acme-mining")

        address, port = plan.control.address, plane.pg_port
        passfile = store_network.passfile(plane)
        assert netns.call_in(dc, lambda: _refusal(address, port, "ppo", passfile)) == ""
        assert "no pg_hba.conf entry" in netns.call_in(
            dc, lambda: _refusal(address, port, "postgres", passfile)
        )
        wrong = directory / "wrong-pgpass"
        wrong.touch(mode=0o600)
        wrong.write_text("*:*:*:ppo:not-the-password\n")
        refused = netns.call_in(dc, lambda: _refusal(address, port, "ppo", wrong))
        assert "password authentication failed" in refused
        assert (cp_dir / "pg" / "password").read_text().strip() not in refused
    finally:
        if (cp_dir / controlplane.STATE_FILE).exists():
            controlplane.down(cp_dir, echo=lambda _: None)
        netns.destroy(plan.prefix)
        shutil.rmtree(directory, ignore_errors=True)
