"""The mirror-side faults' readers: the gap the mirror runs really leave (a loaded lab
starts them late), and a pinned key's fingerprint as OpenSSH and paramiko print it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paramiko
import pytest

from ppo_dr.lab.chaos.mirror_faults import host_key_fingerprint, run_gap
from ppo_dr.lab.keys import generate_keypair
from ppo_dr.mirror.manifest import snapshot_id_for
from ppo_dr.store import Store

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        opened.upgrade()
        yield opened


def _run(store: Store, seconds: float, clients: tuple[str, ...] = ("a", "b")) -> None:
    taken = T0 + timedelta(seconds=seconds)
    for client in clients:
        for mirror in ("m-on", "m-off"):
            store.record_snapshot(
                server_id="app-1",
                client_id=client,
                mirror_id=mirror,
                snapshot_id=snapshot_id_for(taken),
                taken_at=taken,
                files=1,
                bytes=1,
                new_bytes=1,
            )


def test_the_gap_is_the_median_between_the_last_runs(store: Store) -> None:
    assert run_gap(store, ["a", "b"]) == 0.0
    _run(store, 0)
    assert run_gap(store, ["a", "b"]) == 0.0  # one run: no gap yet
    for seconds in (60, 120, 400, 640, 880, 1120):  # late runs: 4 min apart
        _run(store, seconds)
    assert run_gap(store, ["a", "b"]) == 240.0
    assert run_gap(store, ["a", "b"], runs=3) == 240.0
    assert run_gap(store, ["someone-else"]) == 0.0


def test_the_fingerprint_of_a_pinned_key_is_the_one_paramiko_sees(tmp_path: Path) -> None:
    public = generate_keypair(tmp_path / "host", "test")
    seen = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "host")).fingerprint
    assert host_key_fingerprint(public) == seen
    assert seen.startswith("SHA256:") and not seen.endswith("=")
