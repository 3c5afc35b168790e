"""HiGHS's stray debug line is dropped around the solve; everything else on fd 1 is kept."""

from __future__ import annotations

import os
import threading

import pytest

from ppo_dr.failover.rebalance_solve import highs_debug_dropped

STRAY = b"HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();\n"


def test_only_the_debug_line_is_dropped(capfd: pytest.CaptureFixture[str]) -> None:
    with highs_debug_dropped():
        os.write(1, b"written before\n" + STRAY)
        os.write(1, b"a flow's log line\n")
    os.write(1, b"written after\n")
    assert capfd.readouterr().out == "written before\na flow's log line\nwritten after\n"


def test_fd1_comes_back_when_the_solve_fails(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError, match="solver broke"), highs_debug_dropped():
        os.write(1, STRAY + b"kept\n")
        raise RuntimeError("solver broke")
    os.write(1, b"still printing\n")
    assert capfd.readouterr().out == "kept\nstill printing\n"


def test_two_solves_at_once_lose_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    def solve(name: str) -> None:
        for i in range(50):
            with highs_debug_dropped():
                os.write(1, f"{name} {i}\n".encode() + STRAY)

    threads = [threading.Thread(target=solve, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = capfd.readouterr().out.splitlines()
    assert sorted(lines) == sorted(f"{n} {i}" for n in ("one", "two") for i in range(50))
