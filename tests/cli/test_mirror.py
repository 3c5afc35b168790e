"""``ppo-dr mirror run`` follows the store's placements, as the mirror flow does.

The session lab's servers and mirrors, with a store of this test's own
(``PPO_DR_DB_URL``) in which one client has moved to a spare: its data is copied
there, and whatever the runs add to the lab (the copy, the spare's repositories) is
removed at the end, so the session lab is left as it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ppo_dr.fleet_access import client_path, mirror_plan
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.store import Store

SPARE = "spare-cpt1-1"


def on_disk(lab: Lab, server_id: str, path: str) -> Path:
    return lab.server_dir(server_id) / "fs" / path.lstrip("/")


@pytest.fixture
def moved(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str, str]]:
    """(client, its old home, store URL): the client placed on SPARE in a store of our own."""
    fleet = load_fleet(lab.fleet_file)
    client = next(c for c in fleet.clients if "ZA" in c.countries)
    old = client.server
    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("PPO_DR_DB_URL", url)
    with Store.open(url) as store:  # every client where fleet.yaml says, but one
        store.upgrade()
        store.seed_placements(
            {c.id: (SPARE if c.id == client.id else c.server) for c in fleet.clients}
        )
    source = on_disk(lab, old, client_path(fleet, client.id, server_id=old))
    copy = on_disk(lab, SPARE, client_path(fleet, client.id, server_id=SPARE))
    shutil.copytree(source, copy, symlinks=True)
    repos = [
        on_disk(lab, m.id, path)
        for m, path in mirror_plan(fleet, SPARE, {client.id: SPARE})
        if m.ssh is not None
    ]
    try:
        yield client.id, old, url
    finally:
        shutil.rmtree(copy, ignore_errors=True)
        for repo in repos:
            shutil.rmtree(repo, ignore_errors=True)


def run(fleet_file: Path, *argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["mirror", *argv, "--fleet", str(fleet_file)])
    return result.exit_code, result.output


def test_mirror_run_mirrors_a_moved_client_from_its_new_home(
    lab: Lab, moved: tuple[str, str, str]
) -> None:
    client, old, url = moved
    fleet: Fleet = load_fleet(lab.fleet_file)

    # One client: found on the spare the store put it on, not on fleet.yaml's server.
    code, out = run(lab.fleet_file, "run", "--client", client)
    assert code == 0, out
    assert out.startswith(f"{SPARE} ["), out
    with Store.open(url) as store:
        homes = {s.server_id for s in store.snapshots(client_id=client)}
    assert homes == {SPARE}

    # The old home: mirrored without the client that left it.
    code, out = run(lab.fleet_file, "run", old)
    assert code == 0, out
    staying = [c.id for c in fleet.clients if c.server == old and c.id != client]
    for other in staying:
        assert f"  {other} " in out
    assert f"  {client} " not in out

    # A spare is a home only while clients are placed on it; a mirror never is.
    code, out = run(lab.fleet_file, "run", "spare-jhb1-1")
    assert code == 2 and "no client is placed on it" in out, out
    code, out = run(lab.fleet_file, "run", "--client", client, "--client", "nobody")
    assert code == 2 and "no client 'nobody'" in out, out

    # Restoring onto the client's current server needs --path: the guard follows the store.
    code, out = run(lab.fleet_file, "restore", client, "--to", SPARE)
    assert code == 2 and "current server" in out, out
