"""The scheduled DR drill: prove, every day, that the mirrors restore.

**dr_drill(clients=None, per_day=None)** — as an operator would rehearse a failover:

1. read the fleet; take the one ``dr-drill`` slot (a drill due while one still runs
   is skipped, Cancelled with the reason); release any scratch server an earlier
   drill left behind (its process died before its teardown);
2. pick today's canaries (:mod:`ppo_dr.failover.drill`): at least ``ceil(n / 7)`` a
   day, least recently drilled first, so every client is drilled weekly; each from
   the other kind of mirror than last time (on-site, off-site, on-site, ...); the
   newest verified snapshot on that mirror;
3. per scratch data centre (one, unless residency splits the canaries): provision a
   scratch app server ``drill-<YYYYMMDD>-<HHMMSS>-<n>`` (lab/aws: the DC's provider
   starts one; static: a free spare is claimed);
4. per canary: restore from that one mirror into the scratch server (the failover's
   restore), verify every byte against the manifest, ask the app on the scratch server
   itself for ``/c/<client>/health``. Placements and the front door are never
   touched: production routing does not change in a drill;
5. record per canary restore time, snapshot age (RPO), mirror and result in the store;
6. **always** (``finally``): remove the restored data from the scratch server and
   release it, whatever failed before; a teardown that fails opens an incident and
   the next drill's sweep tries again;
7. a failed canary (or a scratch server that could not be had) opens a NON-paging
   ``drill-failed`` incident (one per client while unresolved; a later pass resolves
   it);
8. artifacts: today's drills as a table, and a Markdown summary with the trend of
   restore time and RPO by client over 30 days (sparklines).

The run Fails when any canary failed, so a red run in the UI means a backup in doubt.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Cancelled, State

from flows.outcome import failed_with
from flows.probe import probe_period_s
from ppo_dr import config
from ppo_dr.failover.drill import (
    DRILL_FAILED_KIND,
    ScratchGroup,
    failed_dedupe_key,
    format_seconds,
    scratch_server_id,
)
from ppo_dr.ids import check_id, is_valid_id
from ppo_dr.inventory import Server
from ppo_dr.mirror.runbook import store_url
from tasks import label_flow_run
from tasks.drill import (
    TEARDOWN_FAILED_KIND,
    CanaryPlan,
    DrillPlan,
    clean_scratch,
    drill_trend,
    end_scratch_maintenance,
    health_canary,
    open_drill_incident,
    open_scratch_maintenance,
    plan_drill,
    provision_scratch,
    record_drill,
    resolve_drill_incident,
    restore_canary,
    sweep_stale_scratch,
    verify_canary,
)
from tasks.failover import release
from tasks.inventory import load_fleet_task
from tasks.mirror import ensure_mirror_limits, slot_free
from tasks.slots import leased_slot

#: The global concurrency limit every drill takes: one drill at a time.
DRILL_LIMIT: Final = "dr-drill"
DRILL_SLOTS: Final = 1
#: How long a run tries for the free-looking drill slot before it gives up as skipped.
DRILL_SLOT_WAIT_S: Final = 60.0


def drill_stamp() -> datetime:
    """This run's scheduled start (now for an ad-hoc run), UTC, to the second: a retry
    of the run gets the same stamp, so it asks for the same scratch server."""
    start = flow_run.scheduled_start_time
    when = datetime.now(UTC) if start is None else datetime.fromtimestamp(start.timestamp(), UTC)
    return when.replace(microsecond=0)


def _run_name() -> str:
    clients = flow_run.parameters.get("clients") or []
    suffix = ""
    if clients:
        first = clients[0] if is_valid_id(clients[0]) else "invalid"
        suffix = f"-{first}" + (f"-and-{len(clients) - 1}" if len(clients) > 1 else "")
    return f"drill-{drill_stamp():%Y-%m-%dT%H%M}{suffix}"


# --------------------------------------------------------------------------- evidence


def _row(
    plan: CanaryPlan, scratch: str, ok: bool, restore_s: float | None, age_s: float | None,
    detail: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "client": plan.client_id,
        "mirror": f"{plan.mirror_id} ({plan.target.canary.mirror})",
        "snapshot": plan.snapshot_id or "-",
        "snapshot_age": format_seconds(age_s) if age_s is not None else "-",
        "restore_s": round(restore_s, 2) if restore_s is not None else "-",
        "scratch": scratch,
        "result": "ok" if ok else "FAILED",
        "detail": detail,
    }


def summary_markdown(
    stamp: datetime,
    rows: list[dict[str, Any]],
    problems: list[str],
    teardown: list[str],
    trend: str,
) -> str:
    """The run's summary: how many canaries passed, what failed, the teardown, the trend."""
    passed = sum(r["result"] == "ok" for r in rows)
    lines = [
        f"# DR drill {stamp:%Y-%m-%d %H:%M} UTC",
        "",
        f"**{passed} of {len(rows)} canar{'y' if len(rows) == 1 else 'ies'} passed** "
        "(restore from the mirror, bytes verified, app healthy on the scratch server; "
        "production routing untouched).",
        "",
    ]
    for row in rows:
        if row["result"] != "ok":
            lines.append(f"- **{row['client']}** from {row['mirror']}: {row['detail']}")
    lines += [f"- {p}" for p in problems]
    if teardown:
        lines += ["", "Teardown:", *(f"- {t}" for t in teardown)]
    return "\n".join([*lines, "", trend])


# --------------------------------------------------------------------------- the flow


@flow(name="dr-drill", flow_run_name=_run_name, timeout_seconds=4 * 3600)
def dr_drill(
    clients: list[str] | None = None,
    per_day: int | None = None,
    dc: str | None = None,
    fleet_file: Path | None = None,
) -> dict[str, Any] | State[Any]:
    """Restore today's canary clients to a scratch server, verify them, tear it down.

    Args:
        clients: rotate over these clients only (default: every client of the fleet).
        per_day: drill at least this many today (never fewer than a seventh of them,
            so each is drilled weekly).
        dc: put the scratch server in this data centre (default: one the canaries'
            residency allows, chosen per run).
        fleet_file: the fleet file; default ``$PPO_DR_FLEET`` or the lab's.
    """
    log = get_run_logger()
    path = Path(fleet_file or config.fleet_file())
    fleet = load_fleet_task(path)
    url = store_url(fleet)
    stamp = drill_stamp()
    run_id = str(flow_run.id) if flow_run.id else None
    where = [f"dc:{check_id(dc, 'data centre id')}"] if dc else []
    label_flow_run(f"drill-{stamp:%Y-%m-%dT%H%M}", tags=[f"fleet:{fleet.name}", "drill", *where])
    ensure_mirror_limits({DRILL_LIMIT: DRILL_SLOTS})
    skipped = "another DR drill is still running: this run is skipped"
    # A killed drill's slot, or one a Prefect restart orphaned, is given back first.
    if not slot_free(DRILL_LIMIT, url):
        log.warning(skipped)
        return Cancelled(message=skipped)
    # A probe period that began while the scratch server existed still lists it.
    grace = timedelta(seconds=probe_period_s(fleet.timing) + float(fleet.timing.outage_threshold))
    with contextlib.ExitStack() as slot:
        try:
            slot.enter_context(
                leased_slot(DRILL_LIMIT, timeout_s=DRILL_SLOT_WAIT_S, store_url=url, freed=True)
            )
        except TimeoutError:
            log.warning(skipped)
            return Cancelled(message=skipped)
        return _drill(path, url, fleet.name, clients, per_day, dc, stamp, run_id, grace)


def _drill(
    path: Path,
    url: str,
    fleet_name: str,
    clients: list[str] | None,
    per_day: int | None,
    dc: str | None,
    stamp: datetime,
    run_id: str | None,
    grace: timedelta,
) -> dict[str, Any] | State[Any]:
    log = get_run_logger()
    plan: DrillPlan = plan_drill(path, url, clients, per_day, stamp.date(), dc)
    scratch_ids = [scratch_server_id(stamp, n) for n in range(1, len(plan.groups) + 1)]
    swept = sweep_stale_scratch(path, url, scratch_ids, return_state=True)
    if not swept.is_completed():
        log.warning("stale scratch sweep failed (the drill goes on): %s", swept.message)
    label_flow_run(tags=[f"client:{c.client_id}" for c in plan.canaries])

    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    teardown: list[str] = []
    for (group, canaries), scratch_id in zip(plan.groups, scratch_ids, strict=True):
        _drill_group(
            path, url, group, canaries, scratch_id, run_id, grace, rows, problems, teardown
        )
    for refused in plan.unplaceable:
        problems.append(f"{refused.client_id} not drilled: {refused.reason}")
        open_drill_incident(
            url,
            DRILL_FAILED_KIND,
            failed_dedupe_key(refused.client_id),
            f"DR drill of {refused.client_id} impossible: {refused.reason}",
            {"client": refused.client_id},
            run_id,
        )

    trend = drill_trend(url)
    if rows:
        create_table_artifact(
            key="dr-drill-today",
            table=rows,
            description=f"DR drill {stamp:%Y-%m-%d %H:%M}: per canary mirror, snapshot age, "
            "restore time, result",
        )
    create_markdown_artifact(
        key="dr-drill-summary",
        markdown=summary_markdown(stamp, rows, problems, teardown, trend),
        description="DR drill: today's canaries, teardown, restore time and RPO trend by client",
    )
    failed = [r["client"] for r in rows if r["result"] != "ok"]
    summary: dict[str, Any] = {
        "fleet": fleet_name,
        "scratch": scratch_ids,
        "drilled": {r["client"]: r["result"] for r in rows},
        "failed": failed,
        "problems": problems,
        "teardown": teardown,
    }
    if failed or problems:
        what = ", ".join(failed) or "; ".join(problems)
        return failed_with(f"DR drill failed: {what}", summary)
    return summary


def _drill_group(
    path: Path,
    url: str,
    group: ScratchGroup,
    canaries: tuple[CanaryPlan, ...],
    scratch_id: str,
    run_id: str | None,
    grace: timedelta,
    rows: list[dict[str, Any]],
    problems: list[str],
    teardown: list[str],
) -> None:
    """Provision one scratch server, drill its canaries, and always tear it down."""
    log = get_run_logger()
    server: Server | None = None
    window = open_scratch_maintenance(url, scratch_id, f"DR drill scratch server {scratch_id}")
    try:
        made = provision_scratch(path, url, scratch_id, group.dc, return_state=True)
        if not made.is_completed():
            why = _why(made)
            problems.append(f"scratch server {scratch_id} in {group.dc} not provisioned: {why}")
            open_drill_incident(
                url,
                DRILL_FAILED_KIND,
                f"{DRILL_FAILED_KIND}:scratch-{group.dc}",
                f"DR drill could not get a scratch server in {group.dc}: {why}"[:2000],
                {"dc": group.dc, "scratch": scratch_id,
                 "canaries": [c.client_id for c in canaries]},
                run_id,
            )  # fmt: skip
            return
        server = made.result()
        assert isinstance(server, Server)
        for canary in canaries:
            rows.append(_drill_canary(path, url, canary, server, run_id))
    finally:
        done, failed = _tear_down(path, url, group.dc, scratch_id, server, canaries, run_id)
        teardown.extend(done)
        problems.extend(failed)
        end_scratch_maintenance(url, window, datetime.now(UTC) + grace)
        log.info("scratch %s: %s", scratch_id, "; ".join(done))


def _why(state: State[Any]) -> str:
    """What made a task fail, as ``ErrorClass: message`` (the state's message otherwise)."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return str(state.message or state.name)


def _drill_canary(
    path: Path, url: str, plan: CanaryPlan, server: Server, run_id: str | None
) -> dict[str, Any]:
    """Restore, verify and health-check one canary on the scratch server; record it."""
    started = datetime.now(UTC)
    clock = time.monotonic()
    detail = ""
    restore_s: float | None = None
    if plan.snapshot_id is None:
        detail = f"no verified snapshot of {plan.client_id} on {plan.mirror_id}"
    else:
        for name, step in (
            ("restore", restore_canary),
            ("verify", verify_canary),
            ("health", health_canary),
        ):
            state = step(path, plan, server, return_state=True)
            if not state.is_completed():
                detail = f"{name} failed: {_why(state)}"
                break
            if name == "restore":
                restore_s = float(state.result()["seconds"])
    ok = not detail
    finished = datetime.now(UTC)
    record_drill(
        url, plan, started, finished, ok,
        restore_s if restore_s is not None else time.monotonic() - clock,
        detail or f"restored to {server.id}, verified, healthy", run_id,
    )  # fmt: skip
    age = (started - plan.snapshot_at).total_seconds() if plan.snapshot_at else None
    if ok:
        resolve_drill_incident(url, plan.client_id, run_id)
    else:
        open_drill_incident(
            url,
            DRILL_FAILED_KIND,
            failed_dedupe_key(plan.client_id),
            f"DR drill of {plan.client_id} from {plan.mirror_id} failed: {detail}"[:2000],
            {
                "client": plan.client_id,
                "mirror": plan.mirror_id,
                "mirror_kind": plan.target.canary.mirror,
                "snapshot": plan.snapshot_id,
                "scratch": server.id,
            },
            run_id,
        )
    return _row(plan, server.id, ok, restore_s, age, detail)


def _tear_down(
    path: Path,
    url: str,
    dc: str,
    scratch_id: str,
    server: Server | None,
    canaries: tuple[CanaryPlan, ...],
    run_id: str | None,
) -> tuple[list[str], list[str]]:
    """Remove the restored data, then release the scratch server; each step is tried even
    if the one before failed. Returns (what was done, what failed); a failure opens an
    incident (and the next drill's sweep tries again)."""
    done: list[str] = []
    failed: list[str] = []
    if server is not None:
        cleaned = clean_scratch(
            path, url, server, [c.client_id for c in canaries], return_state=True
        )
        if cleaned.is_completed():
            done.append(f"restored data removed from {server.id}")
        else:
            failed.append(f"restored data NOT removed from {server.id}: {_why(cleaned)}")
    released = release(path, url, scratch_id, dc, return_state=True)
    if released.is_completed():
        done.append(f"{scratch_id} released")
    else:
        failed.append(f"{scratch_id} NOT released: {_why(released)}")
    if failed:
        open_drill_incident(
            url,
            TEARDOWN_FAILED_KIND,
            f"{TEARDOWN_FAILED_KIND}:{scratch_id}",
            f"DR drill teardown incomplete: {'; '.join(failed)}"[:2000],
            {"scratch": scratch_id, "dc": dc},
            run_id,
        )
    return done + failed, failed


__all__ = ["DRILL_LIMIT", "DRILL_SLOTS", "dr_drill", "summary_markdown"]
