"""Benchmark: our mirror to TWO mirrors vs `rsync -a --delete` run once per mirror.

Both tools read the same local tree (the worker runs on the app server, as rsync
does) and write through real OpenSSH sshd processes on 127.0.0.1, one per mirror,
with the same cipher (aes128-gcm). Four phases, each timed for both, in one run:

  (a) first full run        targets: ours <= 1.0x rsync's two runs
  (b) hourly incremental    after changing ~1 % of files (edits in place, appends
                            to large files, new and deleted files);
                            targets: <= 0.7x their time, <= 1.2x their bytes sent
  (c) restore of everything from one mirror to an empty local directory;
                            target: <= 1.2x rsync's time
  (n) no-op: both again on the unchanged tree (what a 5-minute cadence costs most
      runs); targets: <= 1.0x rsync's time, <= 50 KB sent per mirror
  (d) restore from one mirror into a new server (a third sshd), one SSH hop each:
                            rsync pushes the mirror's copy into it, ours restores
                            from the mirror's repository (read on the mirror, as a
                            failover worker beside it does) through tar streams
                            fed to OpenSSH's ssh client (paramiko without it);
                            target: <= 1.0x rsync's time

"bytes sent" is each tool's own payload count (rsync --stats "Total bytes sent",
ours: bytes written into the repositories), before SSH encryption for both. Every
round is printed, and the table gives medians with the spread (min-max); a round
whose rsync time is more than 2x off the median of its phase is flagged, not dropped,
and the load average after each round is printed (the machine may be shared).
For (a), (b) and (n) a second table gives CPU seconds per GB of the tree, on the
app-server side (this process and everything it started: uploaders, rsync and its
ssh) and on the mirror side (both sshd process trees: sshd, sftp-server, rsync), and
what (n) added to each of our repositories (storage growth of unchanged data).

    .venv/bin/python bench/mirror_vs_rsync.py [--size-mb 1000] [--rounds 3]
    .venv/bin/python bench/mirror_vs_rsync.py --dataset DIR   # any tree, copied first
    .venv/bin/python bench/mirror_vs_rsync.py --phases ad     # only (a) and (d)
    .venv/bin/python bench/mirror_vs_rsync.py --phases abn    # the cadence's cost

Not run by CI: it needs ~5x the dataset in free disk and a few minutes.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppo_dr.mirror.api import ClientSource, MirrorTarget, restore, snapshot_server
from ppo_dr.pids import proc_files
from ppo_dr.transport import LocalRemote
from ppo_dr.transport.ssh import SshRemote
from tests.sshd import SshdServer, running_sshd

CIPHER = "aes128-gcm@openssh.com"
LINE = "2026-11-30T05:00:{s:02d}Z INFO app[{pid}]: GET /c/{c}/orders/{o} 200 {ms}ms user={u}\n"


# --------------------------------------------------------------------------- dataset


def make_dataset(root: Path, size_mb: int, seed: int = 7) -> None:
    """2,000 files scaled to *size_mb*: many 4-64 KiB, some 1-10 MiB, 2 big; half random."""
    rng = random.Random(seed)
    scale = size_mb / 1060
    plan = (
        [rng.randint(4, 64) * 1024 for _ in range(1858)]
        + [int(rng.randint(1, 10) * 1024 * 1024 * scale) or 4096 for _ in range(140)]
        + [int(100 * 1024 * 1024 * scale)] * 2
    )
    text_block = "".join(
        LINE.format(s=i % 60, pid=1000 + i % 7, c=i % 20, o=i * 7, ms=i % 300, u=f"u{i % 97}")
        for i in range(20000)
    ).encode()
    for i, size in enumerate(plan):
        path = root / f"dir{i % 23}" / f"sub{i % 5}" / f"file {i:04d}.{'log' if i % 2 else 'bin'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 2:
            reps = size // len(text_block) + 1
            data = (text_block * reps)[:size]
        else:
            data = rng.randbytes(size)
        path.write_bytes(data)


def change_one_percent(root: Path, seed: int = 11) -> int:
    """Edit ~1 % of files the ways an hour of use does; return bytes changed. Regular
    files only: a symlink's target may be one of the files deleted here (a copy of
    /usr/share has thousands of such links among its man pages)."""
    rng = random.Random(seed)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    changed = 0
    picked = rng.sample(files, max(4, len(files) // 100))
    for n, path in enumerate(picked):
        size = path.stat().st_size
        if n % 4 == 0:  # append to a file (logs grow)
            extra = rng.randbytes(64 * 1024)
            with path.open("ab") as handle:
                handle.write(extra)
            changed += len(extra)
        elif n % 4 == 1:  # edit in place at a random offset
            offset = rng.randrange(0, max(1, size - 4096))
            with path.open("r+b") as handle:
                handle.seek(offset)
                handle.write(rng.randbytes(min(4096, size)))
            changed += min(4096, size)
        elif n % 4 == 2:  # a new file
            new = path.with_name(f"new {n}.bin")
            new.write_bytes(rng.randbytes(32 * 1024))
            changed += 32 * 1024
        else:  # a deleted file
            path.unlink()
    # The big files get appended to as well (a growing database file / log).
    for big in sorted(files, key=lambda p: p.stat().st_size if p.exists() else 0)[-2:]:
        with big.open("ab") as handle:
            handle.write(rng.randbytes(1024 * 1024))
        changed += 1024 * 1024
    future = time.time() + 2  # make sure the quick check sees the change
    for path in picked:
        if path.exists():
            os.utime(path, (future, future))
    return changed


# --------------------------------------------------------------------------- peers


def ssh_command(server: SshdServer) -> str:
    return (
        f"ssh -c {CIPHER} -i {server.client_key} -p {server.port} "
        f"-o UserKnownHostsFile={server.known_hosts} -o StrictHostKeyChecking=yes "
        "-o BatchMode=yes -o Compression=no"
    )


def rsync(src: str, dest: str, server: SshdServer) -> int:
    """Run rsync -a --delete over ssh; return its 'Total bytes sent'."""
    out = subprocess.run(
        ["rsync", "-a", "--delete", "--stats", "-e", ssh_command(server), src, dest],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"Total bytes sent: ([\d,]+)", out)
    return int(match.group(1).replace(",", "")) if match else 0


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    # Flush what the previous phase left dirty, so its writeback does not slow this one.
    os.sync()
    start = time.perf_counter()
    sent = fn()
    return time.perf_counter() - start, sent


def drop_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def cpu_seconds(roots: list[int]) -> float:
    """CPU seconds (user + system) of each process tree under *roots*: the live
    processes and every child they reaped (a finished SSH session, an uploader)."""
    parents: dict[int, list[int]] = {}
    spent: dict[int, int] = {}
    for pid, stat in proc_files("stat"):
        fields = stat.rsplit(b")", 1)[1].split()
        parents.setdefault(int(fields[1]), []).append(pid)
        spent[pid] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    ticks, todo = 0, list(roots)
    while todo:
        pid = todo.pop()
        ticks += spent.get(pid, 0)
        todo += parents.get(pid, [])
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Times a call and splits the CPU it costs: app-server side (this process's tree
    but the sshd daemons) and mirror side (the sshd daemons' trees)."""

    def __init__(self, mirrors: list[SshdServer]) -> None:
        self.mirror_pids = [m.pid for m in mirrors]
        self.rows: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def run(self, phase: str, who: str, fn: Callable[[], int]) -> tuple[float, int]:
        os.sync()
        mirror0, all0 = cpu_seconds(self.mirror_pids), cpu_seconds([os.getpid()])
        seconds, sent = timed(fn)
        mirror = cpu_seconds(self.mirror_pids) - mirror0
        app = cpu_seconds([os.getpid()]) - all0 - mirror
        self.rows.setdefault((phase, who), []).append((app, mirror))
        print(f"    {phase:15} {who:5} cpu app {app:6.2f} s, mirrors {mirror:6.2f} s", flush=True)
        return seconds, sent


def stored_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for d in paths for p in d.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- the run


def restore_locally(
    rnd: int,
    state: Path,
    mirror: SshdServer,
    rsync_copy: Path,
    target: MirrorTarget,
    record: Callable[[str, str, float, int], None],
) -> None:
    """Phase (c): both tools restore the mirror's copy into an empty local directory."""
    out_rsync = state / "restore-rsync"
    out_ours = state / "restore-ours"

    def restore_theirs() -> int:
        return rsync(f"{mirror.user}@{mirror.host}:{rsync_copy}/", f"{out_rsync}/", mirror)

    def restore_ours() -> int:
        # fsync=False: like rsync, leave writeback to the kernel (no fsync per file).
        dest = LocalRemote(fsync=False)
        result = restore([target], "bench", "latest", dest, str(out_ours), parallel=4)
        return result.bytes

    third = [("rsync", restore_theirs), ("ours", restore_ours)]
    for who, fn in third if rnd % 2 == 0 else reversed(third):
        record("c restore", who, *timed(fn))
    same = subprocess.run(
        ["diff", "-r", "--no-dereference", str(out_rsync), str(out_ours)],
        capture_output=True,
    )
    if same.returncode != 0:
        print("  WARNING: restored trees differ", same.stdout[:500])


def restore_into_new_server(
    rnd: int,
    new_server: SshdServer,
    rsync_copy: Path,
    repo: Path,
    record: Callable[[str, str, float, int], None],
) -> None:
    """Phase (d): both tools restore mirror 0's copy into *new_server*; then the two
    results are compared by rsync's itemised checksum comparison."""
    out_rsync = new_server.data_root / f"restore-rsync{rnd}"
    out_ours = new_server.data_root / f"restore-ours{rnd}"
    connect = functools.partial(
        SshRemote.connect,
        new_server.host,
        new_server.port,
        new_server.user,
        new_server.client_key,
        new_server.known_hosts,
    )
    on_mirror = MirrorTarget("mirror-0", LocalRemote(), str(repo), LocalRemote)

    def theirs() -> int:
        dest = f"{new_server.user}@{new_server.host}:{out_rsync}/"
        return rsync(f"{rsync_copy}/", dest, new_server)

    def ours() -> int:
        with connect() as dest:
            result = restore(
                [on_mirror], "bench", "latest", dest, str(out_ours), dest_connect=connect
            )
        if result.refused:
            raise SystemExit(f"restore refused {len(result.refused)} files")
        return result.bytes

    pair = [("rsync", theirs), ("ours", ours)]
    for who, fn in pair if rnd % 2 == 0 else reversed(pair):
        record("d restore ssh", who, *timed(fn))
    same = subprocess.run(
        ["rsync", "-rlptcni", "--delete", f"{out_rsync}/", f"{out_ours}/"],
        capture_output=True,
        text=True,
    )
    if same.returncode != 0 or same.stdout:
        print("  WARNING: trees restored into the new server differ:", same.stdout[:500])
    drop_tree(out_rsync)
    drop_tree(out_ours)


def run_round(
    rnd: int,
    src: Path,
    work: Path,
    mirrors: list[SshdServer],
    new_server: SshdServer,
    record: Callable[[str, str, float, int], None],
    phases: str = "abcd",
    meter: CpuMeter | None = None,
    growth: list[int] | None = None,
) -> None:
    """One round of the phases (the first full run always: the others start from its
    copies) on a fresh copy of the dataset, both tools."""
    state = work / f"round{rnd}"
    work_src = state / "src"
    shutil.copytree(src, work_src, symlinks=True)
    rsync_dirs = [m.data_root / f"rsync{rnd}" for m in mirrors]
    repo_dirs = [m.data_root / f"repo{rnd}" for m in mirrors]

    remotes = [
        SshRemote.connect(m.host, m.port, m.user, m.client_key, m.known_hosts) for m in mirrors
    ]
    # connect: each mirror's packs are uploaded, and restores read, by separate
    # processes with their own connections (the path the flows take).
    targets = [
        MirrorTarget(
            f"mirror-{i}",
            remote,
            str(repo),
            functools.partial(
                SshRemote.connect, m.host, m.port, m.user, m.client_key, m.known_hosts
            ),
        )
        for i, (m, remote, repo) in enumerate(zip(mirrors, remotes, repo_dirs, strict=True))
    ]
    source = LocalRemote()
    clients = [ClientSource("bench", str(work_src))]
    taken = datetime(2026, 11, 30, 5, 0, tzinfo=UTC) + timedelta(days=rnd)

    def ours(when: datetime) -> int:
        results = snapshot_server(source, "bench-app", clients, targets, taken_at=when)
        failed = [f"{m}: {o.error}" for r in results for m, o in r.per_mirror.items() if not o.ok]
        if failed:
            raise SystemExit(f"mirror failed: {failed}")
        return sum(o.bytes_sent for r in results for o in r.per_mirror.values())

    def theirs() -> int:
        return sum(
            rsync(f"{work_src}/", f"{m.user}@{m.host}:{d}/", m)
            for m, d in zip(mirrors, rsync_dirs, strict=True)
        )

    def measured(phase: str, who: str, fn: Callable[[], int]) -> tuple[float, int]:
        return meter.run(phase, who, fn) if meter is not None else timed(fn)

    # (a) first full run; order alternates so neither always gets a warm cache
    first = [("rsync", theirs), ("ours", lambda: ours(taken))]
    for who, fn in first if rnd % 2 == 0 else reversed(first):
        record("a full", who, *measured("a full", who, fn))

    # (b) incremental after ~1 % of files changed
    later = taken + timedelta(hours=1)
    if "b" in phases:
        change_one_percent(work_src, seed=100 + rnd)
        second = [("rsync", theirs), ("ours", lambda: ours(later))]
        for who, fn in second if rnd % 2 == 0 else reversed(second):
            record("b incremental", who, *measured("b incremental", who, fn))

    # (n) no-op: nothing changed since the last run (a 5-minute cadence, most runs)
    if "n" in phases:
        before = stored_bytes(repo_dirs)
        again = [("rsync", theirs), ("ours", lambda: ours(later + timedelta(minutes=5)))]
        for who, fn in again if rnd % 2 == 0 else reversed(again):
            record("n no-op", who, *measured("n no-op", who, fn))
        if growth is not None:
            growth.append((stored_bytes(repo_dirs) - before) // len(repo_dirs))

    # (d) restore into a new server (third sshd), before (c) leaves the caches warm
    if "d" in phases:
        restore_into_new_server(rnd, new_server, rsync_dirs[0], repo_dirs[0], record)

    # (c) restore everything from mirror 0 into an empty local directory
    if "c" in phases:
        restore_locally(rnd, state, mirrors[0], rsync_dirs[0], targets[0], record)

    for remote in remotes:
        remote.close()
    drop_tree(state)
    for d in rsync_dirs + repo_dirs:
        drop_tree(d)


def spread(times: list[float]) -> str:
    """Median and range: "4.92 (4.71-5.30)"."""
    return f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})"


def print_cpu(meter: CpuMeter, total: int, growth: list[int]) -> None:
    """CPU seconds per GB of the tree per run, medians (min-max), and the no-op's
    storage growth; at a 5-minute cadence one core's 5 % is 15 s per run."""
    gb = total / 1e9
    print(f"\nCPU s per GB per run (median (min-max)); load average {os.getloadavg()}")
    print(f"{'phase':15} {'who':5} {'app-server side':>22} {'mirror side (both)':>22}")
    for (phase, who), runs in meter.rows.items():
        app = [a / gb for a, _ in runs]
        mirror = [m / gb for _, m in runs]
        print(f"{phase:15} {who:5} {spread(app):>22} {spread(mirror):>22}")
    if growth:
        print(f"no-op: our repositories grew {spread([g / 1e3 for g in growth])} KB per mirror")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--phases", default="abncd", help="which phases to time (a always runs: setup)"
    )
    parser.add_argument(
        "--dataset", type=Path, default=None, help="a tree to copy and use instead of ours"
    )
    args = parser.parse_args()
    # A plain kill still stops the sshd daemons (their context managers run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if shutil.which("rsync") is None:
        print("rsync not found: apt-get install rsync", file=sys.stderr)
        return 2

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ppo-bench-"))
    src = work / "app" / "clients" / "bench"
    src.mkdir(parents=True, exist_ok=True)
    if args.dataset is not None:
        print(f"dataset: a copy of {args.dataset} in {work} ...", flush=True)
        shutil.copytree(args.dataset, src, symlinks=True, dirs_exist_ok=True)
    else:
        print(f"dataset: {args.size_mb} MB in {work} ...", flush=True)
        make_dataset(src, args.size_mb)
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    nfiles = sum(1 for p in src.rglob("*") if p.is_file())
    print(f"  {nfiles} files, {total / 1e6:.0f} MB")

    rows: dict[str, dict[str, list[float]]] = {}
    loads: list[float] = []  # 1-minute load average after each round: how shared the cores were

    def record(phase: str, who: str, seconds: float, sent: int) -> None:
        rows.setdefault(phase, {}).setdefault(f"{who}_s", []).append(seconds)
        rows[phase].setdefault(f"{who}_bytes", []).append(sent)
        # Every measurement, not only the medians: the spread between rounds matters
        # (which files the 1 % change hits decides the incremental bytes).
        print(f"    {phase:15} {who:5} {seconds:7.2f} s {sent / 1e6:9.2f} MB", flush=True)

    with (
        running_sshd(work / "sshd-a") as mirror_a,
        running_sshd(work / "sshd-b") as mirror_b,
        running_sshd(work / "sshd-c") as new_server,
    ):
        meter = CpuMeter([mirror_a, mirror_b])
        growth: list[int] = []
        for rnd in range(args.rounds):
            run_round(
                rnd, src, work, [mirror_a, mirror_b], new_server, record, args.phases,
                meter, growth,
            )  # fmt: skip
            loads.append(os.getloadavg()[0])
            print(f"  round {rnd + 1}/{args.rounds} done, load average {loads[-1]:.1f}", flush=True)

    print(
        f"\nmedians of {args.rounds} rounds (min-max); {nfiles} files, {total / 1e6:.0f} MB; "
        f"two mirrors and a new server via OpenSSH sshd on 127.0.0.1, {CIPHER}; "
        f"load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores"
    )
    print(
        f"{'phase':15} {'rsync s (min-max)':>19} {'ours s (min-max)':>19} {'time ratio':>10} "
        f"{'rsync MB':>9} {'ours MB':>8} {'bytes ratio':>11}"
    )
    for phase, data in rows.items():
        rs, os_ = statistics.median(data["rsync_s"]), statistics.median(data["ours_s"])
        per_round = ", ".join(
            f"{o / r:.2f}" for r, o in zip(data["rsync_s"], data["ours_s"], strict=True)
        )
        rb, ob = statistics.median(data["rsync_bytes"]), statistics.median(data["ours_bytes"])
        bytes_ratio = f"{ob / rb:.2f}x" if rb and phase[0] in "ab" else "-"
        print(
            f"{phase:15} {spread(data['rsync_s']):>19} {spread(data['ours_s']):>19} "
            f"{os_ / rs:9.2f}x {rb / 1e6:9.1f} {ob / 1e6:8.1f} {bytes_ratio:>11}"
        )
        print(f"{'':15} ratio per round: {per_round}")
        odd = [i + 1 for i, t in enumerate(data["rsync_s"]) if max(t / rs, rs / t) > 2]
        if odd:
            print(f"{'':15} rsync more than 2x off its median in round(s) {odd} (kept)")
    print_cpu(meter, total, growth)
    drop_tree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
