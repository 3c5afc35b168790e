"""The outage state machine, exhaustively and by property: blips never page, a real
outage is declared in time, recovery needs a run of successes, quorum needs a majority."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_dr.inventory import Timing
from ppo_dr.probe import (
    Observation,
    OutagePolicy,
    OutageTracker,
    TargetState,
    TargetStatus,
    cadence_gap,
    observe,
    quorum_observation,
    replay,
)

T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
UP, PENDING, DOWN, RECOVERING = (
    TargetState.UP,
    TargetState.PENDING,
    TargetState.DOWN,
    TargetState.RECOVERING,
)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def regular(
    pattern: str, interval: float = 10, start: datetime = T0
) -> list[tuple[datetime, bool]]:
    """'..xxx.' -> observations every *interval* s: '.' ok, 'x' failed."""
    return [(start + s(i * interval), c == ".") for i, c in enumerate(pattern)]


def states_of(pattern: str, policy: OutagePolicy, interval: float = 10) -> str:
    """The state after each observation, one letter each: u p d r."""
    status = TargetStatus("t")
    out = ""
    for at, ok in regular(pattern, interval):
        status, _ = observe(status, ok, at, "ok" if ok else "HTTP 503", policy)
        out += status.state.value[0]
    return out


POLICY = OutagePolicy(threshold=s(30), recovery_successes=2)


# ----------------------------------------------------------------------------- table


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("....", "uuuu"),
        ("x...", "puuu"),
        ("xxx.", "pppu"),  # 20 s of failure < 30 s: never down
        ("xxxx", "pppd"),  # first failure at 0, 30 s later: down
        ("xxxx.", "pppdr"),
        ("xxxx..", "pppdru"),
        ("xxxx.x", "pppdrd"),  # a failure while recovering: back to down
        ("xxxx.x..", "pppdrdru"),
        ("xxx.xxx.xxx.", "pppupppupppu"),  # flapping never declares
        ("xxxxxxxxx", "pppdddddd"),
    ],
)
def test_state_table(pattern: str, expected: str) -> None:
    assert states_of(pattern, POLICY) == expected


def test_transitions_are_values_with_first_failure() -> None:
    _, moves = replay("t", regular("..xxxx.x.."), POLICY)
    got = [(m.from_state, m.to_state, m.at, m.first_failure_at) for m in moves]
    first = T0 + s(20)
    assert got == [
        (UP, PENDING, first, first),
        (PENDING, DOWN, T0 + s(50), first),
        (DOWN, RECOVERING, T0 + s(60), first),
        (RECOVERING, DOWN, T0 + s(70), first),  # the same outage: first failure kept
        (DOWN, RECOVERING, T0 + s(80), first),
        (RECOVERING, UP, T0 + s(90), first),
    ]
    assert "failing continuously for 30 s" in moves[1].reason


def test_one_success_recovery_passes_through_recovering() -> None:
    policy = OutagePolicy(threshold=s(30), recovery_successes=1)
    status, moves = replay("t", regular("xxxx."), policy)
    assert [m.to_state for m in moves] == [PENDING, DOWN, RECOVERING, UP]
    assert status.state is UP and status.first_failure_at is None


def test_late_observation_is_ignored() -> None:
    status, _ = replay("t", regular("xx"), POLICY)
    same, moves = observe(status, True, T0, "ok", POLICY)
    assert (same, moves) == (status, [])


def test_gap_breaks_the_failure_run() -> None:
    policy = OutagePolicy(threshold=s(30), recovery_successes=2, max_gap=s(30))
    obs = [(T0, False), (T0 + s(10), False), (T0 + s(100), False), (T0 + s(110), False)]
    status, moves = replay("t", obs, policy)
    assert status.state is PENDING and status.first_failure_at == T0 + s(100)
    status, moves = observe(status, False, T0 + s(130), "x", policy)
    assert status.state is DOWN and moves[0].first_failure_at == T0 + s(100)


def test_the_gap_follows_the_probes_own_cadence_by_its_median() -> None:
    policy = OutagePolicy(threshold=s(20), recovery_successes=3, max_gap=s(6))
    assert cadence_gap(policy, []) == s(6)  # no cadence yet: the policy's
    assert cadence_gap(policy, [s(2), s(2), s(2)]) == s(6)  # on time: the policy's
    assert cadence_gap(policy, [s(8), s(9), s(7)]) == s(24)  # slow cycles: 3 of them
    assert cadence_gap(policy, [s(2), s(2), s(60)]) == s(6)  # one stall does not stretch it
    assert cadence_gap(OutagePolicy(s(20), 3, None), [s(9)]) is None


def test_slow_cycles_within_the_cadence_gap_keep_the_run() -> None:
    policy = OutagePolicy(threshold=s(20), recovery_successes=3, max_gap=s(6))
    tracker = OutageTracker(policy)
    gap = cadence_gap(policy, [s(8)] * 3)
    for n in range(4):  # failing at 0, 8, 16, 24 s
        tracker.feed([Observation("t", False, 1.0, "refused", T0 + s(8 * n))], max_gap=gap)
    assert tracker.status("t").state is DOWN
    assert tracker.status("t").first_failure_at == T0
    plain = OutageTracker(policy)
    for n in range(4):  # the same, judged by the policy's 6 s: the run restarts each time
        plain.feed([Observation("t", False, 1.0, "refused", T0 + s(8 * n))])
    assert plain.status("t").state is PENDING


def test_policy_from_timing() -> None:
    policy = OutagePolicy.from_timing(Timing(outage_threshold=20, probe_interval=2))
    assert policy == OutagePolicy(s(20), 3, s(6))
    with pytest.raises(ValueError, match="threshold"):
        OutagePolicy(s(0))
    with pytest.raises(ValueError, match="recovery"):
        OutagePolicy(s(1), 0)


# ----------------------------------------------------------------------------- exhaustive


def oracle(pattern: str, threshold_checks: int, successes: int) -> str:
    """A second, count-based statement of the rules for regular sampling."""
    out, state, fails, oks = "", "u", 0, 0
    for c in pattern:
        failed = c == "x"
        if state in "up":
            fails = fails + 1 if failed else 0
            if fails == 0:
                state = "u"
            elif fails - 1 >= threshold_checks:
                state = "d"
            else:
                state = "p"
        elif state == "d":
            if not failed:
                oks = 1
                state = "u" if successes == 1 else "r"
        else:  # r
            if failed:
                state, oks = "d", 0
            else:
                oks += 1
                if oks >= successes:
                    state = "u"
        if state == "u":
            fails, oks = 0, 0
        out += state
    return out


@pytest.mark.parametrize("successes", [1, 2, 3])
@pytest.mark.parametrize("threshold_checks", [1, 2, 3])
def test_every_pattern_up_to_11_checks_matches_the_oracle(
    threshold_checks: int, successes: int
) -> None:
    policy = OutagePolicy(threshold=s(10 * threshold_checks), recovery_successes=successes)
    for n in range(1, 12):
        for bits in itertools.product(".x", repeat=n):
            pattern = "".join(bits)
            assert states_of(pattern, policy) == oracle(pattern, threshold_checks, successes), (
                pattern
            )


# ----------------------------------------------------------------------------- properties

gaps = st.lists(st.tuples(st.integers(min_value=1, max_value=40_000), st.booleans()), max_size=80)


def timeline(steps: list[tuple[int, bool]]) -> list[tuple[datetime, bool]]:
    out, at = [], T0
    for gap_ms, ok in steps:
        at += timedelta(milliseconds=gap_ms)
        out.append((at, ok))
    return out


def longest_failure_span(obs: list[tuple[datetime, bool]]) -> timedelta:
    best, start = timedelta(0), None
    for at, ok in obs:
        if ok:
            start = None
            continue
        start = start or at
        best = max(best, at - start)
    return best


@settings(max_examples=400)
@given(gaps, st.integers(min_value=1, max_value=120))
def test_declared_iff_a_failure_run_spans_the_threshold(
    steps: list[tuple[int, bool]], threshold_s: int
) -> None:
    """Bursts shorter than the threshold NEVER declare; a long enough one always does."""
    obs = timeline(steps)
    policy = OutagePolicy(threshold=s(threshold_s), recovery_successes=2)
    _, moves = replay("t", obs, policy)
    declared = any(m.to_state is DOWN and m.from_state is PENDING for m in moves)
    assert declared == (longest_failure_span(obs) >= policy.threshold)


@settings(max_examples=300)
@given(
    interval_s=st.integers(min_value=1, max_value=30),
    threshold_s=st.integers(min_value=1, max_value=300),
    fault_ms=st.integers(min_value=0, max_value=600_000),
    phase_ms=st.integers(min_value=0, max_value=29_999),
)
def test_continuous_failure_is_declared_within_threshold_plus_one_interval(
    interval_s: int, threshold_s: int, fault_ms: int, phase_ms: int
) -> None:
    interval, threshold = s(interval_s), s(threshold_s)
    fault = T0 + timedelta(milliseconds=fault_ms)
    start = T0 + timedelta(milliseconds=phase_ms % (interval_s * 1000))
    obs = []
    at = start
    while at < fault + threshold + 3 * interval:
        obs.append((at, at < fault))
        at += interval
    policy = OutagePolicy(threshold, 2, max_gap=3 * interval)
    _, moves = replay("t", obs, policy)
    downs = [m for m in moves if m.to_state is DOWN]
    assert len(downs) == 1
    first_failed_check = min(a for a, ok in obs if not ok)
    assert downs[0].at - first_failed_check < threshold + interval
    assert downs[0].first_failure_at == first_failed_check
    if threshold_s % interval_s == 0:  # the fleet's settings (180/10, 20/2): from the fault
        assert downs[0].at - fault < threshold + interval


@settings(max_examples=200)
@given(
    interval_ms=st.integers(min_value=200, max_value=9_999),
    phase_ms=st.integers(min_value=0, max_value=20_000),
    cycles=st.integers(min_value=1, max_value=60),
)
def test_flapping_10s_down_10s_up_never_declares_with_20s_threshold(
    interval_ms: int, phase_ms: int, cycles: int
) -> None:
    obs = []
    t_ms = phase_ms
    while t_ms < phase_ms + cycles * 20_000:
        failing = (t_ms // 10_000) % 2 == 0
        obs.append((T0 + timedelta(milliseconds=t_ms), not failing))
        t_ms += interval_ms
    _, moves = replay("t", obs, OutagePolicy(threshold=s(20), recovery_successes=2))
    assert all(m.to_state in (PENDING, UP) for m in moves)


@settings(max_examples=300)
@given(tail=st.lists(st.booleans(), max_size=30), successes=st.integers(min_value=1, max_value=5))
def test_recovery_needs_a_run_of_successes(tail: list[bool], successes: int) -> None:
    policy = OutagePolicy(threshold=s(30), recovery_successes=successes)
    run, cut = 0, len(tail)
    for i, ok in enumerate(tail):
        run = run + 1 if ok else 0
        if run >= successes:
            cut = i + 1  # stop at recovery: what follows would be a new story
            break
    recovered = run >= successes
    obs = regular("xxxx") + [(T0 + s(40 + 10 * i), ok) for i, ok in enumerate(tail[:cut])]
    status, moves = replay("t", obs, policy)
    assert (status.state is UP) == recovered
    assert sum(m.to_state is DOWN for m in moves if m.from_state is PENDING) == 1  # one outage
    assert all(m.first_failure_at == T0 for m in moves[1:])


# ----------------------------------------------------------------------------- tracker


def test_tracker_feeds_many_targets_in_time_order() -> None:
    tracker = OutageTracker(POLICY)
    moves = []
    for i in range(5):
        at = T0 + s(10 * i)
        cycle = [
            Observation("b", True, 1.0, "ok", at),
            Observation("a", False, 1.0, "HTTP 503", at),
        ]
        moves += tracker.feed(reversed(cycle))
    assert tracker.status("a").state is DOWN and tracker.status("b").state is UP
    assert [(m.target_id, m.to_state) for m in moves] == [("a", PENDING), ("a", DOWN)]
    assert tracker.statuses["a"].last_reason == "HTTP 503"
    resumed = OutageTracker(POLICY, tracker.statuses)  # a restarted probe keeps the outage
    assert resumed.status("a").first_failure_at == T0


# ----------------------------------------------------------------------------- quorum

V3 = ("jnb", "lon", "fra")


def latest(at: datetime, **oks: bool | None) -> dict[str, Observation]:
    return {
        v: Observation("t", ok, 10.0, "ok" if ok else "timeout", at, vantage=v)
        for v, ok in oks.items()
        if ok is not None
    }


@pytest.mark.parametrize(
    ("oks", "failing"),
    [
        ({"jnb": False, "lon": False, "fra": False}, True),
        ({"jnb": False, "lon": False, "fra": True}, True),
        ({"jnb": False, "lon": True, "fra": True}, False),  # one vantage's own network
        ({"jnb": False, "lon": None, "fra": None}, False),  # silent vantages do not vote
        ({"jnb": False, "lon": False, "fra": None}, True),
    ],
)
def test_quorum_majority_of_all_vantages(oks: dict[str, bool | None], failing: bool) -> None:
    obs = quorum_observation("t", latest(T0, **oks), T0, vantages=V3, freshness=s(30))
    assert obs.ok is not failing and obs.vantage == "quorum"
    if failing:
        assert "vantages failing" in obs.reason


def test_quorum_ignores_stale_observations() -> None:
    old = latest(T0 - s(31), jnb=False, lon=False)
    obs = quorum_observation("t", {**old, **latest(T0, fra=True)}, T0, vantages=V3, freshness=s(30))
    assert obs.ok
    with pytest.raises(ValueError, match="vantage"):
        quorum_observation("t", {}, T0, vantages=(), freshness=s(30))


@given(st.lists(st.sampled_from([True, False, None]), min_size=3, max_size=3))
def test_quorum_agrees_with_counting(votes: list[bool | None]) -> None:
    oks = dict(zip(V3, votes, strict=True))
    obs = quorum_observation("t", latest(T0, **oks), T0, vantages=V3, freshness=s(30))
    assert obs.ok == (sum(v is False for v in votes) < 2)
