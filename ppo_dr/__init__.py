"""ppo-dr: disaster-recovery runbooks for a multi-tenant SaaS fleet.

This package is the domain: inventory, state store, transport, mirror format, the
pure decisions (outage state machine, escalation, failover planner) and the lab.
It never imports Prefect; `tasks/`, `flows/` and `deployments/` wrap it.
"""

__version__ = "0.1.0"
