"""Running the mirror-side faults: break a mirror (or an app server's clock), let the
hourly mirror run into it, read the catalogue and the incidents back, heal.

Unlike an outage nothing pages and nothing fails over: what must hold is about the
mirror runbook (:mod:`ppo_dr.lab.chaos.mirror_verdict` judges it). Per fault:

- ``mirror-dies``: wait until a run writes to the mirror (its repository lock), then
  ``kill -9`` it; keep it down until a stale alert opens (past the RPO); heal; wait
  until the next runs catch it up and the alerts resolve.
- ``mirror-disk-full``: the same with the mirror's data root on a tmpfs that fills
  part-way through the next run.
- ``host-key-change``: a new host key on the mirror; wait for the run's incident; note
  the key it offers and the one fleet.yaml pins; heal.
- ``latency``: the off-site mirror's link slow and lossy until a run has put a
  verified snapshot of every client on it.
- ``clock-skew``: the app server's clock 2 h ahead (read back over SSH) until a run
  has snapshotted every client to both mirrors.

The app server is drawn by the seed like the outage faults' target; the mirror (of
its two) too, except for ``latency``, which is the off-site one by definition.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import statistics
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import paramiko

from ppo_dr.errors import DRError
from ppo_dr.fleet_access import FleetAccess, client_ids_on, mirror_plan
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.chaos import records
from ppo_dr.lab.chaos.catalogue import FaultSpec
from ppo_dr.lab.chaos.mirror_verdict import Alert, MirrorObservation, SnapRow, judge_mirror
from ppo_dr.lab.chaos.sequence import pick_target
from ppo_dr.lab.chaos.verdict import ChaosResult
from ppo_dr.mirror.status import STALE_KIND, cron_interval, stale_after
from ppo_dr.store import Incident, Store
from ppo_dr.transport.dial import dial
from ppo_dr.waiting import poll

if TYPE_CHECKING:
    from ppo_dr.lab.chaos.runner import ChaosRun, _Fault


def _now() -> datetime:
    return datetime.now(UTC)


def host_key_fingerprint(public_key: str) -> str:
    """``SHA256:...`` of a ``<type> <base64>`` public key, as OpenSSH prints it."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def offered_fingerprint(host: str, port: int, timeout: float = 10.0) -> str | None:
    """The fingerprint of the host key *host:port* offers now (no login), or None.

    A server still restarting closes the connection before its banner; paramiko's
    transport thread logs that with a traceback, which says nothing here: silenced.
    """
    quiet = logging.getLogger("paramiko.transport")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        with dial(host, port, timeout) as sock:
            transport = paramiko.Transport(sock)
            try:
                transport.start_client(timeout=timeout)
                return str(transport.get_remote_server_key().fingerprint)
            finally:
                transport.close()
    except (OSError, EOFError, paramiko.SSHException):
        return None
    finally:
        quiet.setLevel(level)


def reported_skew(fleet: Fleet, server_id: str) -> float | None:
    """How far ahead of ours the clock *server_id* reports (its ``health`` command)."""
    try:
        with FleetAccess(fleet) as access:
            answer = access.remote(server_id).exec(["health"], timeout=15.0)
        said = json.loads(answer.stdout.decode("utf-8"))["time"]
        return (datetime.fromisoformat(said) - _now()).total_seconds()
    except (DRError, ValueError, KeyError, TypeError):
        return None


def _writing(access: FleetAccess, mirror: str, repo: str) -> bool:
    """True while a run holds the repository's lock on *mirror* (it is writing)."""
    try:
        return access.remote(mirror).stat(f"{repo}/locks/lock") is not None
    except DRError:
        return False


def run_gap(store: Store, clients: list[str], runs: int = 6) -> float:
    """The median time between the last *runs* snapshots of *clients* (0 if < 2)."""
    taken = sorted({s.taken_at for c in clients for s in store.snapshots(c)})[-runs:]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(taken)]
    return statistics.median(gaps) if gaps else 0.0


def _rows(store: Store, clients: list[str], since: datetime) -> tuple[SnapRow, ...]:
    return tuple(
        SnapRow(
            s.client_id,
            s.mirror_id,
            s.snapshot_id,
            s.taken_at,
            s.status,
            s.verified_at,
            s.new_bytes,
        )
        for c in clients
        for s in store.snapshots(c)
        if s.taken_at >= since
    )


def _verified_after(store: Store, clients: list[str], mirrors: list[str], after: datetime) -> bool:
    """Every client has a verified complete snapshot on each of *mirrors* taken after *after*."""
    rows = _rows(store, clients, after)
    return all(
        any(
            r.client == c and r.mirror == m and r.status == "complete" and r.verified_at
            for r in rows
        )
        for c in clients
        for m in mirrors
    )


def _stale_open(store: Store, clients: list[str]) -> list[Incident]:
    return [
        i
        for i in store.incidents(states=("open", "acknowledged"), kind=STALE_KIND)
        if i.scope.get("client") in clients
    ]


def exercise_mirror_fault(run: ChaosRun, spec: FaultSpec) -> ChaosResult:
    """Inject *spec* (a mirror-side fault), follow the mirror runbook, heal, judge."""
    assert spec.lab_fault is not None
    store = run.store
    model = load_fleet(run.fleet.fleet_file)
    placements = {p.client_id: p.server_id for p in store.placements()}
    apps = [s.id for s in model.servers if s.role in ("app", "spare")]
    app = pick_target(placements, apps, run.rng)
    plan = [(m.id, path) for m, path in mirror_plan(model, app, placements)]
    hit = 1 if spec.name == "latency" else run.rng.randrange(len(plan))
    (mirror, repo), (other, _) = plan[hit], plan[1 - hit]
    target = app if spec.name == "clock-skew" else mirror
    clients = client_ids_on(model, app, placements=placements)
    interval = cron_interval(model.timing.mirror_cron).total_seconds()
    threshold = stale_after(model.timing.mirror_cron).total_seconds()
    run._ready(clients)
    # A run to start and finish: four intervals, or three of the gaps the runs really
    # leave between them (a loaded machine starts them late), and three minutes more.
    wait = max(4 * interval, 3 * run_gap(store, clients)) + 180.0
    in_flight = None
    if spec.name == "mirror-dies":
        run.say(f"  waiting for a run writing to {mirror}")
        with FleetAccess(model) as access:
            in_flight = bool(poll(lambda: _writing(access, mirror, repo), wait, every=0.5))
    fault = run.begin(spec, target, placements, clients)
    run.say(f"{spec.name}: {spec.injected} on {target} (mirror of {app}, {len(clients)} clients)")
    pinned = offered = None
    skew = None
    try:
        run.fleet.break_(target, spec.lab_fault)
        if spec.name in ("mirror-dies", "mirror-disk-full"):
            opened_stale = lambda: [  # noqa: E731 - one condition, read where it is used
                i for i in _stale_open(store, clients) if i.opened_at >= fault.injected_at
            ]
            if not poll(opened_stale, threshold + wait):
                fault.problems.append(f"no stale alert within {threshold + wait:.0f} s")
        elif spec.name == "host-key-change":
            server = model.server(mirror)
            assert server.ssh is not None
            pinned = host_key_fingerprint(server.ssh.host_key)
            ssh = server.ssh
            offered = poll(lambda: offered_fingerprint(ssh.host, ssh.port), 60.0, every=1.0)
            opened = poll(
                lambda: [
                    i
                    for i in records.incidents_since(store, fault.injected_at)
                    if i.kind not in ("outage", STALE_KIND)
                ],
                wait,
            )
            if not opened:
                fault.problems.append(f"no incident for the new host key within {wait:.0f} s")
        elif spec.name == "latency":
            if not poll(lambda: _verified_after(store, clients, [mirror], fault.injected_at), wait):
                fault.problems.append(f"no run finished on the slow mirror within {wait:.0f} s")
        else:  # clock-skew
            skew = reported_skew(model, app)
            both = [mirror, other]
            if not poll(lambda: _verified_after(store, clients, both, fault.injected_at), wait):
                fault.problems.append(f"no run finished under the skewed clock within {wait:.0f} s")
    except DRError as exc:
        fault.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        run._heal(fault)
    if fault.healed_at is not None and spec.name in ("mirror-dies", "mirror-disk-full"):
        healed = fault.healed_at
        if not poll(lambda: _verified_after(store, clients, [mirror], healed), wait):
            fault.problems.append(f"{mirror} not caught up within {wait:.0f} s of the heal")
        poll(lambda: not _stale_open(store, clients), 2 * interval + 60.0)
    run._await_recovery(fault)
    obs = _observe(run, fault, model, app, mirror, other, interval, threshold)
    obs = replace(
        obs,
        mirror=None if spec.name == "clock-skew" else mirror,
        pinned_fingerprint=pinned,
        offered_fingerprint=offered,
        skew_seen_s=skew,
        in_flight=in_flight,
    )
    return judge_mirror(spec, obs)


def _observe(
    run: ChaosRun,
    fault: _Fault,
    model: Fleet,
    app: str,
    mirror: str,
    other: str,
    interval: float,
    threshold: float,
) -> MirrorObservation:
    store = run.store
    clients = fault.clients
    everything = records.incidents_since(store, fault.injected_at)
    # Judged: incidents about the fault's servers and clients. A lab on a loaded machine
    # opens others meanwhile (a drill's scratch server, another app's stale client):
    # reported, not judged.
    names = {app, mirror, fault.target, *clients}
    opened = [i for i in everything if i.dedupe_key.rsplit(":", 1)[-1] in names]
    ids = [i.id for i in opened]
    start = fault.injected_at - timedelta(seconds=interval)
    rows = _rows(store, clients, start)
    before = tuple(
        r
        for r in _rows(store, clients, start - 10 * timedelta(seconds=interval))
        if r.taken_at < start and r.mirror == mirror
    )
    try:
        lost: dict[str, tuple[tuple[int, datetime], ...]] | None = records.new_losses(
            model, run.fleet.acks_file, clients, fault.lost_before, run.fleet
        )
    except DRError as exc:
        fault.problems.append(str(exc))
        lost = None
    damaged = records.verify_repositories(model, {app}, fault.placements)
    fault.problems += damaged
    after = records.complete_snapshot_ids(store, clients)
    stale_left = tuple(i.id for i in _stale_open(store, clients))
    obs = MirrorObservation(
        fault=fault.spec.name,
        target=fault.target,
        app_server=app,
        mirror=mirror,
        other=other,
        clients=tuple(clients),
        injected_at=fault.injected_at,
        interval_s=interval,
        threshold_s=threshold,
        healed_at=fault.healed_at,
        healthy_at=fault.healthy_at,
        ended_at=_now(),
        rows=rows,
        rows_before=before,
        outages=tuple((i.id, i.opened_at) for i in opened if i.kind == "outage"),
        alerts=tuple(
            Alert(i.id, i.kind, i.opened_at, i.title, i.paging, i.title + " " + json.dumps(i.scope))
            for i in opened
            if i.kind != "outage"
        ),
        stale_open_at_end=stale_left,
        elsewhere=tuple(f"#{i.id} {i.title}" for i in everything if i not in opened),
        pages=tuple(records.pages_sent(store, ids)),
        notice_keys=tuple(records.outbox_keys(run.fleet.outbox(), ids)),
        lost_seqs=lost,
        snapshots_intact=fault.before <= after and not damaged,
        problems=tuple(fault.problems),
    )
    for incident in everything:  # the on-call closes them: the next fault starts quiet
        store.resolve(incident.id, by="chaos", note=f"chaos run: {fault.spec.name} healed")
    return obs
