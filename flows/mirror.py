"""The hourly mirror runbook: every app server's clients to its on-site and off-site mirrors.

**mirror_server(server_id, clients=None)** — one app server, as an operator would do it:

1. read the fleet and the store's placements; check the server and client ids (one
   task, ``mirror-scope``: a task run costs the engine more than these reads); the
   run is named
   ``mirror-<server>-<start>-<short id>`` (unique: :func:`tasks.runs.run_stamp`) from
   its start and tagged ``dc:``, ``server:``, ``client:``;
2. take the server's slot (``mirror-server-<id>``, 1 slot): if another run of this
   server holds it, this run is **skipped** (Cancelled, with the reason), not queued;
   then a slot of its DC (``mirror-dc-<dc>``, 2 slots), which it waits for; both
   on a 60 s lease renewed every 10 s (:mod:`tasks.slots`), so a SIGKILLed run's
   slots free within about a minute and the next run is not skipped. In the
   distributed topology the DC pool's ``mirror`` work queue already holds the
   scheduled runs to two per DC *before* a process starts
   (:data:`flows.mirror_schedule.MIRROR_QUEUE`); the DC slot stays for the runs no
   queue sees: the failover's re-mirror subflow (on ``control``), ``mirror_fleet``'s
   subflows (``ppo-dr serve``), and a run started by hand;
3. snapshot every client to every reachable mirror (the pre-snapshot hook runs on the
   app server first); a mirror that cannot be reached is recorded missing and gets
   the data on the next run;
4. record each (client, mirror) snapshot in the store's catalogue and quick-verify
   it (one task, one retry unit): what the run wrote every run, the whole repository
   once a day per machine (docs/repository.md, "Verify"); verified snapshots count
   for the RPO;
5. RPO of each client on each mirror; a client whose newest verified snapshot is older
   than twice the mirror interval opens a (non-paging) ``mirror-stale`` incident, and
   a fresh one resolves the client's open one (one task);
6. artifacts: a table per client and a Markdown summary; a heartbeat event
   (``ppo-dr.mirror.<server>``) on every run, failed or skipped ones included.

**mirror_fleet()** — every app server, mapped (one ``mirror_server`` flow run per
server, run concurrently within the per-server and per-DC limits); emits the
``ppo-dr.mirror.fleet`` heartbeat.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, State

from flows.outcome import failed_with
from ppo_dr import config
from ppo_dr.errors import HostKeyError, PermanentError
from ppo_dr.fleet_access import FleetAccess, IdleSpareError, mirror_plan
from ppo_dr.ids import check_id, is_valid_id
from ppo_dr.inventory import Fleet
from ppo_dr.mirror.runbook import (
    ServerSnapshot,
    VerifyOutcome,
    client_rows,
    human_bytes,
    mirrored_servers,
    store_url,
    total_sent,
)
from ppo_dr.mirror.status import ClientStatus, format_age, rpo_markdown, stale_after
from tasks import label_flow_run, secret_from_block
from tasks.inventory import load_fleet_task
from tasks.mirror import (
    assess_rpo,
    create_missing_limits,
    current_placements,
    emit_heartbeat,
    mirror_scope,
    open_host_key_alert,
    operator_key_text,
    record_and_verify,
    slot_free,
    take_snapshots,
)
from tasks.runs import run_stamp
from tasks.slots import leased_slot

#: Slots of each app server's limit: one mirror run per server at a time.
MIRROR_SERVER_SLOTS = 1
#: Slots of each DC's limit: at most this many servers of one DC mirrored at once.
MIRROR_DC_SLOTS = 2
#: How long a run tries for its server's free-looking slot before it gives up as
#: "skipped" (a slot seen taken skips at once; acquisition backs off under load).
SERVER_SLOT_WAIT_S = 60.0
#: How long a run waits for a slot of its DC before it fails.
DC_SLOT_WAIT_S = 3 * 3600.0


def server_limit(server_id: str) -> str:
    """``mirror-server-<id>``: the global concurrency limit of one app server."""
    return f"mirror-server-{check_id(server_id, 'server id')}"


def dc_limit(dc_id: str) -> str:
    """``mirror-dc-<id>``: the global concurrency limit of one data centre."""
    return f"mirror-dc-{check_id(dc_id, 'data centre id')}"


def mirror_limits(fleet: Fleet, server_ids: list[str] | None = None) -> dict[str, int]:
    """The concurrency limits (name -> slots) the mirror of *fleet* (or some servers) uses:
    every app server's, or those of *server_ids* (a spare turned home included)."""
    apps = [
        s
        for s in fleet.servers
        if (s.role == "app" and server_ids is None) or (server_ids and s.id in server_ids)
    ]
    limits = {server_limit(s.id): MIRROR_SERVER_SLOTS for s in apps}
    limits.update({dc_limit(s.dc): MIRROR_DC_SLOTS for s in apps})
    return limits


def _server_run_name() -> str:
    """``mirror-<server>-<start>-<short id>``: the run's one name (unique, see run_stamp)."""
    server = flow_run.parameters.get("server_id")
    return f"mirror-{server if is_valid_id(server) else 'invalid-server'}-{run_stamp()}"


def _fleet_run_name() -> str:
    return f"mirror-fleet-{run_stamp()}"


# --------------------------------------------------------------------------- artifacts


def summary_markdown(
    fleet: Fleet,
    server_id: str,
    run: ServerSnapshot | None,
    checks: list[VerifyOutcome],
    statuses: list[ClientStatus],
    failure: str | None,
    placements: dict[str, str] | None = None,
) -> str:
    """The run's Markdown summary: what moved, what is missing, RPO per client and mirror."""
    mirrors = [m.id for m, _ in mirror_plan(fleet, server_id, placements)]
    threshold = stale_after(fleet.timing.mirror_cron)
    lines = [f"# Mirror of {server_id}", ""]
    if run is not None:
        sent = total_sent(run)
        lines += [
            f"Snapshot `{run.taken_at:%Y-%m-%dT%H:%M:%SZ}` of {len(run.clients)} client(s) "
            f"in {run.duration_s:.1f} s.",
            "",
            *(f"- to **{m}**: {human_bytes(b)} sent" for m, b in sent.items()),
        ]
        missing = run.missing
        if missing:
            lines += ["", f"**Missing** ({len(missing)}; the next run fills them):"]
            lines += [f"- {c} on {m}: {run.outcome(c, m)[1]}" for c, m in missing]
    if failure:
        lines += ["", f"**The snapshot failed**: {failure}"]
    if checks:
        lines += ["", "Verification:"]
        for check in checks:
            state = (
                "not done: " + check.error if check.error else ("ok" if check.ok else "PROBLEMS")
            )
            lines.append(f"- {check.mirror_id}: {state} ({check.marked} snapshot(s) marked)")
            lines += [f"  - {p}" for p in check.problems[:20]]
    stale = [s.client_id for s in statuses if s.stale]
    lines += [
        "",
        f"## RPO (age of the newest verified snapshot; stale beyond {format_age(threshold)})",
        "",
        rpo_markdown(statuses, mirrors),
    ]
    if stale:
        lines += ["", f"**Stale clients** (mirror-stale incident): {', '.join(stale)}"]
    return "\n".join(lines) + "\n"


def _publish(server_id: str, run: ServerSnapshot | None, summary: str) -> None:
    """The run's artifacts: the per-client table (if it snapshotted) and *summary*."""
    if run is not None:
        create_table_artifact(
            key=f"mirror-clients-{server_id}",
            table=client_rows(run),
            description=f"{server_id}: per client files, bytes read and sent, chunks, time",
        )
    create_markdown_artifact(
        key=f"mirror-summary-{server_id}",
        markdown=summary,
        description=f"Mirror run of {server_id}: what moved, RPO per client on each mirror",
    )


# --------------------------------------------------------------------------- flows


@flow(name="mirror-server", flow_run_name=_server_run_name, timeout_seconds=6 * 3600)
def mirror_server(
    server_id: str,
    clients: list[str] | None = None,
    fleet_file: Path | None = None,
    hook: bool = True,
) -> dict[str, Any] | State[Any]:
    """Mirror one app server's clients (all, or *clients*) to its on-site and off-site mirrors.

    Args:
        server_id: the app server, e.g. ``app-jhb1-1``.
        clients: only these of its clients (default: all of them).
        fleet_file: the fleet file; default ``$PPO_DR_FLEET`` or the lab's.
        hook: run ``snapshot-hook <client>`` on the app server before each client.
    """
    log = get_run_logger()
    sid = check_id(server_id, "server id")
    try:
        scope = mirror_scope(fleet_file or config.fleet_file(), sid, clients)
    except IdleSpareError as exc:  # its schedule waits for a failover to give it clients
        log.info("%s: nothing to mirror", exc)
        return Completed(message=f"spare {sid} holds no client: nothing to mirror")
    fleet, url, placed, app, chosen = (
        scope.fleet, scope.store_url, scope.placements, scope.app, scope.clients
    )  # fmt: skip
    label_flow_run(
        tags=[f"fleet:{fleet.name}", f"dc:{app.dc}", f"server:{sid}"]
        + [f"client:{c}" for c in chosen],
    )
    run_id = str(flow_run.id) if flow_run.id else None
    if created := create_missing_limits(mirror_limits(fleet, [sid])):
        log.info("created concurrency limits: %s", ", ".join(created))
    heartbeat: dict[str, Any] = {"server": sid, "dc": app.dc, "clients": len(chosen)}

    run: ServerSnapshot | None = None
    checks: list[VerifyOutcome] = []
    failure: str | None = None
    with contextlib.ExitStack() as slots:
        skipped = f"another mirror run of {sid} is still running: this run is skipped"
        try:
            # A killed run's slot is given back as soon as Prefect calls it ended
            # (tasks.slots: the lease recorded in the store), else it frees a short
            # lease later; a slot a restarted Prefect server forgot the lease of is
            # given back once seen longer than a lease (tasks.slots.ORPHAN_SEEN_S). A
            # lost lease does not cut a snapshot short: the repository lock still keeps
            # a second writer out.
            if not slot_free(server_limit(sid), url):
                raise TimeoutError(skipped)
            slots.enter_context(
                leased_slot(
                    server_limit(sid), timeout_s=SERVER_SLOT_WAIT_S, store_url=url, freed=True
                )
            )
        except TimeoutError:
            log.warning(skipped)
            emit_heartbeat(sid, {**heartbeat, "outcome": "skipped"})
            return Cancelled(message=skipped)
        slots.enter_context(leased_slot(dc_limit(app.dc), timeout_s=DC_SLOT_WAIT_S, store_url=url))
        try:
            with FleetAccess(
                fleet, key_text=operator_key_text(fleet), secret_resolver=secret_from_block
            ) as access:
                run = take_snapshots(access, sid, chosen, hook, placed)
                checks = record_and_verify(access, url, run, run_id)
        except HostKeyError as exc:  # nothing sent anywhere; someone must look, not be paged
            failure = f"{type(exc).__name__}: {exc}"
            log.error("mirror of %s refused: %s", sid, failure)
            open_host_key_alert(url, exc, sid, app.dc, run_id)
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            log.error("mirror of %s failed: %s", sid, failure)

    statuses = assess_rpo(url, fleet, sid, app.dc, run_id, placements=placed)
    _publish(sid, run, summary_markdown(fleet, sid, run, checks, statuses, failure, placed))
    stale = [s.client_id for s in statuses if s.stale]
    missing = run.missing if run else [(c, "*") for c in chosen]
    summary: dict[str, Any] = {
        **heartbeat,
        "outcome": "failed" if failure else ("partial" if missing else "ok"),
        "snapshot_at": run.taken_at.isoformat() if run else None,
        "sent": total_sent(run) if run else {},
        "missing": [f"{c}@{m}" for c, m in missing],
        "stale": stale,
        "duration_s": round(run.duration_s, 2) if run else None,
    }
    emit_heartbeat(sid, summary)
    if failure:
        return failed_with(f"mirror of {sid} failed: {failure}", summary)
    return summary


@task(name="mirror-server-run", task_run_name="mirror-{server_id}", cache_policy=NO_CACHE)
def mirror_server_run(server_id: str, fleet_file: Path | None, hook: bool) -> dict[str, Any]:
    """One ``mirror_server`` flow run, so ``mirror_fleet`` can map it over servers."""
    state = mirror_server(server_id, fleet_file=fleet_file, hook=hook, return_state=True)
    if state.is_cancelled():
        return {"server": server_id, "outcome": "skipped", "message": state.message}
    if not state.is_completed():
        fleet = load_fleet_task.fn(fleet_file or config.fleet_file())
        if server_id not in {s.id for s in fleet.servers}:
            # Listed when the fleet's run began, released since (a drill's scratch
            # server, seen in the chaos matrix): nothing of it is left to mirror.
            gone = f"{server_id} left the fleet during this run: {state.message}"
            return {"server": server_id, "outcome": "skipped", "message": gone}
        raise PermanentError(f"mirror of {server_id}: {state.message or state.name}")
    result = state.result()
    assert isinstance(result, dict)
    return result


@flow(name="mirror-fleet", flow_run_name=_fleet_run_name, timeout_seconds=8 * 3600)
def mirror_fleet(fleet_file: Path | None = None, hook: bool = True) -> dict[str, Any]:
    """Mirror every app server of the fleet, servers in parallel within the limits.

    Args:
        fleet_file: the fleet file; default ``$PPO_DR_FLEET`` or the lab's.
        hook: run the pre-snapshot hook on the app servers.
    """
    log = get_run_logger()
    path = fleet_file or config.fleet_file()
    fleet = load_fleet_task(path)
    label_flow_run(tags=[f"fleet:{fleet.name}"])
    servers = mirrored_servers(fleet, current_placements(store_url(fleet)))
    if created := create_missing_limits(mirror_limits(fleet, servers)):
        log.info("created concurrency limits: %s", ", ".join(created))
    futures = mirror_server_run.map(servers, unmapped(path), unmapped(hook))
    outcomes: dict[str, dict[str, Any]] = {}
    for server, future in zip(servers, futures, strict=True):
        future.wait()
        state = future.state
        if state.is_completed():
            outcomes[server] = future.result()
        else:
            outcomes[server] = {"server": server, "outcome": "failed", "message": state.message}
    failed = [s for s, o in outcomes.items() if o.get("outcome") == "failed"]
    lines = [f"# Mirror of fleet {fleet.name}", "", "| server | outcome | sent | missing | stale |"]
    lines.append("|---|---|---|---|---|")
    for server, o in outcomes.items():
        sent = ", ".join(f"{m}: {human_bytes(b)}" for m, b in (o.get("sent") or {}).items())
        lines.append(
            f"| {server} | {o.get('outcome')} | {sent or '-'} | "
            f"{len(o.get('missing') or [])} | {', '.join(o.get('stale') or []) or '-'} |"
        )
    create_markdown_artifact(
        key=f"mirror-fleet-{fleet.name}",
        markdown="\n".join(lines) + "\n",
        description=f"Mirror of every app server of {fleet.name}",
    )
    emit_heartbeat(
        "fleet",
        {"fleet": fleet.name, "servers": len(servers), "failed": failed},
    )
    if failed:
        log.error("mirror failed on: %s", ", ".join(failed))
        raise PermanentError(f"mirror failed on {len(failed)} server(s): {', '.join(failed)}")
    return outcomes
