"""The lab's measure of a failover: acknowledged writes missing on a client's new home.

The lab's workload logs every write a client's server acknowledged
(``<lab>/workload/acks.jsonl``); after a failover, a write acknowledged by the old home
and missing from the journal on the new home is lost. This belongs to the lab, not to
the runbook: the lab's callers (the demo, the tests, the benchmark) count it after a
failover run with :func:`record_lost_writes`, which puts the counts on the plan's
results in the store, where the incident report reads them.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable
from functools import partial
from pathlib import Path

from ppo_dr.errors import PermanentError, RemotePathError
from ppo_dr.fleet_access import FleetAccess, client_path
from ppo_dr.ids import check_id
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.restricted_exec import JOURNAL
from ppo_dr.lab.workload import lost_writes as missing_from
from ppo_dr.lab.workload import read_acks
from ppo_dr.mirror.runbook import store_url
from ppo_dr.store import Store


def workload_acks(fleet: Fleet, fleet_file: Path) -> Path | None:
    """The lab's log of acknowledged writes, if *fleet* is a lab with a workload running.

    A fleet whose data centres are all the lab provider's is a lab; the lab lives
    beside its fleet file (as :class:`~ppo_dr.providers.lab.LabProvider` has it).
    """
    if not fleet.data_centres or any(dc.provider != "lab" for dc in fleet.data_centres):
        return None
    acks = Path(fleet_file).resolve().parent / "workload" / "acks.jsonl"
    return acks if acks.exists() else None


def lost_on_new_home(
    access: FleetAccess, client_id: str, new_home: str, acks_path: Path
) -> list[int]:
    """Acknowledged writes of *client_id* missing from its journal on *new_home*.

    Writes the new home acknowledged itself cannot be lost there; leaving them out also
    keeps an ack recorded after the journal was read from counting as lost.
    """
    client = check_id(client_id, "client id")
    remote = access.remote(new_home)
    journal = posixpath.join(client_path(access.fleet, client, server_id=new_home), JOURNAL)
    with contextlib.suppress(RemotePathError):
        lines = remote.read_bytes(journal).splitlines()
        acked_there = {
            a["seq"]
            for a in read_acks(acks_path)
            if a.get("client") == client and a.get("server") == new_home
        }
        return [seq for seq in missing_from(acks_path, client, lines) if seq not in acked_there]
    raise PermanentError(f"{client}: no journal at {journal} on {new_home}")


def record_lost_writes(
    fleet_file: Path,
    plan_id: str,
    within: Callable[[Callable[[], list[int]]], list[int]] | None = None,
) -> dict[str, int]:
    """Count, for each client failover *plan_id* moved, the acknowledged writes lost on
    its new home (the lab's workload log beside *fleet_file*), and record each count on
    the plan's result for that client; the counts by client ({} without a workload).

    *within* runs each read of a new home where the servers answer (inside the lab's
    network namespaces); the store is still reached from here.
    """

    def here(work: Callable[[], list[int]]) -> list[int]:
        return work()

    reach = within or here
    fleet = load_fleet(fleet_file)
    acks = workload_acks(fleet, fleet_file)
    counts: dict[str, int] = {}
    if acks is None:
        return counts
    with Store.open(store_url(fleet)) as store, FleetAccess(fleet) as access:
        for r in store.failover_results(plan_id):
            if r.outcome != "ok":
                continue
            lost = reach(partial(lost_on_new_home, access, r.client_id, r.to_server, acks))
            counts[r.client_id] = len(lost)
            store.record_failover_result(
                plan_id,
                r.client_id,
                from_server=r.from_server,
                to_server=r.to_server,
                outcome=r.outcome,
                lost_writes=counts[r.client_id],
                detail=r.detail,
                flow_run_id=r.flow_run_id,
            )
    return counts
