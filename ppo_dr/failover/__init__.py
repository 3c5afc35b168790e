"""Failover and planned migration: the pure planner (:mod:`.plan`), the steps, the drill.

The planner decides (residency, capacity, which mirror to restore from); the steps
(:mod:`.steps`, run through the store's ledger by :mod:`.ledger`) and the Prefect flow
carry the plan out. The scheduled DR drill's decisions (canary
rotation, mirror alternation, scratch placement, trend) are in :mod:`.drill`.

Import from the modules themselves: this package imports nothing, so reading a plan
(:mod:`.plan`, :mod:`.model`) never drags in the steps and their SSH and mirror code.
"""
