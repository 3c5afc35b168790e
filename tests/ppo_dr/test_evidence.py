"""Evidence bundles without Prefect: the manifest and its check, the wait for lagging
task runs (pure), and an export from a real SQLite store whose run history is handed in
(the Prefect half is tested in tests/cli/test_evidence.py)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ppo_dr.errors import PermanentError
from ppo_dr.evidence import BUNDLE_ENTRY, MANIFEST, RunsRead, check_bundle, export_bundle
from ppo_dr.evidence.manifest import parse_manifest, write_manifest
from ppo_dr.evidence.settle import TaskRunRead, lagging_runs
from ppo_dr.run_links import flow_run_link, ui_base
from ppo_dr.store import Store

T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
RUN = "4b7d2f0e-8a51-4c52-9a3e-6f1e2d3c4b5a"


# --------------------------------------------------------------------------- manifest


def bundle(tmp_path: Path) -> Path:
    directory = tmp_path / "bundle"
    (directory / "sub").mkdir(parents=True)
    (directory / "a.jsonl").write_text('{"x": 1}\n')
    (directory / "sub" / "b.txt").write_text("b")
    return directory


def swap_for_link(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def test_an_untouched_bundle_is_intact_and_sha256sum_reads_its_manifest(tmp_path: Path) -> None:
    directory = bundle(tmp_path)
    digest = write_manifest(directory)
    lines = (directory / MANIFEST).read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["a.jsonl", "sub/b.txt"]
    check = check_bundle(directory)
    assert check.intact and check.files == 2 and check.bundle_hash == digest


@pytest.mark.parametrize(
    ("change", "added", "removed", "edited"),
    [
        (lambda d: (d / "new.txt").write_text("n"), ("new.txt",), (), ()),
        (lambda d: (d / "sub" / "b.txt").unlink(), (), ("sub/b.txt",), ()),
        (lambda d: (d / "a.jsonl").write_text('{"x": 2}\n'), (), (), ("a.jsonl",)),
        (lambda d: (d / "sub" / "b.txt").rename(d / "c.txt"), ("c.txt",), ("sub/b.txt",), ()),
        (lambda d: swap_for_link(d / "a.jsonl", d / "sub"), (), (), ("a.jsonl",)),
        (lambda d: (d / "link").symlink_to("/etc"), ("link",), (), ()),
    ],
    ids=["added", "removed", "edited", "renamed", "swapped-for-a-link", "link-added"],
)
def test_every_added_removed_or_edited_file_is_named(
    tmp_path: Path,
    change: object,
    added: tuple[str, ...],
    removed: tuple[str, ...],
    edited: tuple[str, ...],
) -> None:
    directory = bundle(tmp_path)
    write_manifest(directory)
    change(directory)  # type: ignore[operator]
    check = check_bundle(directory)
    assert not check.intact
    assert (check.added, check.removed, check.edited) == (added, removed, edited)


def test_a_rewritten_manifest_changes_the_bundle_hash(tmp_path: Path) -> None:
    directory = bundle(tmp_path)
    before = write_manifest(directory)
    (directory / "a.jsonl").write_text("forged\n")
    assert write_manifest(directory) != before  # so the hash in the store no longer matches


def test_no_manifest_or_a_malformed_one_is_refused(tmp_path: Path) -> None:
    directory = bundle(tmp_path)
    with pytest.raises(PermanentError, match=r"no MANIFEST\.sha256: not an evidence bundle"):
        check_bundle(directory)
    with pytest.raises(PermanentError, match="not a directory"):
        check_bundle(tmp_path / "missing")
    with pytest.raises(PermanentError, match="line 2"):
        parse_manifest(f"{'0' * 64}  a\nnot a line\n", "M")
    with pytest.raises(PermanentError, match="line 2"):
        parse_manifest(f"{'0' * 64}  a\n{'1' * 64}  a\n", "M")  # one file listed twice


# --------------------------------------------------------------------------- waiting


@pytest.mark.parametrize(
    ("previous", "read", "lagging"),
    [
        (None, TaskRunRead({"r1": 3}), {"r1"}),  # first read: always look twice
        ({"r1": 3}, TaskRunRead({"r1": 3}), set()),
        ({"r1": 2}, TaskRunRead({"r1": 3}), {"r1"}),  # still arriving
        ({"r1": 3}, TaskRunRead({"r1": 3}, unfinished={"r1": 1}), {"r1"}),
        ({"r1": 3}, TaskRunRead({"r1": 3}, unfinished={"r1": 0}), set()),
        ({"r1": 3}, TaskRunRead({"r1": 3}, missing={"r1": {"t9"}}), {"r1"}),
        ({"r1": 3}, TaskRunRead({"r1": 3}, missing={"r1": set()}), set()),
        ({"r1": 3, "r2": 0}, TaskRunRead({"r1": 3, "r2": 1}), {"r2"}),
        ({}, TaskRunRead({}), set()),
    ],
)
def test_a_run_lags_while_its_task_runs_look_incomplete(
    previous: dict[str, int] | None, read: TaskRunRead, lagging: set[str]
) -> None:
    assert lagging_runs(previous, read) == lagging


def test_links_to_the_prefect_ui() -> None:
    assert ui_base("http://127.0.0.1:4200/api/") == "http://127.0.0.1:4200"
    assert ui_base(None) is None
    assert flow_run_link("http://h:4200", RUN) == f"http://h:4200/runs/flow-run/{RUN}"
    assert flow_run_link(None, RUN) is None
    assert flow_run_link("http://h:4200", None) is None


# --------------------------------------------------------------------------- export


def failed_page(store: Store, incident_id: int, at: datetime, error: str) -> None:
    """An SMS page to anna that failed with *error*."""
    key = f"incident:{incident_id}/step:page/to:anna/via:sms"
    store.record_notice(
        key, incident_id=incident_id, step="page", channel="sms", recipient="anna",
        subject="s", body="b", at=at,
    )  # fmt: skip
    store.mark_notice_failed(key, error)


def incident_in(store: Store) -> int:
    incident, _ = store.open_incident(
        "outage",
        "outage:server:app-jhb1-1",
        "app server app-jhb1-1 down",
        {"level": "server", "servers": ["app-jhb1-1"], "dcs": ["jhb1"], "clients": ["acme"]},
        flow_run_id=RUN,
        at=T0,
    )
    store.add_timeline(incident.id, "first-failure", "probe", at=T0 - timedelta(seconds=30))
    failed_page(store, incident.id, T0, "SNS throttled")
    for target, at in (
        ("client:acme", T0),
        ("client:other", T0),
        ("client:acme", T0 + timedelta(hours=3)),
    ):
        store.record_probe_transition(target, "up", "down", at=at)
    store.start_maintenance("server", "app-jhb1-1", starts_at=T0 - timedelta(minutes=5))
    store.start_maintenance("server", "app-cpt1-1", starts_at=T0 - timedelta(minutes=5))
    store.start_maintenance(
        "dc", "jhb1", starts_at=T0 - timedelta(days=2), ends_at=T0 - timedelta(days=1)
    )
    store.mark_recovered(incident.id, at=T0 + timedelta(minutes=10))
    return incident.id


class Runs:
    """The run history as the deployments layer hands it in; records what was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, list[str]]] = []

    def __call__(self, tag: str, run_ids: Iterable[str]) -> RunsRead:
        self.asked.append((tag, list(run_ids)))
        flow_run = {"id": RUN, "name": "probe-fleet-x", "state_name": "Completed"}
        return RunsRead({"flow_runs": [flow_run], "task_runs": []}, 1.5, ())


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_writes_every_record_and_records_the_bundle_hash(
    store: Store, tmp_path: Path
) -> None:
    incident_id = incident_in(store)
    runs = Runs()
    out = tmp_path / "evidence"
    result = export_bundle(
        store,
        incident_id,
        out,
        read_runs=runs,
        wait_bound_s=60,
        now=T0 + timedelta(hours=5),
        ui_url="http://127.0.0.1:4200",
        make_zip=True,
    )
    assert runs.asked == [(f"incident:{incident_id}", [RUN])]
    assert check_bundle(out).intact and check_bundle(out).bundle_hash == result.bundle_hash
    notices = lines(out / "notices.jsonl")
    assert [(n["status"], n["error"], n["attempts"]) for n in notices] == [
        ("failed", "SNS throttled", 1)
    ]
    transitions = lines(out / "probe_transitions.jsonl")
    assert [(t["target"], t["at"]) for t in transitions] == [("client:acme", T0.isoformat())]
    windows = lines(out / "maintenance_windows.jsonl")
    assert [(w["scope_kind"], w["scope_id"]) for w in windows] == [("server", "app-jhb1-1")]
    assert lines(out / "flow_runs.jsonl")[0]["name"] == "probe-fleet-x"
    meta = lines(out / "bundle.jsonl")[0]
    assert meta["task_run_wait"] == {"bound_s": 60, "waited_s": 1.5, "lagging": []}
    index = (out / "index.html").read_text()
    assert f'href="http://127.0.0.1:4200/runs/flow-run/{RUN}"' in index
    assert 'href="notices.jsonl"' in index and 'href="report.html"' in index
    entry = store.timeline(incident_id)[-1]
    assert entry.kind == BUNDLE_ENTRY and entry.data["bundle_sha256"] == result.bundle_hash
    assert result.zip_path is not None
    with zipfile.ZipFile(result.zip_path) as archive:
        assert "evidence/MANIFEST.sha256" in archive.namelist()


def test_a_non_empty_directory_or_unknown_incident_is_refused_and_nothing_changes(
    store: Store, tmp_path: Path
) -> None:
    incident_id = incident_in(store)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "other.txt").write_text("another bundle")
    entries = len(store.timeline(incident_id))

    def export(directory: Path, incident: int) -> None:
        export_bundle(store, incident, directory, read_runs=Runs(), wait_bound_s=0, now=T0)

    with pytest.raises(PermanentError, match="exists and is not empty"):
        export(taken, incident_id)
    assert [p.name for p in taken.iterdir()] == ["other.txt"]
    with pytest.raises(
        PermanentError,
        match=f"no incident with id 99: the store holds incidents {incident_id}-{incident_id}",
    ):
        export(tmp_path / "new", 99)
    assert not (tmp_path / "new").exists()
    assert len(store.timeline(incident_id)) == entries
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial
