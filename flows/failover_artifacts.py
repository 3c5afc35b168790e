"""The failover's artifacts: the per-client table and the summary of a failover run,
and the per-client table of one target server's batch run (``fail-over-clients``)."""

from __future__ import annotations

from typing import Any

from ppo_dr.failover.plan import Plan
from ppo_dr.mirror.runbook import human_bytes
from tasks.failover import ClientOutcome


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def client_table(plan: Plan, outcomes: list[ClientOutcome]) -> list[dict[str, Any]]:
    """One row per client of the plan: from, to, mirror, snapshot, bytes, times, result."""
    by_client = {o.client_id: o for o in outcomes}
    rows: list[dict[str, Any]] = []
    for move in plan.moves:
        o = by_client.get(move.client_id)
        rows.append(
            {
                "client": move.client_id,
                "from": move.from_server,
                "to": move.to_server,
                "mirror": (o.source_mirror if o else None) or move.source_mirror or "-",
                "snapshot": (o.snapshot_id if o else None) or move.snapshot_id or "-",
                "snapshot_age": _age(o.rpo_seconds if o else None),
                "bytes": human_bytes(o.restored_bytes) if o and o.restored_bytes else "-",
                "restore_s": round(o.restore_seconds, 1) if o and o.restore_seconds else "-",
                "rto_s": round(o.rto_seconds, 1) if o and o.rto_seconds is not None else "-",
                "rpo_s": round(o.rpo_seconds, 1) if o and o.rpo_seconds is not None else "-",
                "result": (o.outcome if o else "not run")
                + (f": {o.detail}" if o and o.detail else ""),
            }
        )
    for refusal in plan.refusals:
        rows.append({"client": refusal.client_id, "result": f"REFUSED: {refusal.reason}"})
    return rows


def summary_markdown(
    plan: Plan,
    outcomes: list[ClientOutcome],
    released: list[str],
    mirrored: dict[str, str],
) -> str:
    """The run's summary: what moved where, RTO/RPO, what failed and was rolled back."""
    ok = [o for o in outcomes if o.outcome == "ok"]
    failed = [o for o in outcomes if o.outcome != "ok"]
    lines = [
        f"# {'Migration' if plan.mode == 'planned' else 'Failover'} {plan.plan_id}",
        "",
        f"Scope: {plan.scope.describe()}; target: {plan.target.describe()}; mode {plan.mode}.",
        f"**{len(ok)} of {len(plan.moves)} client(s) moved**"
        + (f", {len(plan.refusals)} refused" if plan.refusals else "")
        + (f", {len(failed)} failed and rolled back" if failed else "")
        + ".",
        "",
    ]
    if ok:
        lines.append(f"Longest RTO {max(o.rto_seconds or 0.0 for o in ok):.1f} s.")
    for o in failed:
        undone = f"; rolled back: {', '.join(o.rolled_back)}" if o.rolled_back else ""
        lines.append(f"- **{o.client_id}** failed: {o.detail}{undone}")
    for refusal in plan.refusals:
        lines.append(f"- **{refusal.client_id}** refused: {refusal.reason}")
    if mirrored:
        lines += ["", "Mirroring of the new homes:"]
        lines += [f"- {server}: {outcome}" for server, outcome in mirrored.items()]
    if released:
        lines += ["", f"Released unused servers: {', '.join(released)}"]
    return "\n".join(lines) + "\n"


def batch_table(outcomes: list[ClientOutcome]) -> list[dict[str, Any]]:
    """One row per client of the batch: from, to, RTO, RPO, result."""
    return [
        {
            "client": o.client_id,
            "from": o.from_server,
            "to": o.to_server,
            "rto_s": round(o.rto_seconds, 1) if o.rto_seconds is not None else "-",
            "rpo_s": round(o.rpo_seconds, 1) if o.rpo_seconds is not None else "-",
            "skipped": ", ".join(o.skipped_steps) or "-",
            "result": o.outcome + (f": {o.detail}" if o.detail else ""),
        }
        for o in outcomes
    ]


__all__ = ["batch_table", "client_table", "summary_markdown"]
