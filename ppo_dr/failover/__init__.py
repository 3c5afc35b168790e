"""Failover and planned migration: the pure planner (:mod:`.plan`) and its public names.

The planner decides (residency, capacity, which mirror to restore from); the steps
(:mod:`.steps`, run through the store's ledger by :mod:`.ledger`) and the Prefect flow
carry the plan out. The scheduled DR drill's decisions (canary
rotation, mirror alternation, scratch placement, trend) are in :mod:`.drill`.
"""

from ppo_dr.failover.checks import Verified, VerifyMismatch, app_health, verify_restored
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
from ppo_dr.failover.steps import (
    Restored,
    final_sync,
    freeze,
    restore_client,
    rollback,
    seed_new_home,
    switch,
    unfreeze,
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
    "Restored",
    "Scope",
    "SnapshotInfo",
    "Target",
    "Verified",
    "VerifyMismatch",
    "app_health",
    "final_sync",
    "freeze",
    "mirrors_for",
    "plan_failover",
    "restore_client",
    "rollback",
    "seed_new_home",
    "switch",
    "template_capacity",
    "unfreeze",
    "verify_restored",
]
