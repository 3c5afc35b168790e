"""The escalation decision step by step with a fake clock (it is a pure function: the
clock is the ``now`` we pass), and by property: keys, bounds, public wording."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_dr.escalation import (
    PUBLIC,
    X_LIMIT,
    IncidentView,
    NoticeIntent,
    contacts_of,
    decide,
    fallback,
    notice_key,
    parse_key,
    public_text,
)
from ppo_dr.inventory import EscalationLevel, EscalationPolicy, Person, load_fleet
from tests.ppo_dr.incident_records import open_incident

FLEET = load_fleet(Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml")
assert FLEET.escalation is not None
POLICY: EscalationPolicy = FLEET.escalation  # 5m/10m/15m, repeat 2, ack 30m, public 10m/15m
PEOPLE = {p.id: p for p in FLEET.people}
T0 = datetime(2026, 11, 30, 7, 31, 12, tzinfo=UTC)
AFFECTED = ("acme-mining", "karoo-logistics")
VIEW = IncidentView(
    id=42,
    opened_at=T0,
    title="app server app-jhb1-1 down (2 clients)",
    clients=AFFECTED,
    contacts=contacts_of(FLEET.clients, AFFECTED),
)


def m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


Log = list[tuple[datetime, NoticeIntent]]


def simulate(
    view: IncidentView = VIEW,
    until: datetime | None = None,
    events: dict[datetime, dict[str, Any]] | None = None,
    policy: EscalationPolicy = POLICY,
    extra_wakes: tuple[datetime, ...] = (),
) -> tuple[Log, IncidentView, bool]:
    """The escalation flow's loop: wake, decide, record (= send), sleep until next_wake
    or the next event (an ack, a recovery, a resolve). Returns every notice with the
    time it was decided."""
    until = until or m(240)
    pending = dict(sorted((events or {}).items()))
    wakes = sorted(extra_wakes)
    log: Log = []
    now = view.opened_at
    while now <= until:
        for at in [a for a in pending if a <= now]:
            view = replace(view, **pending.pop(at))
        decision = decide(policy, view, now, PEOPLE)
        for notice in decision.notices:
            assert notice.key not in view.sent, "decide returned a notice already sent"
            log.append((now, notice))
        view = replace(view, sent=view.sent | {n.key for n in decision.notices})
        if decision.done:
            return log, view, True
        candidates = [t for t in [decision.next_wake, *pending, *wakes] if t and t > now]
        if not candidates:
            break
        now = min(candidates)
    return log, view, False


def pages(log: Log) -> list[tuple[float, str, str, str]]:
    return [
        ((at - T0).total_seconds() / 60, n.step, n.recipient, n.channel)
        for at, n in log
        if n.step.startswith("page.")
    ]


# ----------------------------------------------------------------------------- paging


def test_level_one_gets_sms_and_email_at_once() -> None:
    decision = decide(POLICY, VIEW, T0, PEOPLE)
    assert [(n.recipient, n.channel) for n in decision.notices] == [
        ("sipho", "sms"),
        ("sipho", "email"),
        ("anna", "sms"),
        ("anna", "email"),
    ]
    assert decision.notices[0].key == "incident:42/step:page.e0.r0.l1/to:sipho/via:sms"
    assert decision.next_wake == m(5) and not decision.done
    sms = decision.notices[0].body
    assert "ppo-dr incident ack 42 --by sipho" in sms and "app-jhb1-1" in sms
    assert "acme-mining" in decision.notices[1].body  # the people paged get specifics


def test_no_ack_walks_the_ladder_then_repeats_it_twice_then_stops() -> None:
    log, _, done = simulate(until=m(240))
    got = pages(log)
    starts = sorted({(t, step) for t, step, _, _ in got})
    assert starts == [
        (0, "page.e0.r0.l1"),
        (5, "page.e0.r0.l2"),
        (15, "page.e0.r0.l3"),
        (30, "page.e0.r1.l1"),
        (35, "page.e0.r1.l2"),
        (45, "page.e0.r1.l3"),
        (60, "page.e0.r2.l1"),
        (65, "page.e0.r2.l2"),
        (75, "page.e0.r2.l3"),
    ]
    assert len(got) == 3 * (4 + 2 + 2)
    assert not done
    # paging stopped, public updates go on
    assert max(at for at, n in log if n.channel == "x") > m(200)


def test_ack_stops_paging() -> None:
    log, _, _ = simulate(
        until=m(36), events={m(7): {"acknowledged_at": m(7), "acknowledged_by": "james"}}
    )
    assert {step for _, step, _, _ in pages(log)} == {"page.e0.r0.l1", "page.e0.r0.l2"}


def test_ack_timeout_retriggers_from_level_one() -> None:
    events = {m(7): {"acknowledged_at": m(7), "acknowledged_by": "james"}}
    log, _, _ = simulate(until=m(50), events=events)
    assert [(t, step) for t, step, r, c in pages(log) if c == "sms"][-3:] == [
        (pytest.approx(37), "page.e1.r0.l1"),
        (pytest.approx(37), "page.e1.r0.l1"),
        (pytest.approx(42), "page.e1.r0.l2"),
    ]
    # a new ack (re-ack) stops the new epoch; the timer then runs from the re-ack
    events[m(40)] = {"acknowledgements": (m(7), m(40))}
    log, _, _ = simulate(until=m(69), events=events)
    assert not [p for p in pages(log) if p[0] > 40]
    log, _, _ = simulate(until=m(71), events=events)
    assert next(p[1] for p in pages(log) if p[0] > 40) == "page.e2.r0.l1"


def test_recovery_stops_paging_and_the_retrigger() -> None:
    events = {
        m(7): {"acknowledged_at": m(7)},
        m(20): {"recovered_at": m(20)},
    }
    log, _, _ = simulate(until=m(120), events=events)
    assert max(p[0] for p in pages(log)) == 5


def test_late_wake_pages_everyone_due_in_the_current_round_once() -> None:
    decision = decide(POLICY, VIEW, m(16), PEOPLE)
    steps = sorted({n.step for n in decision.notices if n.step.startswith("page.")})
    assert steps == ["page.e0.r0.l1", "page.e0.r0.l2", "page.e0.r0.l3"]
    later = decide(POLICY, VIEW, m(61), PEOPLE)
    assert {n.step for n in later.notices if n.step.startswith("page.")} == {"page.e0.r2.l1"}


@settings(max_examples=100, deadline=None)
@given(
    deadlines=st.lists(st.integers(min_value=60, max_value=3600), min_size=1, max_size=4),
    repeat=st.integers(min_value=0, max_value=4),
)
def test_repeat_bound(deadlines: list[int], repeat: int) -> None:
    levels = tuple(
        EscalationLevel(name=f"level {i}", notify=("sipho",), ack_deadline=d)
        for i, d in enumerate(deadlines)
    )
    policy = EscalationPolicy(levels=levels, repeat=repeat)
    log, _, _ = simulate(policy=policy, until=T0 + timedelta(seconds=sum(deadlines) * 6 + 3600))
    steps = {p[1] for p in pages(log)}
    assert len(steps) == (repeat + 1) * len(levels)
    ladder_end = sum(deadlines) * (repeat + 1)
    assert all(p[0] * 60 < ladder_end + 1e-6 for p in pages(log))


# ----------------------------------------------------------------------------- public


def test_public_cadence_and_vocabulary() -> None:
    events = {
        m(12): {"acknowledged_at": m(12)},
        m(33): {"recovered_at": m(33)},
        m(50): {"resolved_at": m(50)},
    }
    log, _, done = simulate(events=events)
    posts = [
        ((at - T0).total_seconds() / 60, n.step, n.subject) for at, n in log if n.channel == "x"
    ]
    assert posts == [
        (10, "public-0", "Investigating"),
        (12, "public-identified", "Identified"),
        (25, "public-1", "Identified"),
        (33, "public-monitoring", "Monitoring"),
        (40, "public-2", "Monitoring"),
        (50, "public-resolved", "Resolved"),
    ]
    assert done
    assert all(n.recipient == PUBLIC for _, n in log if n.channel == "x")


def test_ack_before_the_first_post_makes_it_identified() -> None:
    log, _, _ = simulate(until=m(11), events={m(3): {"acknowledged_at": m(3)}})
    assert [(n.step, n.subject) for _, n in log if n.channel == "x"] == [("public-0", "Identified")]


def test_recovered_before_public_after_posts_nothing() -> None:
    events = {m(4): {"recovered_at": m(4)}, m(60): {"resolved_at": m(60)}}
    log, _, done = simulate(events=events)
    assert done and not [n for _, n in log if n.channel == "x"]
    assert not [n for _, n in log if n.step.startswith("clients")]


FORBIDDEN = sorted(
    {c.id for c in FLEET.clients}
    | {c.name for c in FLEET.clients}
    | {w for c in FLEET.clients for w in c.name.split() if len(w) > 3}
    | {s.id for s in FLEET.servers}
    | {s.ssh.host for s in FLEET.servers}
    | {s.dc for s in FLEET.servers}
    | {p.id for p in FLEET.people}
    | {p.name for p in FLEET.people}
    | {k.email for c in FLEET.clients for k in c.contacts}
    | {"ppo.example", "jhb", "cpt", "lon"}
)


@settings(max_examples=60, deadline=None)
@given(
    ack=st.none() | st.integers(min_value=0, max_value=200),
    recover=st.none() | st.integers(min_value=0, max_value=200),
    resolve=st.none() | st.integers(min_value=0, max_value=300),
)
def test_public_posts_are_short_and_name_nobody(
    ack: int | None, recover: int | None, resolve: int | None
) -> None:
    events: dict[datetime, dict[str, Any]] = {}
    if ack is not None:
        events.setdefault(m(ack), {})["acknowledged_at"] = m(ack)
    if recover is not None:
        events.setdefault(m(recover), {})["recovered_at"] = m(recover)
    if resolve is not None:
        events.setdefault(m(resolve), {})["resolved_at"] = m(resolve)
    log, _, _ = simulate(events=events, until=m(320))
    for _, notice in log:
        if notice.channel != "x":
            continue
        text = notice.subject + " " + notice.body
        assert len(notice.body) <= X_LIMIT
        for word in FORBIDDEN:
            assert word.lower() not in text.lower(), word
        assert re.match(r"^(Investigating|Identified|Monitoring|Resolved): ", notice.body)


@pytest.mark.parametrize("state", ["investigating", "identified", "monitoring", "resolved"])
def test_public_text_templates(state: str) -> None:
    text = public_text(state, 99_999_999, T0, 86_400)
    assert len(text) <= X_LIMIT and text.lower().startswith(state)


# ----------------------------------------------------------------------------- clients


def test_client_contacts_emailed_once_after_clients_after_then_resolved() -> None:
    log, _, done = simulate(events={m(95): {"resolved_at": m(95)}})
    mails = [((at - T0).total_seconds() / 60, n.step, n.recipient) for at, n in log]
    mails = [x for x in mails if x[1].startswith("clients")]
    assert mails == [
        (30, "clients", "it@acme-mining.example"),
        (30, "clients", "pieter@karoo.example"),
        (95, "clients-resolved", "it@acme-mining.example"),
        (95, "clients-resolved", "pieter@karoo.example"),
    ]
    first = next(n for _, n in log if n.step == "clients")
    assert "Thandi Mokoena" in first.body and "Karoo" not in first.body
    assert done


def test_no_client_email_when_recovered_before_clients_after() -> None:
    log, _, _ = simulate(until=m(100), events={m(20): {"recovered_at": m(20)}})
    assert not [n for _, n in log if n.step.startswith("clients")]


# ----------------------------------------------------------------------------- resolved


def test_resolved_notices_go_to_everyone_paged_and_then_done() -> None:
    log, view, done = simulate(events={m(7): {"resolved_at": m(7)}})
    resolved = [(n.recipient, n.channel) for at, n in log if n.step == "resolved"]
    assert sorted(resolved) == sorted(
        [(p, c) for p in ("sipho", "anna", "james") for c in ("sms", "email")]
    )
    assert not [n for _, n in log if n.channel == "x"]  # nothing posted, nothing to resolve
    assert done
    again = decide(POLICY, view, m(8), PEOPLE)
    assert again == again.__class__([], None, True)


def test_resolved_before_anything_else_is_decided_in_one_call() -> None:
    view = replace(VIEW, resolved_at=m(1), sent=frozenset())
    decision = decide(POLICY, view, m(2), PEOPLE)
    assert decision.done and decision.notices == []


# ----------------------------------------------------------------------------- keys


def test_keys_stable_and_unique_whatever_the_wake_times() -> None:
    events = {m(50): {"acknowledged_at": m(50)}, m(130): {"resolved_at": m(130)}}
    base, _, _ = simulate(events=events)
    spurious = tuple(m(x / 7) for x in range(0, 140 * 7, 13))
    noisy, _, _ = simulate(events=events, extra_wakes=spurious)
    keys = [n.key for _, n in base]
    assert len(keys) == len(set(keys))
    assert keys == [n.key for _, n in noisy]
    for key in keys:
        parsed = parse_key(key)
        assert parsed is not None and parsed.incident_id == 42
        assert notice_key(42, parsed.step, parsed.recipient, parsed.channel) == key
        assert "2026" not in key  # never the time


def test_restart_with_sent_keys_sends_nothing_twice() -> None:
    _, view, _ = simulate(until=m(31))
    sent = view.sent
    restarted = replace(VIEW, sent=sent)
    assert decide(POLICY, restarted, m(31), PEOPLE).notices == []


def test_parse_key_rejects_foreign_keys() -> None:
    assert parse_key("mirror:app-jhb1-1/2026") is None


def test_fallback_uses_the_other_channel() -> None:
    sms = decide(POLICY, VIEW, T0, PEOPLE).notices[0]
    sipho = PEOPLE["sipho"]
    mail = fallback(sms, "sms", sipho)
    assert mail is not None and mail.channel == "email"
    assert mail.key == "incident:42/step:page.e0.r0.l1/to:sipho/via:email"
    back = fallback(mail, "email", sipho)
    assert back is not None and back.channel == "sms" and back.body == mail.subject
    assert fallback(sms, "sms", Person(id="x", name="X", sms="+27820000009")) is None
    assert fallback(sms, "x", sipho) is None


def test_view_from_a_store_record() -> None:
    record = open_incident(
        dedupe_key="outage:server:app-jhb1-1",
        state="acknowledged",
        title="app server app-jhb1-1 down",
        scope={"level": "server", "clients": list(AFFECTED)},
        acknowledged_at=m(3),
    )
    view = IncidentView.from_record(record, sent=["k"], contacts=VIEW.contacts)
    assert view.clients == AFFECTED and view.acknowledged_by == "anna"
    assert view.sent == frozenset({"k"}) and view.id == 7


def test_step_by_step_with_a_fake_clock() -> None:
    """Each wake-up: what is due, and when to wake next (no ack; the example policy)."""
    expected = [
        (0, {"page.e0.r0.l1": 4}, 5),
        (5, {"page.e0.r0.l2": 2}, 10),
        (10, {"public-0": 1}, 15),
        (15, {"page.e0.r0.l3": 2}, 25),
        (25, {"public-1": 1}, 30),
        (30, {"page.e0.r1.l1": 4, "clients": 2}, 35),
        (35, {"page.e0.r1.l2": 2}, 40),
        (40, {"public-2": 1}, 45),
    ]
    view, now = VIEW, T0
    for minute, due, wake in expected:
        assert now == m(minute)
        decision = decide(POLICY, view, now, PEOPLE)
        steps: dict[str, int] = {}
        for notice in decision.notices:
            steps[notice.step] = steps.get(notice.step, 0) + 1
        assert steps == due, minute
        assert decision.next_wake == m(wake) and not decision.done
        # deciding again at the same time, or a little later, adds nothing new
        view = replace(view, sent=view.sent | {n.key for n in decision.notices})
        assert decide(POLICY, view, now + timedelta(seconds=30), PEOPLE).notices == []
        now = decision.next_wake
