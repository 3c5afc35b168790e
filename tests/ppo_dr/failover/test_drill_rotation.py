"""The drill's pure decisions: canary rotation, mirror alternation, scratch placement, trend.

The promises, for any client set, any prior history and any per-day setting (hypothesis):
every client is drilled in every 7 consecutive days; each client's drills alternate
on-site / off-site; the same inputs give the same canaries whatever their order.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import TypeAlias

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_dr.failover.drill import (
    NO_SNAPSHOT,
    OFF_SITE,
    ON_SITE,
    Canary,
    DrillHistory,
    DrillPlanError,
    MirrorKind,
    allowed_dcs,
    choose_mirror,
    daily_quota,
    drill_trends,
    failed_dedupe_key,
    histories,
    is_scratch_server,
    mirror_kinds,
    next_mirror,
    pick_canaries,
    scratch_dcs,
    scratch_groups,
    scratch_server_id,
    sparkline,
    trend_markdown,
)
from tests.ppo_dr.failover.fleets import lab_like

DAY0 = date(2026, 11, 30)
DRILL_TIME = timedelta(hours=3, minutes=30)


def at(day: date, offset: timedelta = DRILL_TIME) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + offset


@dataclass(frozen=True)
class Row:
    """A recorded drill as the store returns it (the fields DrillLike needs)."""

    client_id: str
    mirror_id: str
    started_at: datetime
    ok: bool = True
    restore_seconds: float = 1.0
    snapshot_age_seconds: float = 60.0
    snapshot_id: str = "2026-11-30T03-00-00Z"


# --------------------------------------------------------------------------- quota


@pytest.mark.parametrize(
    ("clients", "per_day", "expected"),
    [
        (0, None, 0),
        (1, None, 1),
        (7, None, 1),
        (8, None, 2),
        (14, None, 2),
        (15, None, 3),
        (20, None, 3),
        (20, 1, 3),  # below the weekly minimum: raised to it
        (20, 5, 5),
        (3, 10, 3),  # never more than there are
        (0, 4, 0),
    ],
)
def test_daily_quota_is_at_least_a_seventh(
    clients: int, per_day: int | None, expected: int
) -> None:
    assert daily_quota(clients, per_day) == expected


@pytest.mark.parametrize("per_day", [0, -1, True, 1.5, "2"])
def test_daily_quota_refuses_a_bad_per_day(per_day: object) -> None:
    with pytest.raises(DrillPlanError, match="per_day"):
        daily_quota(5, per_day)  # type: ignore[arg-type]


@pytest.mark.parametrize("clients", [-1, True, 2.0])
def test_daily_quota_refuses_a_bad_client_count(clients: object) -> None:
    with pytest.raises(DrillPlanError, match="number of clients"):
        daily_quota(clients)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- picking


def test_next_mirror_alternates_starting_on_site() -> None:
    assert next_mirror(None) == ON_SITE
    assert next_mirror(ON_SITE) == OFF_SITE
    assert next_mirror(OFF_SITE) == ON_SITE
    with pytest.raises(DrillPlanError, match="unknown mirror kind"):
        next_mirror("sideways")  # type: ignore[arg-type]


def test_never_drilled_first_then_least_recent_ties_by_id() -> None:
    history = {
        "alpha": DrillHistory("alpha", at(DAY0 - timedelta(days=1)), ON_SITE),
        "bravo": DrillHistory("bravo", at(DAY0 - timedelta(days=3)), OFF_SITE),
        "charlie": DrillHistory("charlie", at(DAY0 - timedelta(days=3)), ON_SITE),
        "stranger": DrillHistory("stranger", at(DAY0 - timedelta(days=30))),  # not a client
    }
    clients = ["charlie", "delta", "alpha", "bravo", "echo"]
    picked = pick_canaries(clients, history, DAY0, per_day=4)
    assert [c.client_id for c in picked] == ["delta", "echo", "bravo", "charlie"]
    assert [c.mirror for c in picked] == [ON_SITE, ON_SITE, ON_SITE, OFF_SITE]
    assert picked[0] == Canary("delta", ON_SITE, None, None)
    assert picked[0].overdue
    assert picked[2].days_since == 3 and not picked[2].overdue


def test_a_client_unseen_for_a_week_is_overdue() -> None:
    history = {"alpha": DrillHistory("alpha", at(DAY0 - timedelta(days=7)), ON_SITE)}
    (canary,) = pick_canaries(["alpha"], history, DAY0)
    assert canary.days_since == 7 and canary.overdue and canary.mirror == OFF_SITE


def test_no_clients_no_canaries() -> None:
    assert pick_canaries([], {}, DAY0) == ()


@pytest.mark.parametrize("bad", ["../etc", "Acme", "", "a b"])
def test_hostile_client_ids_are_refused(bad: str) -> None:
    with pytest.raises(Exception, match="client id"):
        pick_canaries(["alpha", bad], {}, DAY0)


def test_naive_history_times_are_refused() -> None:
    history = {"alpha": DrillHistory("alpha", datetime(2026, 11, 29, 3, 30), ON_SITE)}
    with pytest.raises(DrillPlanError, match="time zone"):
        pick_canaries(["alpha", "bravo"], history, DAY0)


def test_histories_take_each_clients_latest_drill_and_map_mirror_kinds() -> None:
    rows = [
        Row("alpha", "m-home", at(DAY0 - timedelta(days=2))),
        Row("alpha", "m-away", at(DAY0 - timedelta(days=1))),
        Row("bravo", "m-gone", at(DAY0 - timedelta(days=1))),
    ]
    kinds: dict[str, dict[str, MirrorKind]] = {
        "alpha": {"m-home": ON_SITE, "m-away": OFF_SITE},
        "bravo": {"m-home": ON_SITE},
    }
    found = histories(reversed(rows), kinds)
    assert found["alpha"] == DrillHistory("alpha", rows[1].started_at, OFF_SITE)
    assert found["bravo"] == DrillHistory("bravo", rows[2].started_at, None)  # mirror retired


# --------------------------------------------------------------------------- properties


ids = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
#: What the rotation is given: the clients, their drill history, the daily quota.
Situation: TypeAlias = tuple[list[str], dict[str, DrillHistory], int | None]


@st.composite
def situations(draw: st.DrawFn) -> Situation:
    """A set of 1-40 clients, any prior history (days before DAY0, or never), per_day."""
    clients = sorted(draw(st.sets(ids, min_size=1, max_size=40)))
    history: dict[str, DrillHistory] = {}
    for client in clients:
        if draw(st.booleans()):
            days_ago = draw(st.integers(1, 60))
            minute = draw(st.integers(0, 24 * 60 - 1))
            kind = draw(st.sampled_from([ON_SITE, OFF_SITE, None]))
            when = at(DAY0 - timedelta(days=days_ago), timedelta(minutes=minute))
            history[client] = DrillHistory(client, when, kind)
    per_day = draw(st.none() | st.integers(1, 12))
    return clients, history, per_day


def simulate(
    clients: list[str], history: dict[str, DrillHistory], per_day: int | None, days: int
) -> dict[str, list[tuple[int, MirrorKind]]]:
    """Run the rotation for *days* days from DAY0; each client's (day, mirror) drills."""
    history = dict(history)
    drilled: dict[str, list[tuple[int, MirrorKind]]] = {c: [] for c in clients}
    for day in range(days):
        today = DAY0 + timedelta(days=day)
        for canary in pick_canaries(clients, history, today, per_day):
            drilled[canary.client_id].append((day, canary.mirror))
            history[canary.client_id] = DrillHistory(canary.client_id, at(today), canary.mirror)
    return drilled


@settings(max_examples=200, deadline=None)
@given(situations())
def test_every_client_is_drilled_in_any_seven_consecutive_days(situation: Situation) -> None:
    clients, history, per_day = situation
    days = 28
    drilled = simulate(clients, history, per_day, days)
    for client, runs in drilled.items():
        seen = {day for day, _ in runs}
        for start in range(days - 6):
            assert seen & set(range(start, start + 7)), (
                f"{client} not drilled in days {start}..{start + 6}"
            )
    quota = daily_quota(len(clients), per_day)
    assert sum(len(r) for r in drilled.values()) == quota * days
    assert quota >= math.ceil(len(clients) / 7)


@settings(max_examples=200, deadline=None)
@given(situations())
def test_each_clients_mirror_alternates(situation: Situation) -> None:
    clients, history, per_day = situation
    drilled = simulate(clients, history, per_day, 21)
    for client, runs in drilled.items():
        kinds = [kind for _, kind in runs]
        prior = history.get(client)
        expected = next_mirror(prior.last_mirror if prior else None)
        for kind in kinds:
            assert kind == expected, f"{client}: {kinds} after {prior}"
            expected = next_mirror(kind)
        assert len(set(kinds[:2])) == min(2, len(kinds))  # both mirrors within two drills


@settings(max_examples=100, deadline=None)
@given(situations(), st.randoms(use_true_random=False))
def test_the_same_inputs_pick_the_same_canaries(situation: Situation, rnd: random.Random) -> None:
    clients, history, per_day = situation
    first = pick_canaries(clients, history, DAY0, per_day)
    shuffled = clients * 2
    rnd.shuffle(shuffled)
    items = list(history.items())
    rnd.shuffle(items)
    again = pick_canaries(shuffled, dict(items), DAY0, per_day)
    assert again == first
    assert len({c.client_id for c in first}) == len(first)  # nobody twice


# --------------------------------------------------------------------------- fleet


def test_mirror_kinds_and_choice_follow_the_home_data_centre() -> None:
    fleet = lab_like()
    home = fleet.server("app-lon1-1")
    mirrors = [fleet.server(m) for m in home.mirrors]
    assert mirror_kinds(mirrors, home.dc) == {"mirror-lon1-1": ON_SITE, "mirror-jhb1-1": OFF_SITE}
    assert choose_mirror(mirrors, home.dc, ON_SITE).id == "mirror-lon1-1"
    assert choose_mirror(mirrors, home.dc, OFF_SITE).id == "mirror-jhb1-1"
    with pytest.raises(DrillPlanError, match="no off-site mirror"):
        choose_mirror(mirrors[:1], home.dc, OFF_SITE)


def test_scratch_dcs_need_a_provider_or_a_spare() -> None:
    fleet = lab_like()  # jhb1 lab, cpt1 static with a spare, lon1 lab
    assert scratch_dcs(fleet) == ["jhb1", "cpt1", "lon1"]
    no_spare = lab_like(
        servers=[s for s in _lab_servers() if s[0] != "spare-cpt1-1"],
    )
    assert scratch_dcs(no_spare) == ["jhb1", "lon1"]
    assert allowed_dcs(fleet, "acme-mining", ["jhb1", "cpt1", "lon1"]) == ["jhb1", "cpt1"]
    assert allowed_dcs(fleet, "thames-advisory", ["jhb1", "lon1"]) == ["jhb1", "lon1"]


def _lab_servers() -> list[tuple[str, str, str, tuple[str, ...], int, float]]:
    from tests.ppo_dr.failover.fleets import LAB_SERVERS

    return [(s[0], s[1], s[2], tuple(s[3]), s[4], s[5]) for s in LAB_SERVERS]


def _canary(client: str) -> Canary:
    return Canary(client, ON_SITE, None, None)


def test_one_scratch_server_when_one_dc_suits_everyone() -> None:
    canaries = [_canary("za-1"), _canary("gb-1"), _canary("za-2")]
    allowed = {"za-1": ["jhb1", "cpt1"], "gb-1": ["jhb1", "lon1"], "za-2": ["cpt1", "jhb1"]}
    groups, refused = scratch_groups(canaries, allowed, ["cpt1", "jhb1", "lon1"])
    assert refused == ()
    assert [(g.dc, [c.client_id for c in g.canaries]) for g in groups] == [
        ("jhb1", ["za-1", "gb-1", "za-2"])
    ]


def test_residency_splits_scratch_servers_and_refuses_the_unplaceable() -> None:
    canaries = [_canary("za-1"), _canary("gb-1"), _canary("gb-2"), _canary("de-1")]
    allowed = {"za-1": ["jhb1"], "gb-1": ["lon1"], "gb-2": ["lon1"], "de-1": []}
    groups, refused = scratch_groups(canaries, allowed, ["jhb1", "lon1"])
    assert [(g.dc, [c.client_id for c in g.canaries]) for g in groups] == [
        ("lon1", ["gb-1", "gb-2"]),
        ("jhb1", ["za-1"]),
    ]
    assert [r.client_id for r in refused] == ["de-1"]
    assert "residency of de-1" in refused[0].reason


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        ids, st.lists(st.sampled_from(["d1", "d2", "d3", "d4"]), unique=True), max_size=15
    )
)
def test_every_canary_is_placed_where_it_is_allowed_or_refused(
    allowed: dict[str, list[str]],
) -> None:
    canaries = [_canary(c) for c in sorted(allowed)]
    order = ["d1", "d2", "d3"]  # d4 cannot lend a scratch server
    groups, refused = scratch_groups(canaries, allowed, order)
    placed = [(g.dc, c.client_id) for g in groups for c in g.canaries]
    assert sorted([*(c for _, c in placed), *(r.client_id for r in refused)]) == sorted(allowed)
    assert len({c for _, c in placed}) == len(placed)
    for dc, client in placed:
        assert dc in allowed[client] and dc in order
    for r in refused:
        assert not set(allowed[r.client_id]) & set(order)
    assert len({g.dc for g in groups}) == len(groups)


def test_scratch_server_ids_are_deterministic_and_recognised() -> None:
    when = datetime(2026, 11, 30, 3, 30, 59, 123456, tzinfo=UTC)
    assert scratch_server_id(when, 1) == "drill-20261130-033059-1"
    assert scratch_server_id(when.astimezone(timezone(timedelta(hours=2))), 2) == (
        "drill-20261130-033059-2"
    )
    assert is_scratch_server("drill-20261130-033059-12")
    for other in (
        "app-jhb1-1",
        "drill-2026-11-30",
        "drill-20261130-0330-1",
        "drill-20261130-033059",
        "xdrill-20261130-033059-1",
    ):
        assert not is_scratch_server(other)
    with pytest.raises(DrillPlanError, match="positive"):
        scratch_server_id(when, 0)
    with pytest.raises(DrillPlanError, match="time zone"):
        scratch_server_id(datetime(2026, 11, 30, 3, 30), 1)
    assert failed_dedupe_key("acme-mining") == "drill-failed:acme-mining"


# --------------------------------------------------------------------------- trend


def test_sparkline_scales_from_low_to_high() -> None:
    assert sparkline([]) == ""
    assert sparkline([5.0, 5.0]) == "▁▁"
    assert sparkline([0.0, 7.0, 3.5]) == "▁█▅"
    with pytest.raises(DrillPlanError, match="finite"):
        sparkline([1.0, math.inf])


def test_trend_keeps_the_window_and_skips_failed_restores_and_missing_snapshots() -> None:
    now = at(DAY0)
    rows = [
        Row("alpha", "m1", now - timedelta(days=31), restore_seconds=99.0),  # outside
        Row("alpha", "m1", now - timedelta(days=20), restore_seconds=2.0),
        Row("alpha", "m2", now - timedelta(days=10), restore_seconds=4.0, snapshot_age_seconds=300),
        Row("alpha", "m1", now - timedelta(days=3), ok=False, restore_seconds=0.5),
        Row(
            "bravo",
            "m1",
            now - timedelta(days=1),
            ok=False,
            snapshot_id=NO_SNAPSHOT,
            snapshot_age_seconds=0.0,
        ),
    ]
    trends = drill_trends(reversed(rows), now)
    assert [t.client_id for t in trends] == ["alpha", "bravo"]
    alpha, bravo = trends
    assert len(alpha.drills) == 3 and alpha.failures == 1
    assert alpha.restore_seconds == [2.0, 4.0]
    assert alpha.rpo_seconds == [60.0, 300.0, 60.0]
    assert bravo.rpo_seconds == [] and bravo.restore_seconds == []
    text = trend_markdown(trends)
    assert "| alpha | 3 | 1 | `▁█` last 4.0 s, max 4.0 s |" in text
    assert "| bravo | 1 | 1 | - | - |" in text
    assert "(no drills yet)" in trend_markdown([])
    with pytest.raises(DrillPlanError, match="trend window"):
        drill_trends(rows, now, days=0)
