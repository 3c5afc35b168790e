"""What every verdict test asserts of a broken rule, said once."""

from __future__ import annotations

from ppo_dr.lab.chaos.verdict import ChaosResult


def assert_fails_saying(result: ChaosResult, says: str) -> None:
    """A broken rule fails the fault, and one of its notes names the rule."""
    assert not result.passed
    assert any(says in note for note in result.notes), result.notes
