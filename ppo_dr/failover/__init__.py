"""Failover and planned migration: the pure planner (:mod:`.plan`) and its public names.

The planner decides (residency, capacity, which mirror to restore from); the steps and
the Prefect flow carry the plan out.
"""

from ppo_dr.failover.plan import (
    MODES,
    ClientMove,
    FleetState,
    Mode,
    Plan,
    PlanError,
    ProvisionRequest,
    Refusal,
    Scope,
    SnapshotInfo,
    Target,
    mirrors_for,
    plan_failover,
    template_capacity,
)

__all__ = [
    "MODES",
    "ClientMove",
    "FleetState",
    "Mode",
    "Plan",
    "PlanError",
    "ProvisionRequest",
    "Refusal",
    "Scope",
    "SnapshotInfo",
    "Target",
    "mirrors_for",
    "plan_failover",
    "template_capacity",
]
