"""The probe's watchdog: a probe that stopped heartbeating pages someone.

:meth:`~ppo_dr.probe.runner.ProbeRunner.heartbeat` counts one check per cycle for the
pseudo-target :data:`~ppo_dr.probe.minutes.HEARTBEAT_TARGET`; :func:`check_probe_silence`
(run by the watchdog flow, not by the probe) opens a paging ``probe-silent`` incident
when that target has had no check for the silence threshold, and marks it recovered
when heartbeats come back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from ppo_dr.probe.incidents import open_or_relapse, utc_stamp
from ppo_dr.probe.minutes import last_heartbeat
from ppo_dr.store import Incident, Store

#: Incident kind (and dedupe key) of a probe that stopped heartbeating.
SILENT_KIND: Final = "probe-silent"
#: A probe with no heartbeat at all in this long has not run here: the watchdog is quiet.
WATCH_LOOKBACK: Final = timedelta(days=1)


def check_probe_silence(
    store: Store,
    silent_after: timedelta,
    *,
    now: datetime | None = None,
    flow_run_id: str | None = None,
) -> tuple[Incident | None, bool]:
    """Open (idempotently) a paging ``probe-silent`` incident if the probe has not
    heartbeated for *silent_after*; mark it recovered once it heartbeats again.

    Returns ``(incident, created)``; ``(None, False)`` when the probe is alive and no
    such incident is open. Heartbeats are per minute (a minute of slack).

    No heartbeat at all in the last :data:`WATCH_LOOKBACK` means the probe has not
    run against this store (a fresh install, whose watchdog may run before the first
    probe run): nothing to watch, no page. A silence that began within the lookback
    pages, and that incident stays open until someone resolves it. A recovered but
    unresolved ``probe-silent`` incident is resolved when the probe falls silent
    again, and a new one pages.
    """
    now = now or datetime.now(UTC)
    last = last_heartbeat(store, now, lookback=max(WATCH_LOOKBACK, 2 * silent_after))
    if last is None:
        return None, False
    silent = now - last > silent_after
    if not silent:
        for incident in store.incidents(states=("open", "acknowledged"), kind=SILENT_KIND):
            store.mark_recovered(incident.id, at=now, flow_run_id=flow_run_id)
            store.add_timeline(
                incident.id,
                "probe-recovered",
                f"probe heartbeating again (last {utc_stamp(last)})",
                flow_run_id=flow_run_id,
                at=now,
            )
        return None, False
    since = utc_stamp(last)

    def open_() -> tuple[Incident, bool]:
        return store.open_incident(
            SILENT_KIND,
            SILENT_KIND,
            f"probe silent: no heartbeat for {int(silent_after.total_seconds())} s",
            {"level": "probe", "subject": "probe", "last_heartbeat": since},
            severity="major",
            paging=True,
            flow_run_id=flow_run_id,
            at=now,
        )

    incident, created, _ = open_or_relapse(
        store,
        open_,
        by="probe-watchdog",
        note="silent again: continued in a new incident",
        flow_run_id=flow_run_id,
        at=now,
    )
    if created:
        store.add_timeline(
            incident.id,
            "declared",
            f"no probe heartbeat since {since}: outages are not being detected",
            flow_run_id=flow_run_id,
            at=now,
        )
    return incident, created
