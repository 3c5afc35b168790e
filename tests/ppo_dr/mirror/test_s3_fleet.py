"""A fleet whose off-site mirror is an S3 bucket (``servers[].s3`` in fleet.yaml): the
lab's app server snapshots to its on-site mirror over SSH and to S3 on moto's server
(the real boto3 client, loopback only) in one run; both verify and restore alike."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from ppo_dr.fleet_access import FleetAccess, S3Connector, mirror_plan
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.mirror.api import list_snapshots, restore, verify
from ppo_dr.mirror.fleet_targets import mirror_targets
from ppo_dr.mirror.runbook import snapshot_app_server
from ppo_dr.transport import LocalRemote
from ppo_dr.transport.s3 import S3Remote
from ppo_dr.transport.ssh import SshRemote
from tests.ppo_dr.mirror.helpers import tree_state
from tests.s3 import S3_KEY_ID, S3_REGION, S3_SECRET

pytestmark = pytest.mark.timeout(180)

S3_MIRROR = "mirror-s3-test"


@pytest.fixture
def s3_fleet(
    lab: Lab, s3_bucket: str, moto_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Fleet, str, Path]]:
    """The lab's fleet with its first app server's off-site mirror replaced by an S3
    bucket, credentials as env references; (fleet, app server id, fleet file)."""
    monkeypatch.setenv("PPO_TEST_S3_KEY_ID", S3_KEY_ID)
    monkeypatch.setenv("PPO_TEST_S3_SECRET", S3_SECRET)
    base = load_fleet(lab.fleet_file)
    app = next(s for s in base.servers_by_role("app") if base.clients_on(s.id))
    offsite_dc = base.offsite_mirrors(app.id)[0].dc
    doc: dict[str, Any] = yaml.safe_load(lab.fleet_file.read_text(encoding="utf-8"))
    doc["servers"].append(
        {
            "id": S3_MIRROR,
            "dc": offsite_dc,
            "role": "mirror",
            "s3": {
                "bucket": s3_bucket,
                "prefix": "lab/offsite",
                "region": S3_REGION,
                "endpoint_url": moto_s3_endpoint,
                "access_key_id": {"env": "PPO_TEST_S3_KEY_ID"},
                "secret_access_key": {"env": "PPO_TEST_S3_SECRET"},
            },
        }
    )
    for server in doc["servers"]:
        if server["id"] == app.id:
            server["mirrors"] = [base.onsite_mirror(app.id).id, S3_MIRROR]
    # Next to the lab's own file, so the relative paths in it mean the same.
    path = lab.fleet_file.with_name(f"fleet-s3-{s3_bucket}.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    try:
        yield load_fleet(path), app.id, path
    finally:
        path.unlink()


def test_snapshot_verify_restore_with_an_s3_offsite_mirror(
    s3_fleet: tuple[Fleet, str, Path],
    s3_loopback_only: list[str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet, app_id, _ = s3_fleet
    onsite_id = fleet.onsite_mirror(app_id).id
    assert [m.id for m in fleet.offsite_mirrors(app_id)] == [S3_MIRROR]
    assert dict((m.id, p) for m, p in mirror_plan(fleet, app_id))[S3_MIRROR] == (f"/repos/{app_id}")
    caplog.set_level(logging.DEBUG)
    with FleetAccess(fleet, state_dir=tmp_path / "state") as access:
        key = access.mirror_key
        run = snapshot_app_server(access, app_id, hook=False)
        assert run.clients and run.unreachable == {}
        for client in run.clients:
            for mirror in (onsite_id, S3_MIRROR):
                status, error, sent, _ = run.outcome(client, mirror)
                assert status == "complete", (client, mirror, error)
                assert sent > 0

        targets = {t.mirror_id: t for t in mirror_targets(fleet, app_id, access).targets}
        assert isinstance(targets[onsite_id].remote, SshRemote)
        offsite = targets[S3_MIRROR]
        assert isinstance(offsite.remote, S3Remote)
        assert offsite.remote.label == f"s3://{fleet.server(S3_MIRROR).s3.bucket}/lab/offsite"  # type: ignore[union-attr]
        # The process factory pickles (for upload/restore workers) and never shows a key.
        assert isinstance(offsite.connect, S3Connector)
        assert S3_SECRET not in repr(offsite.connect) and S3_KEY_ID not in repr(offsite.connect)
        assert pickle.loads(pickle.dumps(offsite.connect)) == offsite.connect  # noqa: S301

        for target in targets.values():
            report = verify(target, key=key, read_data=True)
            assert report.ok, (target.mirror_id, report.problems)
        client = run.clients[0]
        snap = run.snapshot_id(client)
        assert [s.snapshot_id for s in list_snapshots(offsite, client, key=key)] == [snap]

        # The same snapshot restored from each mirror alone: identical trees.
        trees = {}
        for mirror_id, target in targets.items():
            dest = tmp_path / f"restore-{mirror_id}"
            result = restore([target], client, snap, LocalRemote(), str(dest), key=key)
            assert result.refused == [] and result.files > 0
            assert set(result.served_by) <= {mirror_id}
            trees[mirror_id] = tree_state(dest)
        assert trees[S3_MIRROR] == trees[onsite_id]
        assert any(v[0] == "file" and v[3] for v in trees[S3_MIRROR].values())

    # Credentials never reach a log record (boto3 and ours ran at DEBUG).
    assert S3_SECRET not in caplog.text
    assert S3_KEY_ID not in caplog.text


def test_an_s3_mirror_has_no_host_key_and_is_not_reached_over_ssh(
    s3_fleet: tuple[Fleet, str, Path], tmp_path: Path
) -> None:
    fleet, app_id, path = s3_fleet
    with FleetAccess(fleet, state_dir=tmp_path / "state") as access:
        assert S3_MIRROR not in access.known_hosts.read_text()
        assert fleet.server(S3_MIRROR).ssh is None
        connector = access.s3_connector(S3_MIRROR)
        assert connector.access_key_id is not None
        assert connector.access_key_id.get_secret_value() == S3_KEY_ID

    # Not a restore destination: refused with a reason, before anything is written.
    client = fleet.clients_on(app_id)[0].id
    done = CliRunner().invoke(
        app, ["mirror", "restore", client, "--to", S3_MIRROR, "--fleet", str(path)]
    )
    assert done.exit_code != 0
    assert "is an S3 mirror, not a server" in done.output
