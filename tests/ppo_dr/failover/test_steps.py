"""The failover steps one by one, on a lab of this module's own (they move clients and
touch servers' disks), and the ledger that makes them safe to rerun."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from ppo_dr.errors import PermanentError, PlacementConflict, TransientError, UnsafeInputError
from ppo_dr.failover import checks, steps
from ppo_dr.failover.ledger import (
    placement_versions,
    roll_back_steps,
    run_step,
    ssh_reachable,
    unreachable_servers,
)
from ppo_dr.failover.plan import ClientMove
from ppo_dr.fleet_access import FleetAccess, client_path, mirror_plan, repo_path
from ppo_dr.inventory import Fleet, load_fleet, parse_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.mirror.errors import DamagedDataError
from ppo_dr.store import Store
from ppo_dr.transport import LocalRemote
from tests.labs import own_lab
from tests.ppo_dr.failover.fleets import lab_like_data

pytestmark = pytest.mark.timeout(180)

PLAN = "feedfacecafe0001"


@pytest.fixture(scope="module")
def mod_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A small lab for this module, every app server mirrored once; down at the end."""
    home = tmp_path_factory.mktemp("steps-home")
    saved = os.environ.get("PPO_DR_HOME")
    os.environ["PPO_DR_HOME"] = str(home)
    try:
        with own_lab(tmp_path_factory.mktemp("steps") / "lab", clients=6, size_mb=4) as lab:
            yield lab
    finally:
        if saved is None:
            os.environ.pop("PPO_DR_HOME", None)
        else:
            os.environ["PPO_DR_HOME"] = saved


@pytest.fixture(scope="module")
def fleet(mod_lab: Lab) -> Fleet:
    return load_fleet(mod_lab.fleet_file)


def move_for(fleet: Fleet, store: Store, client: str, to_server: str) -> ClientMove:
    """A move of *client* to *to_server* from its newest verified snapshot (as planned)."""
    home = store.placement(client)
    assert home is not None
    mirrors = [m.id for m, _ in mirror_plan(fleet, home.server_id)]
    snap = store.latest_verified_snapshot(client, mirrors[0])
    assert snap is not None
    return ClientMove(
        client_id=client,
        from_server=home.server_id,
        to_server=to_server,
        source_mirror=mirrors[0],
        snapshot_id=snap.snapshot_id,
        snapshot_at=snap.taken_at,
        fallback_mirrors=tuple(mirrors[1:]),
        new_mirrors=(),
        size_bytes=snap.bytes,
    )


def on_disk(lab: Lab, fleet: Fleet, server: str, visible: str) -> Path:
    return lab.server_dir(server) / "fs" / visible.lstrip("/")


# --------------------------------------------------------------------------- restore+verify


@pytest.mark.lab
def test_restore_goes_through_staging_and_verify_names_the_first_difference(
    mod_lab: Lab, fleet: Fleet
) -> None:
    client, target = fleet.clients[0].id, "spare-lon1-1"
    with FleetAccess(fleet) as access, Store.open(mod_lab.store_url) as store:
        move = move_for(fleet, store, client, target)
        assert move.snapshot_id is not None
        # A crashed earlier attempt left junk in staging: it is cleared first.
        junk = on_disk(mod_lab, fleet, target, steps.staging_path(fleet, target, client))
        junk.mkdir(parents=True)
        (junk / "half-written").write_bytes(b"x")
        restored = steps.restore_client(access, move)
        final = on_disk(mod_lab, fleet, target, client_path(fleet, client, server_id=target))
        assert restored.path == client_path(fleet, client, server_id=target)
        assert not junk.exists() and final.is_dir()
        assert restored.files > 0 and restored.source_mirror == move.source_mirror
        checked = checks.verify_restored(access, move, move.snapshot_id)
        assert (checked.files, checked.bytes) == (restored.files, restored.bytes)

        # Same size, same mtime, one byte different: found by content, and named.
        victim = max((p for p in final.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        st = victim.stat()
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
        os.utime(victim, (st.st_atime, st.st_mtime))
        rel = str(victim.relative_to(final))
        with pytest.raises(checks.VerifyMismatch, match="differs from the snapshot at byte") as e:
            checks.verify_restored(access, move, move.snapshot_id)
        assert e.value.path == rel

        # Restoring again replaces the whole directory (the earlier one is moved aside).
        (final / "stray-file").write_text("not in the snapshot")
        steps.restore_client(access, move)
        checks.verify_restored(access, move, move.snapshot_id)
        (final / "stray-file").write_text("not in the snapshot")
        with pytest.raises(checks.VerifyMismatch, match="not in the snapshot"):
            checks.verify_restored(access, move, move.snapshot_id)
        (final / "stray-file").unlink()
        # The app serves the restored client from the target itself.
        health = checks.app_health(fleet, client, target)
        assert health.server == target and health.url.endswith(f"/c/{client}/health")


@pytest.mark.lab
def test_a_restore_never_recreates_a_vanished_data_root(mod_lab: Lab, fleet: Fleet) -> None:
    client, target = fleet.clients[1].id, "spare-cpt1-1"
    with FleetAccess(fleet) as access, Store.open(mod_lab.store_url) as store:
        move = move_for(fleet, store, client, target)
        mod_lab.break_(target, "disk")
        try:
            with pytest.raises(Exception, match=r"data root .* is missing"):
                steps.restore_client(access, move)
        finally:
            mod_lab.heal(target)
        root = on_disk(mod_lab, fleet, target, fleet.server(target).data_root)
        assert not (root / steps.STAGING_DIR / client).exists()


@contextmanager
def damaged_repository(lab: Lab, fleet: Fleet, mirror_id: str, home: str) -> Iterator[None]:
    """Every byte of every pack of *home*'s repository on *mirror_id* flipped (so every
    blob fails its hash), put back as it was on exit."""
    repo = on_disk(lab, fleet, mirror_id, repo_path(fleet.server(mirror_id), home))
    saved = {
        p: (p.read_bytes(), p.stat().st_mode) for p in (repo / "packs").rglob("*") if p.is_file()
    }
    assert saved, f"no packs in {repo}"
    for pack, (data, _) in saved.items():
        pack.chmod(0o600)
        pack.write_bytes(bytes(b ^ 0xFF for b in data))
    try:
        yield
    finally:
        for pack, (data, mode) in saved.items():
            pack.write_bytes(data)
            pack.chmod(mode)


@pytest.mark.lab
def test_damage_falls_back_to_the_next_mirror_and_damage_everywhere_is_permanent(
    mod_lab: Lab, fleet: Fleet
) -> None:
    client, target = fleet.clients[2].id, "spare-lon1-1"
    with FleetAccess(fleet) as access, Store.open(mod_lab.store_url) as store:
        move = move_for(fleet, store, client, target)
        assert move.snapshot_id is not None and move.source_mirror is not None
        onsite, offsite = move.source_mirror, move.fallback_mirrors[0]
        with damaged_repository(mod_lab, fleet, onsite, move.from_server):
            # The failover's restore: the planned mirror is damaged, the next one serves.
            restored = steps.restore_client(access, move)
            assert restored.served_by == {onsite: 0, offsite: restored.served_by[offsite]}
            assert restored.served_by[offsite] > 0
            checks.verify_restored(access, move, move.snapshot_id)
            # The drill's restore, from that one mirror: permanent at once, named.
            with pytest.raises(
                DamagedDataError, match=rf"from {onsite}: .*\(damaged on every mirror\)"
            ):
                steps.restore_client(access, move, mirrors=[onsite])
            with (
                damaged_repository(mod_lab, fleet, offsite, move.from_server),
                pytest.raises(DamagedDataError, match="damaged on every mirror"),
            ):
                steps.restore_client(access, move)
            # Damaged here and the other mirror unreachable now: it may come back, so
            # the error is transient (a retry may succeed), not permanent.
            mod_lab.break_(offsite, "power")
            try:
                with pytest.raises(TransientError) as raised:
                    steps.restore_client(access, move)
                assert not isinstance(raised.value, PermanentError)
            finally:
                mod_lab.heal(offsite)


# --------------------------------------------------------------------------- switch+rollback


@pytest.mark.lab
def test_switch_is_a_compare_and_set_and_rollback_undoes_it(mod_lab: Lab, fleet: Fleet) -> None:
    client, target = fleet.clients[2].id, "spare-jhb1-1"
    with FleetAccess(fleet) as access, Store.open(mod_lab.store_url) as store:
        move = move_for(fleet, store, client, target)
        version = placement_versions(store, fleet, [client])[client]
        steps.restore_client(access, move)
        with pytest.raises(PlacementConflict):
            steps.switch(store, move, version + 5, plan_id=PLAN)
        placed = steps.switch(store, move, version, plan_id=PLAN)
        assert (placed.server_id, placed.version) == (target, version + 1)
        # A rerun after a crash between the move and the ledger: our own move, done.
        assert steps.switch(store, move, version, plan_id=PLAN) == placed
        # Someone else's plan finds the placement moved: a conflict, not a retry.
        with pytest.raises(PlacementConflict):
            steps.switch(store, move, version, plan_id="0000000000000000")
        assert checks.app_health(fleet, client, target, front_door=True).server == target

        undone = steps.rollback(access, store, move, plan_id=PLAN, planned=True)
        assert undone[0] == f"placement back to {move.from_server}"
        assert any("unfrozen" in u for u in undone)
        assert store.placement(client).server_id == move.from_server  # type: ignore[union-attr]
        # Routing had switched: writes may have landed there, so the copy is kept aside
        # (not served), never deleted.
        final = on_disk(mod_lab, fleet, target, client_path(fleet, client, server_id=target))
        assert not final.exists()
        staging = on_disk(mod_lab, fleet, target, steps.staging_path(fleet, target, client))
        kept = list(staging.parent.glob(f"{client}.kept-*"))
        assert len(kept) == 1 and any(str(kept[0].name) in u for u in undone)
        assert checks.app_health(fleet, client, move.from_server, front_door=True).server == (
            move.from_server
        )
        # Rolling back again finds nothing of ours to undo and leaves routing alone.
        again = steps.rollback(access, store, move, plan_id=PLAN, planned=False)
        assert not any(u.startswith("placement") for u in again)


# --------------------------------------------------------------------------- freeze


def _write(fleet: Fleet, client: str, seq: int) -> int:
    url = str(fleet.client(client).url).rstrip("/") + "/journal"
    body = json.dumps({"seq": seq, "ts": datetime.now(UTC).isoformat(), "writer": "test"})
    request = urllib.request.Request(url, data=body.encode(), method="POST")  # noqa: S310
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.lab
def test_freeze_makes_the_app_refuse_writes_until_unfrozen(mod_lab: Lab, fleet: Fleet) -> None:
    client = fleet.clients[3].id
    with FleetAccess(fleet) as access, Store.open(mod_lab.store_url) as store:
        home = store.placement(client).server_id  # type: ignore[union-attr]
        steps.freeze(access, client, home)
        steps.freeze(access, client, home)  # idempotent
        try:
            assert _write(fleet, client, 10_000_001) == 503
            with pytest.raises(Exception, match="still frozen"):
                checks.app_health(fleet, client, home, timeout=0.5)
        finally:
            steps.unfreeze(access, client, home)
        assert _write(fleet, client, 10_000_002) == 200
        with pytest.raises(PermanentError, match="unfreeze"):
            steps.unfreeze(access, client, "spare-lon1-1")  # no data of it there


# --------------------------------------------------------------------------- input


@pytest.mark.lab
def test_hostile_ids_are_refused_before_any_io(fleet: Fleet) -> None:
    good = ClientMove("x", "app-jhb1-1", "spare-jhb1-1", None, None, None, (), (), 0)
    for bad in ("../etc", "a;reboot", "A B", ""):
        with pytest.raises(UnsafeInputError):
            steps.staging_path(fleet, "spare-jhb1-1", bad)
        with pytest.raises(UnsafeInputError):
            checks.health_url(fleet, bad)
        with pytest.raises(UnsafeInputError):
            steps.freeze(None, bad, "app-jhb1-1")  # type: ignore[arg-type]
    with pytest.raises(UnsafeInputError):
        steps.rpo_seconds("../../2026", datetime.now(UTC))
    with pytest.raises(PermanentError, match="no snapshot"):
        steps.restore_client(None, good)  # type: ignore[arg-type]
    bad_move = dataclasses.replace(good, client_id="../x", snapshot_id="2026-11-30T05-00-00Z")
    with pytest.raises(UnsafeInputError):
        steps.restore_client(None, bad_move)  # type: ignore[arg-type]


def test_remove_tree_clears_read_only_directories_and_keeps_link_targets(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    (root / "link").symlink_to(outside)
    (root / "a" / "b").chmod(0o500)
    (root / "a").chmod(0o500)
    assert steps.remove_tree(LocalRemote(), str(root)) == 5
    assert not root.exists() and outside.read_text() == "keep me"
    assert steps.remove_tree(LocalRemote(), str(root)) == 0


def test_rpo_is_the_snapshot_age_at_declaration() -> None:
    declared = datetime(2026, 11, 30, 5, 10, tzinfo=UTC)
    assert steps.rpo_seconds("2026-11-30T05-00-00Z", declared) == 600.0
    assert steps.rpo_seconds("2026-11-30T05-20-00Z", declared) == 0.0  # final sync


# --------------------------------------------------------------------------- ledger


def test_run_step_skips_done_steps_and_records_failures(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        store.upgrade()
        store.begin_failover(PLAN, "emergency", {"moves": []})
        calls: list[str] = []

        def restore() -> dict[str, int]:
            calls.append("restore")
            return {"bytes": 42}

        first = run_step(store, PLAN, "acme", "restore", restore, flow_run_id="run-1")
        second = run_step(store, PLAN, "acme", "restore", restore, flow_run_id="run-2")
        assert calls == ["restore"]
        assert (first.skipped, second.skipped, second.data) == (False, True, {"bytes": 42})

        def broken() -> None:
            raise PermanentError("disk on fire")

        with pytest.raises(PermanentError, match="disk on fire"):
            run_step(store, PLAN, "acme", "verify", broken)
        verify = store.failover_steps(PLAN, "acme")[1]
        assert verify.state == "failed" and "disk on fire" in verify.detail
        assert roll_back_steps(store, PLAN, "acme", "target lost") == ["restore"]
        # Rolled back: a rerun of the plan restores again.
        run_step(store, PLAN, "acme", "restore", restore)
        assert calls == ["restore", "restore"]


@pytest.mark.lab
def test_reachability_needs_an_ssh_banner(mod_lab: Lab, fleet: Fleet) -> None:
    ssh = fleet.server("mirror-lon1-1").ssh
    assert ssh is not None
    assert ssh_reachable(ssh.host, ssh.port) is None
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert ssh_reachable("127.0.0.1", port, timeout=1.0) is not None
    mod_lab.break_("mirror-lon1-1", "hang")  # accepts, never speaks
    try:
        down = unreachable_servers(fleet, timeout=1.0)
    finally:
        mod_lab.heal("mirror-lon1-1")
    assert set(down) == {"mirror-lon1-1"}
    assert unreachable_servers(fleet, probe=lambda host, port, timeout: "cut") == {
        s.id: "cut" for s in fleet.servers
    }
    # A mirror in object storage has no SSH to probe: never reported down for that.
    s3_only = fleet.model_copy(update={"servers": fleet.servers[:1]})
    bucket = s3_only.servers[0].model_copy(update={"ssh": None})
    assert unreachable_servers(s3_only.model_copy(update={"servers": (bucket,)})) == {}


def test_reachability_leaves_an_s3_mirror_of_the_fleet_out() -> None:
    """A fleet whose off-site mirror is a bucket: the SSH servers are probed, the bucket
    (no SSH endpoint) is not, and is never reported down for that."""
    data = lab_like_data()
    data["servers"].append(
        {"id": "mirror-s3-1", "dc": "cpt1", "role": "mirror",
         "s3": {"bucket": "ppo-offsite", "prefix": "lab", "region": "af-south-1"}}
    )  # fmt: skip
    for server in data["servers"]:
        if server["id"] == "app-lon1-1":
            server["mirrors"] = ["mirror-lon1-1", "mirror-s3-1"]
    fleet = parse_fleet(yaml.safe_dump(data), "fleet.yaml")
    assert fleet.server("mirror-s3-1").ssh is None
    asked: list[str] = []

    def probe(host: str, port: int, timeout: float) -> str | None:
        asked.append(host)
        return "refused" if host == "mirror-lon1-1.example" else None

    assert unreachable_servers(fleet, probe=probe) == {"mirror-lon1-1": "refused"}
    assert sorted(asked) == sorted(
        f"{s.id}.example" for s in fleet.servers if s.id != "mirror-s3-1"
    )


def test_restore_leftovers_of_one_client_only_are_removed(tmp_path: Path) -> None:
    sid = "2026-12-04T09-37-25Z"
    kept = [f".ppo-restore-acme-mining-{sid}", ".ppo-restore-acme-notasnapshot", "acme"]
    gone = [f".ppo-restore-acme-{sid}", f".ppo-replaced-acme-{sid}"]
    for name in kept + gone:
        (tmp_path / name / "d").mkdir(parents=True)
    assert steps.remove_restore_leftovers(LocalRemote(), str(tmp_path / "acme")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    assert steps.remove_restore_leftovers(LocalRemote(), str(tmp_path / "nowhere" / "x")) == 0
