"""Benchmark: the check after a mirror run, whole repository vs what the run wrote, over
a slow link, as the repository's history grows.

One mirror is an OpenSSH sshd on 127.0.0.1. Its repository gets N runs of a few
clients (each run adds a file per client, so each run writes new packs and the data
spreads over more pack folders), written over the direct port. Then both checks read
it through the lab's network simulator (``ppo_dr.lab.netsim``, the latency fault's
impairment: a round trip added to every chunk, no loss) in front of the same sshd:

  whole    ``verify``: every pack folder listed, every manifest and index file read
           (what every mirror run did until 2026-12-06; now once a day per machine)
  written  ``verify_written`` of the last run's snapshots: their manifests, their
           blobs indexed, their packs stat-ed together (``SshRemote.stat_many``)

at several points of the history, each timed ROUNDS times (medians, min-max). No
peer tool is run: rsync has no check of what it sent, and restic (whose ``check``
is the peer) is not installed here. The ratio printed is written / whole.

    .venv/bin/python bench/verify_after_run.py [--rtt-ms 100] [--runs 6,24] [--clients 3]

Not run by CI: minutes over the slowed link.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.local_server import free_port
from ppo_dr.mirror.api import (
    ClientSource,
    MirrorTarget,
    ensure_repository,
    snapshot_server,
    verify,
    verify_written,
)
from ppo_dr.transport import LocalRemote
from ppo_dr.transport.ssh import SshRemote
from tests.sshd import SshdServer, running_sshd

#: When the first run's snapshot is taken (one an hour after it).
START = datetime(2026, 12, 1, tzinfo=UTC)


def connect(sshd: SshdServer, port: int, known_hosts: Path) -> SshRemote:
    return SshRemote.connect(
        sshd.host, port, sshd.user, key_file=sshd.client_key, known_hosts=known_hosts
    )


def start_netsim(
    work: Path, sshd: SshdServer, rtt_ms: float
) -> tuple[subprocess.Popen[bytes], int]:
    """The lab's network simulator forwarding a free port to *sshd*, slowed by *rtt_ms*."""
    net = work / "net"
    net.mkdir()
    port = free_port()
    route = {"server": "m1", "listen": port, "target": sshd.port}
    (net / "routes.json").write_text(json.dumps({"routes": [route]}))
    (net / "slow.json").write_text(json.dumps({"servers": {"m1": {"rtt_ms": rtt_ms, "loss": 0}}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppo_dr.lab.netsim", "--config", str(net / "routes.json")],
        stdout=subprocess.DEVNULL,
        stderr=(work / "netsim.log").open("wb"),
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"netsim did not listen on {port}: {(work / 'netsim.log').read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt-ms", type=float, default=100.0)
    parser.add_argument("--runs", default="6,24", help="history points, in runs (ascending)")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    points = sorted({int(p) for p in args.runs.split(",")})
    os.environ["PPO_DR_INDEX_CACHE"] = tempfile.mkdtemp(prefix="ppo-bench-cache-")

    work = Path(tempfile.mkdtemp(prefix="ppo-bench-verify-"))
    src = work / "src"
    clients = [f"c{i}" for i in range(1, args.clients + 1)]
    for client in clients:
        (src / client).mkdir(parents=True)
        for i in range(20):
            (src / client / f"f{i}").write_bytes(os.urandom(30_000))
    print(f"{args.clients} clients, 20 files of 30 kB each to start; work in {work}", flush=True)
    table: list[tuple[int, int, list[float], list[float]]] = []
    with running_sshd(work / "sshd") as sshd:
        netsim, slow_port = start_netsim(work, sshd, args.rtt_ms)
        try:
            known = work / "known_hosts"
            known.write_text(
                sshd.known_hosts.read_text() + f"[{sshd.host}]:{slow_port} {sshd.host_public_key}\n"
            )
            repo = str(sshd.data_root / "repos" / "app1")
            with connect(sshd, sshd.port, known) as fast, connect(sshd, slow_port, known) as slow:
                writer = MirrorTarget("m1", fast, repo)
                reader = MirrorTarget("m1", slow, repo)
                ensure_repository(writer, app_server="app1", compression="none")
                snapshots: dict[str, str] = {}
                for run in range(1, points[-1] + 1):
                    for client in clients:
                        (src / client / f"new{run}").write_bytes(os.urandom(4_000))
                    results = snapshot_server(
                        LocalRemote(),
                        "app1",
                        [ClientSource(c, str(src / c)) for c in clients],
                        [writer],
                        taken_at=START + timedelta(hours=run),
                    )
                    snapshots = {r.client_id: r.snapshot_id for r in results}
                    if run not in points:
                        continue
                    folders = sum(1 for p in Path(repo, "packs").iterdir() if p.is_dir())
                    whole: list[float] = []
                    written: list[float] = []
                    for _ in range(args.rounds):
                        started = time.monotonic()
                        assert verify(reader).ok
                        whole.append(time.monotonic() - started)
                        started = time.monotonic()
                        assert verify_written(reader, snapshots=snapshots).ok
                        written.append(time.monotonic() - started)
                    print(
                        f"  after {run} runs ({folders} pack folders): whole "
                        + ", ".join(f"{s:.1f}" for s in whole)
                        + " s; written "
                        + ", ".join(f"{s:.1f}" for s in written)
                        + " s",
                        flush=True,
                    )
                    table.append((run, folders, whole, written))
        finally:
            netsim.terminate()
            netsim.wait(10)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(os.environ["PPO_DR_INDEX_CACHE"], ignore_errors=True)

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"

    print(
        f"\nmedians of {args.rounds} rounds (min-max), seconds; one mirror (OpenSSH sshd on "
        f"127.0.0.1) behind netsim adding {args.rtt_ms:.0f} ms per round trip; "
        f"{args.clients} clients; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"{'runs':>5} {'pack folders':>12} {'whole':>20} {'written':>20} {'ratio':>7}")
    for run, folders, whole, written in table:
        ratio = statistics.median(written) / statistics.median(whole)
        print(f"{run:5d} {folders:12d} {cell(whole):>20} {cell(written):>20} {ratio:6.2f}x")


if __name__ == "__main__":
    main()
