"""Benchmark: wall time of ``ppo-dr --help``, against the interpreter's own start-up.

Issue 14 asks for ``ppo-dr --help`` within 0.5 s. Most of that is Python starting;
the rest is importing :mod:`cli.main` (typer, click, rich and our command modules;
Prefect, SQLAlchemy, paramiko and boto3 are imported only inside the commands, which
``tests/cli/test_main.py`` pins). The peer, run interleaved in the same run so load
hits both alike: ``python -c pass`` with the same interpreter. Medians of --runs
runs each, with min-max, and the load average before and after. Wall time on a
loaded machine mostly measures the wait for a core, so the CPU time (user + system)
of each run is shown too: on an idle machine wall time is close to it.

    .venv/bin/python bench/cli_help.py [--runs 5]

Not run by CI. Target: ``ppo-dr --help`` median <= 0.5 s on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _seconds(command: list[str]) -> tuple[float, float]:
    """Wall time and CPU time of one run of *command*, which must succeed."""
    cpu, start = _cpu(), time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, _cpu() - cpu


def _summary(name: str, runs: list[tuple[float, float]]) -> str:
    def spread(times: list[float]) -> str:
        return f"median {statistics.median(times):.3f} s ({min(times):.3f}-{max(times):.3f})"

    wall, cpu = [w for w, _ in runs], [c for _, c in runs]
    return f"{name:<16} wall {spread(wall)}, cpu {spread(cpu)}, n={len(runs)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ours_cmd = [sys.executable, "-m", "cli.main", "--help"]
    peer_cmd = [sys.executable, "-c", "pass"]
    _seconds(ours_cmd)  # warm the page cache and the bytecode, for both alike
    _seconds(peer_cmd)
    load_before = os.getloadavg()
    ours: list[tuple[float, float]] = []
    peer: list[tuple[float, float]] = []
    for _ in range(args.runs):
        ours.append(_seconds(ours_cmd))
        peer.append(_seconds(peer_cmd))
    load_after = os.getloadavg()
    print(_summary("ppo-dr --help", ours))
    print(_summary("python -c pass", peer))
    extra = statistics.median(c for _, c in ours) - statistics.median(c for _, c in peer)
    print(f"ours minus interpreter start, cpu: {extra:.3f} s")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")


if __name__ == "__main__":
    main()
