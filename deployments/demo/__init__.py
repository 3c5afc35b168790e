"""`make demo`: the embedded lab fleet, walked through step by step, narrated.

What it shows today (the foundation): a fleet of 3 data centres in 2 countries comes up
on 127.0.0.1; its inventory passes the checks; a client is served through the front
door while the workload writes to every client; an app server loses power and its
clients go dark; it is healed and they come back; every app server is mirrored to
its on-site and off-site mirrors, the workload writes, an incremental mirror sends
only the changes (per-client table: bytes, time, RPO on each mirror) and one
snapshot is verified by re-reading its data.

Then the outage story, the runbooks for real (:data:`OUTAGE_STEPS`, one function per
step, each naming the Prefect UI page to open): ``ppo-dr serve`` starts a local Prefect
server and serves every deployment; in this story Cape Town's servers are full, so a
failover there needs a new server; an app server in Johannesburg loses power; the probe
declares ONE incident naming its clients; the escalation pages level 1 (SMS and e-mail,
from the outbox) and starts the failover runbook (else the demo starts it, under the
same idempotency key), escalates to level 2, posts on X and e-mails the clients'
contacts; the failover plans and pauses; the on-call approves with
``ppo-dr failover approve``; the run provisions a new app server in Cape Town through
the lab provider, restores every client from its freshest verified snapshot, verifies,
switches and re-mirrors; each client answers through the front door from its new home
(``X-PPO-Server`` before and after); an incremental mirror of the new home follows the
placements. The dead server never comes back by itself, so the probe cannot call the
incident recovered: the on-call puts the server under maintenance and resolves the
incident; the escalation sends the resolved notices; the report is written (RTO,
snapshot age and acknowledged writes lost per client, printed). Then the server is
repaired and the clients go home by a planned migration, checked against the
workload log for zero lost acknowledged writes, and the stop-gap server is released.
Finally ``serve`` (and the server it started) and the lab are stopped, with no process
left behind.
"""
