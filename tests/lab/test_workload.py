"""The workload: numbered writes through the front door, acks only for acknowledged writes.

The chain is the lab's: ``python -m ppo_dr.lab.workload`` -> ``python -m
ppo_dr.lab.frontdoor`` (placements in a real store) -> ``python -m ppo_dr.lab.server``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import MiniLab, free_port, wait_for_port

from ppo_dr.lab.workload import acked_seqs, lost_writes, read_acks
from ppo_dr.store import Store

pytestmark = [pytest.mark.timeout(60)]

APP = "app-jhb1-1"


# ------------------------------------------------------------------------ pure helpers


def _ack(client: str, seq: int) -> str:
    return json.dumps({"client": client, "seq": seq, "ts": "t", "server": APP}) + "\n"


def test_lost_writes_lists_acknowledged_records_missing_from_a_journal(tmp_path: Path) -> None:
    acks = tmp_path / "acks.jsonl"
    acks.write_text(
        _ack("acme", 1) + _ack("acme", 2) + _ack("globex", 2) + _ack("acme", 4) + '{"client": "ac'
    )
    journal = [
        b'{"seq": 1, "ts": "t", "writer": "w", "server": "a"}',
        b'{"seq": 3, "ts": "t", "writer": "w", "server": "a"}',  # written, never acked: fine
        b'{"seq": 4, "ts": "t", "wri',  # torn by a crash: does not count as present
    ]
    assert lost_writes(acks, "acme", journal) == [2, 4]
    assert lost_writes(acks, "globex", []) == [2]
    assert lost_writes(acks, "initech", journal) == []
    assert acked_seqs(acks, "acme") == [1, 2, 4]
    assert lost_writes(tmp_path / "missing.jsonl", "acme", journal) == []
    assert len(read_acks(acks)) == 4


# ------------------------------------------------------------------------ the chain


@dataclass
class Chain:
    lab: MiniLab
    store: Store
    frontdoor: str
    config: Path

    @property
    def acks(self) -> Path:
        return self.lab.dir / "workload" / "acks.jsonl"

    @property
    def status_path(self) -> Path:
        return self.lab.dir / "workload" / "status.json"

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_path.read_text())["clients"])
        except (FileNotFoundError, ValueError):
            return {}

    def journal(self, client: str) -> list[bytes]:
        return (self.lab.client_dir(APP, client) / "journal/journal.log").read_bytes().splitlines()

    def start(self) -> subprocess.Popen[bytes]:
        return self.lab.procs.start("workload", self.config)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0

    def wait(self, what: Callable[[dict[str, Any]], bool], timeout: float = 8) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status and what(status):
                return status
            time.sleep(0.05)
        log = self.lab.procs.log_of("workload")
        pytest.fail(f"workload status never got there: {self.status()}\n{log}")


def _write_workload_config(
    lab: MiniLab, frontdoor: str, interval: float, store_url: str | None = None
) -> Path:
    config = lab.dir / "workload.json"
    config.write_text(
        json.dumps(
            {
                "lab_dir": str(lab.dir),
                "frontdoor": frontdoor,
                "interval": interval,
                "acks": str(lab.dir / "workload" / "acks.jsonl"),
                "fleet": str(lab.fleet_path),
                "store_url": store_url,
            }
        )
    )
    return config


@pytest.fixture
def chain(rt_fresh_minilab: MiniLab) -> Iterator[Chain]:
    lab = rt_fresh_minilab
    lab.start_server(APP)
    url = f"sqlite:///{lab.dir / 'state.db'}"
    store = Store(url)
    store.upgrade()
    store.seed_placements({"acme": APP, "globex": APP})
    port = free_port()
    door = lab.dir / "frontdoor.json"
    door.write_text(
        json.dumps(
            {"lab_dir": str(lab.dir), "port": port, "fleet": str(lab.fleet_path), "store_url": url}
        )
    )
    proc = lab.procs.start("frontdoor", door)
    wait_for_port(port, proc, lab.procs.logs / "frontdoor.log")
    frontdoor = f"http://127.0.0.1:{port}"
    try:
        yield Chain(lab, store, frontdoor, _write_workload_config(lab, frontdoor, 0.2, url))
    finally:
        store.close()


@pytest.mark.lab
def test_only_acknowledged_writes_are_logged_and_none_is_lost(chain: Chain) -> None:
    proc = chain.start()
    chain.wait(lambda s: all(s.get(c, {}).get("acked", 0) >= 3 for c in ("acme", "globex")))

    assert chain.lab.ssh(APP, "freeze globex").returncode == 0
    frozen = chain.wait(lambda s: s["globex"]["failures"] >= 2)
    assert "frozen" in frozen["globex"]["last_error"]
    chain.stop(proc)

    status = chain.status()
    assert status["acme"]["failures"] == 0
    # Every request sent is counted in the store, per client and minute (the load the
    # rebalance weighs); at 5 a second, a busiest minute of at least 3.
    peaks = chain.store.peak_rpm(datetime.now(UTC) - timedelta(hours=1))
    assert set(peaks) == {"acme", "globex"} and min(peaks.values()) >= 3
    for client in ("acme", "globex"):
        assert lost_writes(chain.acks, client, chain.journal(client)) == []
        acked = acked_seqs(chain.acks, client)
        assert acked == list(range(1, len(acked) + 1))  # in order, no gaps while healthy
        assert status[client]["last_ok_seq"] == acked[-1]
    # Writes refused while frozen used up their numbers but are neither acked nor written.
    journal_seqs = {json.loads(line)["seq"] for line in chain.journal("globex")}
    refused = set(range(1, status["globex"]["last_sent_seq"] + 1)) - journal_seqs
    assert refused and not refused & set(acked_seqs(chain.acks, "globex"))
    assert {a["server"] for a in read_acks(chain.acks)} == {APP}

    # A restarted workload continues after the highest number used; none is reused.
    assert chain.lab.ssh(APP, "unfreeze globex").returncode == 0
    before = {c: s["last_sent_seq"] for c, s in status.items()}
    proc = chain.start()
    chain.wait(lambda s: all((s[c]["last_ok_seq"] or 0) > before[c] + 1 for c in before))
    chain.stop(proc)
    for client, last in before.items():
        new = [seq for seq in acked_seqs(chain.acks, client) if seq > last]
        assert new[0] == last + 1
        assert lost_writes(chain.acks, client, chain.journal(client)) == []


@pytest.mark.lab
def test_a_hung_front_door_costs_each_write_its_timeout_not_the_whole_round(
    rt_fresh_minilab: MiniLab,
) -> None:
    lab = rt_fresh_minilab
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)  # accepts, never answers
    try:
        config = _write_workload_config(lab, f"http://127.0.0.1:{hung.getsockname()[1]}", 0.2)
        proc = lab.procs.start("workload", config)
        chain = Chain(lab, None, "", config)  # type: ignore[arg-type]
        chain.wait(lambda s: all(s[c]["failures"] >= 1 for c in ("acme", "globex")))
        first = time.monotonic()
        status = chain.wait(lambda s: all(s[c]["failures"] >= 2 for c in ("acme", "globex")))
        between = time.monotonic() - first
        chain.stop(proc)
    finally:
        hung.close()
    # Each attempt waited its own 2 s, all clients at once; then the next round began.
    assert 1.5 < between < 4
    assert "no answer within 2 s" in status["acme"]["last_error"]
    assert read_acks(chain.acks) == []
    assert proc.returncode == 0
