"""The ``ppo-dr`` command: one module per command group, the root in :mod:`cli.main`.

    main.py         the root command; adds every group and ``serve``
    support.py      the error contract (one line, exit 2), --fleet, where the store is
    inventory.py    ``inventory check``
    db.py           ``db upgrade``
    lab.py          ``lab up|status|break|heal|down``
    mirror.py       ``mirror run|ls|verify|restore|prune``
    incident.py     ``incident ls|show|ack|resolve|annotate|report``
    maintenance.py  ``maintenance start|end|ls``
    failover.py     ``failover plan|run|approve``
    serve.py        ``serve``

This is the top layer: it may import ``deployments``, ``flows``, ``tasks`` and
``ppo_dr``; nothing imports it.
"""
