"""Runbooks as Prefect flows: one module per runbook; flows orchestrate, nothing else."""
