"""Point-in-time mirrors of app servers' client data: repository, snapshot, verify,
restore, prune. The public API is :mod:`ppo_dr.mirror.api`; the format is in
docs/repository.md. Never imports prefect."""
