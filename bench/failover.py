"""Benchmark: failover of a power-killed app server's clients, and restore vs `rsync -a`.

A lab of its own (20 clients, ~200 MB, ``--fast`` timings) in a temporary directory,
every app server mirrored once (snapshot, catalogue, verify) while the workload
writes. Then, per round:

  1. the app server with the most clients is power-killed (``kill -9``);
  2. the outage is DECLARED by opening its incident in the store exactly as the probe
     does when its state machine says ``down`` (``Store.open_incident``; the probe's
     own detection latency is bench/detection_latency.py's subject, not this one's);
  3. the real failover flow runs on a real Prefect API (``prefect_test_harness``),
     approved up front (``approve=True``, as ``auto_failover`` does);
  4. a watcher polls every victim's ``/health`` through the front door from the
     declaration on: "all healthy" is the moment the last one answers 200 from its new
     home. The flow returns later (it also re-establishes mirroring).

Per client, from the store's ledger: RTO (declaration -> healthy), RPO (snapshot age
at declaration), acknowledged writes lost (workload log vs restored journal), and the
restore's MB/s. Target on a 2-core machine: all healthy within 60 s.

Then the restore itself is compared with rsync, each client in turn, same bytes, both
writing over SSH into one OpenSSH sshd on 127.0.0.1 (aes128-gcm, as
bench/mirror_vs_rsync.py):

  ours    restore of the snapshot the failover used, from the mirror it used (a lab
          SSH server: read over SSH, decrypt, re-hash every blob), written through sshd
  rsync   ``rsync -a`` of the same files, restored plainly to local disk first (so it
          reads plaintext from the local page cache: the most favourable case for it),
          pushed through the same sshd into an empty directory

The restored trees are compared (``diff -r``). Each round uses a fresh lab, so the
kill, the failover and the mirrors are the same every time; the table gives medians.

    .venv/bin/python bench/failover.py [--rounds 3] [--clients 20] [--size-mb 200]

Not run by CI: a round takes a few minutes and ~1 GB of disk.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppo_dr.fleet_access import FleetAccess, repo_path
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.lost_writes import record_lost_writes
from ppo_dr.lab.supervisor import Lab
from ppo_dr.mirror.restore import restore
from ppo_dr.mirror.results import MirrorTarget
from ppo_dr.store import Store
from ppo_dr.transport import LocalRemote
from ppo_dr.transport.ssh import SshRemote
from tests.labs import mirror_all
from tests.sshd import SshdServer, running_sshd

CIPHER = "aes128-gcm@openssh.com"
TARGET_S = 60.0
POLL_S = 0.25
WARMUP_S = 3.0  # acknowledged writes before the first snapshot


@dataclass
class Round:
    """What one round measured."""

    victim: str
    clients: list[str]
    healthy_s: float  # declaration -> the last victim healthy through the front door
    flow_s: float  # declaration -> the flow returned (mirroring re-established too)
    per_client: list[dict[str, Any]] = field(default_factory=list)
    restore_mb: float = 0.0
    restore_span_s: float = 0.0  # first restore started -> last finished (in parallel)
    ours_ssh_s: float = 0.0
    ours_local_s: float = 0.0
    rsync_s: float = 0.0
    same: bool = True


# --------------------------------------------------------------------------- the lab


@contextmanager
def lab_of_its_own(work: Path, clients: int, size_mb: int) -> Iterator[Lab]:
    lab = Lab(work / "lab")
    try:
        lab.up(clients=clients, size_mb=size_mb, fast=True, timeout=120.0)
        yield lab
    finally:
        lab.down()


def healthy_from(fleet: Fleet, client_id: str, lost: str) -> bool:
    """True if the client answers 200 through the front door from a server not *lost*."""
    url = str(fleet.client(client_id).url).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return response.status == 200 and response.headers.get("X-PPO-Server") != lost
    except (urllib.error.URLError, OSError):
        return False


class Watcher(threading.Thread):
    """Polls the victims' health through the front door; when each first became healthy."""

    def __init__(self, fleet: Fleet, clients: list[str], lost: str, since: float) -> None:
        super().__init__(daemon=True)
        self.fleet, self.clients, self.lost, self.since = fleet, clients, lost, since
        self.healthy_at: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.healthy_at) < len(self.clients):
            for client in self.clients:
                if client not in self.healthy_at and healthy_from(self.fleet, client, self.lost):
                    self.healthy_at[client] = time.monotonic() - self.since
            self.stop.wait(POLL_S)


# --------------------------------------------------------------------------- the failover


def fail_over(lab: Lab) -> Round:
    """Kill the busiest app server, declare, run the failover flow; what it measured."""
    from flows.failover import failover

    fleet = load_fleet(lab.fleet_file)
    homes = lab.client_homes()
    apps = [s.id for s in fleet.servers_by_role("app")]
    victim = max(apps, key=lambda s: (sum(1 for h in homes.values() if h == s), s))
    clients = sorted(c for c, h in homes.items() if h == victim)
    lab.break_(victim, "power")
    with Store.open(lab.store_url) as store:
        incident, _ = store.open_incident(
            "outage", f"server:{victim}", f"{victim} down", {"server": victim}
        )
    declared = time.monotonic()
    watcher = Watcher(fleet, clients, victim, declared)
    watcher.start()
    result = failover(
        server=victim, incident_id=incident.id, approve=True, fleet_file=lab.fleet_file
    )
    flow_s = time.monotonic() - declared
    watcher.join(timeout=30)
    watcher.stop.set()
    if not isinstance(result, dict) or result.get("state") != "done":
        raise SystemExit(f"failover did not finish: {result}")
    missing = sorted(set(clients) - set(watcher.healthy_at))
    if missing:
        raise SystemExit(f"never healthy through the front door: {missing}")
    rnd = Round(victim, clients, max(watcher.healthy_at.values()), flow_s)
    record_lost_writes(lab.fleet_file, result["plan_id"])  # the lab's measure, not the runbook's
    with Store.open(lab.store_url) as store:
        results = {r.client_id: r for r in store.failover_results(result["plan_id"])}
        restores = [s for s in store.failover_steps(result["plan_id"]) if s.step == "restore"]
    for client in clients:
        r = results[client]
        rnd.per_client.append(
            {
                "client": client,
                "to": r.to_server,
                "mirror": r.source_mirror,
                "snapshot": r.snapshot_id,
                "healthy_s": watcher.healthy_at[client],
                "rto_s": r.rto_seconds,
                "rpo_s": r.rpo_seconds,
                "lost": r.lost_writes,
                "mb": (r.restored_bytes or 0) / 1e6,
                "restore_s": r.restore_seconds or 0.0,
            }
        )
    rnd.restore_mb = sum(c["mb"] for c in rnd.per_client)
    starts = [s.started_at for s in restores if s.started_at]
    ends = [s.finished_at for s in restores if s.finished_at]
    if starts and ends:
        rnd.restore_span_s = (max(ends) - min(starts)).total_seconds()
    return rnd


# --------------------------------------------------------------------------- restore vs rsync


def ssh_command(server: SshdServer) -> str:
    return (
        f"ssh -c {CIPHER} -i {server.client_key} -p {server.port} "
        f"-o UserKnownHostsFile={server.known_hosts} -o StrictHostKeyChecking=yes "
        "-o BatchMode=yes -o Compression=no"
    )


def compare_with_rsync(lab: Lab, rnd: Round, sshd: SshdServer, work: Path, index: int) -> None:
    """Restore each victim client's snapshot through sshd, ours then rsync's (order
    alternating by round), and diff the two trees."""
    fleet = load_fleet(lab.fleet_file)
    plain = work / f"plain{index}"
    ours_root = sshd.data_root / f"ours{index}"
    theirs_root = sshd.data_root / f"rsync{index}"

    def connect() -> SshRemote:
        return SshRemote.connect(sshd.host, sshd.port, sshd.user, sshd.client_key, sshd.known_hosts)

    theirs_root.mkdir(parents=True)  # rsync makes only the last level of its target
    with FleetAccess(fleet) as access:
        dest = connect()
        try:
            for c in rnd.per_client:
                client, mirror, snapshot = c["client"], c["mirror"], c["snapshot"]
                source = [
                    MirrorTarget(
                        mirror,
                        access.remote(mirror),
                        repo_path(access.server(mirror), rnd.victim),
                        access.connector(mirror),
                    )
                ]

                def ours(
                    client: str = client,
                    snapshot: str = snapshot,
                    source: list[MirrorTarget] = source,
                ) -> None:
                    restore(
                        source,
                        client,
                        snapshot,
                        dest,
                        str(ours_root / client),
                        key=access.mirror_key,
                        dest_connect=functools.partial(
                            SshRemote.connect,
                            sshd.host,
                            sshd.port,
                            sshd.user,
                            sshd.client_key,
                            sshd.known_hosts,
                        ),
                    )

                def theirs(client: str = client) -> None:
                    subprocess.run(
                        ["rsync", "-a", "-e", ssh_command(sshd), f"{plain / client}/",
                         f"{sshd.user}@{sshd.host}:{theirs_root / client}/"],
                        check=True,
                        capture_output=True,
                    )  # fmt: skip

                started = time.perf_counter()
                restore(source, client, snapshot, LocalRemote(fsync=False), str(plain / client),
                        key=access.mirror_key)  # fmt: skip
                rnd.ours_local_s += time.perf_counter() - started
                os.sync()
                pair = [("ours", ours), ("rsync", theirs)]
                for who, fn in pair if index % 2 == 0 else reversed(pair):
                    started = time.perf_counter()
                    fn()
                    took = time.perf_counter() - started
                    if who == "ours":
                        rnd.ours_ssh_s += took
                    else:
                        rnd.rsync_s += took
                    os.sync()
        finally:
            dest.close()
    same = subprocess.run(
        ["diff", "-r", "--no-dereference", str(ours_root), str(theirs_root)], capture_output=True
    )
    rnd.same = same.returncode == 0
    if not rnd.same:
        print("  WARNING: restored trees differ", same.stdout[:500])
    for path in (plain, ours_root, theirs_root):
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- the run


def rate(mb: float, seconds: float) -> float:
    return mb / seconds if seconds else 0.0


def print_round(rnd: Round) -> None:
    print(
        f"  {rnd.victim}: {len(rnd.clients)} client(s) healthy through the front door "
        f"{rnd.healthy_s:.1f} s after declaration (flow returned at {rnd.flow_s:.1f} s)"
    )
    print(
        f"    {'client':20} {'to':16} {'mirror':16} {'healthy s':>9} {'RTO s':>6} "
        f"{'RPO s':>6} {'lost':>4} {'MB':>6} {'MB/s':>6}"
    )
    for c in rnd.per_client:
        print(
            f"    {c['client']:20} {c['to']:16} {c['mirror']:16} {c['healthy_s']:9.1f} "
            f"{c['rto_s'] or 0:6.1f} {c['rpo_s'] or 0:6.1f} {c['lost']!s:>4} "
            f"{c['mb']:6.1f} {rate(c['mb'], c['restore_s']):6.1f}"
        )
    print(
        f"    restores: {rnd.restore_mb:.1f} MB in {rnd.restore_span_s:.1f} s "
        f"(in parallel: {rate(rnd.restore_mb, rnd.restore_span_s):.1f} MB/s)"
        f"; through sshd: ours {rnd.ours_ssh_s:.2f} s, rsync {rnd.rsync_s:.2f} s, "
        f"ours to local disk {rnd.ours_local_s:.2f} s; trees {'equal' if rnd.same else 'DIFFER'}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        print("rsync not found: apt-get install rsync", file=sys.stderr)
        return 2

    # Prefect's per-task-run lines would drown the figures; warnings and errors stay.
    for name in ("LEVEL", "LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "LOGGERS_PREFECT_TASK_RUNS_LEVEL"):
        os.environ.setdefault(f"PREFECT_LOGGING_{name}", "ERROR")
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from deployments.registry import CONCURRENCY_LIMITS
    from deployments.serve import ensure_concurrency_limits

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ppo-bench-failover-"))
    (work / "prefect-home").mkdir(parents=True, exist_ok=True)
    os.environ.pop("PPO_DR_DB_URL", None)
    rounds: list[Round] = []
    settings = {PREFECT_SERVER_ANALYTICS_ENABLED: False, PREFECT_HOME: work / "prefect-home"}
    with (
        temporary_settings(updates=settings),
        prefect_test_harness(server_startup_timeout=60),
        running_sshd(work / "sshd") as sshd,
    ):
        ensure_concurrency_limits(CONCURRENCY_LIMITS)
        for index in range(args.rounds):
            here = work / f"round{index}"
            os.environ["PPO_DR_HOME"] = str(here / "home")
            print(f"round {index + 1}/{args.rounds}: lab of {args.clients} clients, "
                  f"{args.size_mb} MB in {here} ...", flush=True)  # fmt: skip
            with lab_of_its_own(here, args.clients, args.size_mb) as lab:
                time.sleep(WARMUP_S)
                started = time.monotonic()
                mirror_all(lab)
                print(f"  first mirror of every app server: {time.monotonic() - started:.1f} s")
                rnd = fail_over(lab)
                compare_with_rsync(lab, rnd, sshd, work, index)
            print_round(rnd)
            rounds.append(rnd)
            shutil.rmtree(here, ignore_errors=True)

    med = statistics.median
    healthy = med(r.healthy_s for r in rounds)
    print(
        f"\nmedians of {len(rounds)} round(s); {args.clients} clients, {args.size_mb} MB lab, "
        f"app server power-killed; rsync and ours through OpenSSH sshd on 127.0.0.1, {CIPHER}"
    )
    print(f"{'figure':46} {'value':>9}")
    verdict = "met" if healthy <= TARGET_S else "MISSED"
    print(f"{'declaration -> all healthy (front door), s':46} {healthy:9.1f}  "
          f"(target <= {TARGET_S:.0f} s: {verdict})")  # fmt: skip
    print(f"{'declaration -> flow returned, s':46} {med(r.flow_s for r in rounds):9.1f}")
    print(f"{'per-client RTO (ledger), median s':46} "
          f"{med(c['rto_s'] or 0 for r in rounds for c in r.per_client):9.1f}")  # fmt: skip
    print(f"{'per-client RPO (ledger), median s':46} "
          f"{med(c['rpo_s'] or 0 for r in rounds for c in r.per_client):9.1f}")  # fmt: skip
    print(f"{'acknowledged writes lost, per client (max)':46} "
          f"{max(c['lost'] or 0 for r in rounds for c in r.per_client):9d}")  # fmt: skip
    mb = med(r.restore_mb for r in rounds)
    span = med(r.restore_span_s for r in rounds)
    print(f"{'failover restores, MB':46} {mb:9.1f}")
    print(f"{'failover restores in parallel, MB/s':46} {rate(mb, span):9.1f}")
    ours, theirs = med(r.ours_ssh_s for r in rounds), med(r.rsync_s for r in rounds)
    local = med(r.ours_local_s for r in rounds)
    print(f"{'restore through sshd: ours, MB/s':46} {rate(mb, ours):9.1f}")
    print(f"{'restore through sshd: rsync -a, MB/s':46} {rate(mb, theirs):9.1f}")
    print(f"{'restore to local disk: ours, MB/s':46} {rate(mb, local):9.1f}")
    print(f"{'time ratio ours / rsync (through sshd)':46} {rate(ours, theirs):8.2f}x")
    if not all(r.same for r in rounds):
        print("WARNING: in some round the trees restored by ours and rsync differ")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
