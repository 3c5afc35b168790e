"""RPO and staleness of the mirrors: pure functions of the catalogue, the cron and the time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from ppo_dr.cron import cron_interval, parse_cron
from ppo_dr.errors import PermanentError
from ppo_dr.mirror.status import (
    client_statuses,
    format_age,
    host_key_alert,
    rpo_markdown,
    stale_after,
    stale_dedupe_key,
    stale_title,
)

NOW = datetime(2026, 11, 30, 6, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Snap:
    client_id: str
    mirror_id: str
    snapshot_id: str
    taken_at: datetime
    verified_at: datetime | None
    status: str = "complete"


def snap(
    client: str, mirror: str, age: timedelta, *, verified: bool = True, status: str = "complete"
) -> Snap:
    taken = NOW - age
    return Snap(
        client,
        mirror,
        taken.strftime("%Y-%m-%dT%H-%M-%SZ"),
        taken,
        taken if verified else None,
        status,
    )


# --------------------------------------------------------------------------- cron


@pytest.mark.parametrize(
    ("cron", "interval"),
    [
        ("0 * * * *", HOUR),
        ("* * * * *", timedelta(minutes=1)),
        ("*/15 * * * *", timedelta(minutes=15)),
        ("5,35 * * * *", timedelta(minutes=30)),
        ("0 */6 * * *", timedelta(hours=6)),
        ("0 6 * * *", timedelta(days=1)),
        ("0 9-17 * * *", timedelta(hours=16)),  # the night is the longest gap
        ("0 9 * * 1-5", timedelta(days=3)),  # Friday 09:00 to Monday 09:00
        ("0 9 * * mon-fri", timedelta(days=3)),
        ("0 0 * * 0", timedelta(days=7)),
        ("0 0 * * 7", timedelta(days=7)),  # 7 is Sunday too
        ("0 0 1 * *", timedelta(days=31)),
        ("0 0 1 jan,jul *", timedelta(days=184)),
        ("30 2 * * *", timedelta(days=1)),
    ],
)
def test_the_interval_is_the_longest_gap_between_fire_times(cron: str, interval: timedelta) -> None:
    assert cron_interval(cron) == interval
    assert stale_after(cron) == 2 * interval


def test_day_of_month_and_weekday_together_mean_either() -> None:
    spec = parse_cron("0 0 13 * 5")  # the 13th, and every Friday
    assert spec.day_matches(datetime(2026, 11, 13).date())  # a Friday the 13th
    assert spec.day_matches(datetime(2026, 11, 20).date())  # a Friday
    assert spec.day_matches(datetime(2026, 12, 13).date())  # a Sunday the 13th
    assert not spec.day_matches(datetime(2026, 11, 14).date())


@pytest.mark.parametrize(
    "cron",
    [
        "",
        "* * * *",
        "60 * * * *",
        "* 24 * * *",
        "*/0 * * * *",
        "5-1 * * * *",
        "x * * * *",
        "0 0 31 2 *",
    ],
)
def test_a_bad_or_never_firing_cron_is_a_permanent_error(cron: str) -> None:
    with pytest.raises(PermanentError):
        cron_interval(cron)


# --------------------------------------------------------------------------- RPO


def test_rpo_is_the_age_of_the_newest_verified_snapshot_per_mirror() -> None:
    snaps = [
        snap("c1", "m-on", 3 * HOUR),
        snap("c1", "m-on", 1 * HOUR),
        snap("c1", "m-on", 10 * timedelta(minutes=1), verified=False),  # not verified: no count
        snap("c1", "m-off", 2 * HOUR),
        snap("c1", "m-off", 30 * timedelta(minutes=1), status="damaged"),  # damaged: no count
        snap("c2", "m-on", 5 * HOUR),
        snap("c9", "m-on", 0 * HOUR),  # not asked about
    ]
    statuses = client_statuses(
        snaps, ["c1", "c2", "c3"], ["m-on", "m-off"], now=NOW, threshold=2 * HOUR
    )
    c1, c2, c3 = statuses
    assert c1.per_mirror["m-on"].rpo == HOUR
    assert c1.per_mirror["m-off"].rpo == 2 * HOUR
    assert c1.per_mirror["m-off"].last_status == "damaged"
    assert c1.rpo == HOUR and not c1.stale and c1.best_mirror == "m-on"
    assert c2.rpo == 5 * HOUR and c2.stale
    assert c2.per_mirror["m-off"].rpo is None
    assert c3.rpo is None and c3.stale and c3.newest_verified is None


def test_stale_means_older_than_the_threshold_not_equal() -> None:
    at_limit = client_statuses(
        [snap("c", "m", 2 * HOUR)], ["c"], ["m"], now=NOW, threshold=2 * HOUR
    )
    beyond = client_statuses(
        [snap("c", "m", 2 * HOUR + timedelta(seconds=1))], ["c"], ["m"], now=NOW, threshold=2 * HOUR
    )
    assert not at_limit[0].stale
    assert beyond[0].stale


def test_a_missing_snapshot_is_shown_but_the_older_verified_one_still_counts() -> None:
    snaps = [snap("c", "m", 3 * HOUR), snap("c", "m", HOUR, verified=False, status="missing")]
    (status,) = client_statuses(snaps, ["c"], ["m"], now=NOW, threshold=4 * HOUR)
    assert status.rpo == 3 * HOUR and not status.stale
    assert status.missing_on == ["m"]
    table = rpo_markdown([status], ["m"])
    assert "| c | 3h 00m (last run: missing) | ok |" in table


def test_one_mirror_far_behind_makes_the_client_stale_and_the_title_says_which() -> None:
    snaps = [snap("c", "m-on", 10 * timedelta(minutes=1)), snap("c", "m-off", 3 * HOUR)]
    (status,) = client_statuses(snaps, ["c"], ["m-on", "m-off"], now=NOW, threshold=2 * HOUR)
    assert status.rpo == 10 * timedelta(minutes=1)
    assert status.stale and status.stale_on == ["m-off"]
    assert stale_title(status) == (
        "client c: mirror(s) behind: m-off 3h 00m (limit 2h 00m; newest elsewhere 10m 00s old)"
    )
    never = client_statuses(snaps[:1], ["c"], ["m-on", "m-off"], now=NOW, threshold=2 * HOUR)
    assert never[0].stale and never[0].stale_on == ["m-off"]
    assert "m-off never" in stale_title(never[0])
    both = client_statuses(
        [*snaps[:1], snap("c", "m-off", HOUR)],
        ["c"],
        ["m-on", "m-off"],
        now=NOW,
        threshold=2 * HOUR,
    )
    assert not both[0].stale and both[0].stale_on == []


def test_the_host_key_alert_names_the_server_and_both_fingerprints() -> None:
    key, title = host_key_alert("mirror-cpt1-1", "SHA256:new", "SHA256:old")
    assert key == "host-key-changed:mirror-cpt1-1"
    assert "mirror-cpt1-1" in title and "SHA256:new" in title and "SHA256:old" in title
    assert host_key_alert("m", None, None)[1].count("an unknown key") == 2


def test_naive_and_future_times_are_handled() -> None:
    naive = Snap("c", "m", "x", datetime(2026, 11, 30, 6, 0), datetime(2026, 11, 30, 6, 0))
    future = snap("c", "m2", -HOUR)
    (status,) = client_statuses([naive, future], ["c"], ["m", "m2"], now=NOW, threshold=HOUR)
    assert status.per_mirror["m"].rpo == timedelta(minutes=30)
    assert status.per_mirror["m2"].rpo == timedelta(0)


def test_words_for_the_operator() -> None:
    assert [format_age(timedelta(seconds=s)) for s in (5, 65, 3 * 3600 + 120, 90000)] == [
        "5s",
        "1m 05s",
        "3h 02m",
        "1d 1h",
    ]
    assert format_age(None) == "never"
    assert stale_dedupe_key("acme") == "mirror-stale:acme"
    (never,) = client_statuses([], ["acme"], ["m"], now=NOW, threshold=2 * HOUR)
    assert "no verified mirror snapshot" in stale_title(never)
    (old,) = client_statuses(
        [snap("acme", "m", 5 * HOUR)], ["acme"], ["m"], now=NOW, threshold=2 * HOUR
    )
    assert stale_title(old).startswith(
        "client acme: newest verified snapshot is 5h 00m old (limit 2h 00m"
    )
    table = rpo_markdown([old], ["m"]).splitlines()
    assert table[0] == "| client | RPO on m | state |"
    assert table[2] == "| acme | 5h 00m | **STALE** |"
