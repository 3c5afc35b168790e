"""The ``ppo-dr`` command: one module per command group, the root in :mod:`cli.main`.

    main.py         the root command; adds every group and the single commands
    support.py      what groups share: the error contract (one line, exit 2), --fleet,
                    --approve, where the store and the Prefect API are, id lists, plan files
    inventory.py    ``inventory check``
    db.py           ``db upgrade``
    lab.py          ``lab up|status|break|heal|down``, ``lab control-plane up|down``
    chaos.py        ``lab chaos`` (added to the lab group by lab.py)
    mirror.py       ``mirror run|ls|verify|restore|prune``
    incident.py     ``incident ls|show|ack|resolve|annotate|report``
    maintenance.py  ``maintenance start|end|ls``
    failover.py     ``failover plan|run|approve``
    rebalance.py    ``rebalance plan|run``
    server.py       ``server drain|return|ls`` (hardware upgrades)
    report.py       ``report fleet``
    evidence.py     ``evidence INCIDENT`` and ``evidence verify DIR``
    serve.py        ``serve``
    topology.py     ``worker`` and ``deploy`` (the distributed topology)

This is the top layer: it may import ``deployments``, ``flows``, ``tasks`` and
``ppo_dr``; nothing imports it.
"""
