"""Benchmark: the probe at scale, watched through the HA server it reports to.

Run it beside a distributed lab at scale (as root)::

    ppo-dr lab up --dir /srv/lab50 --topology distributed --scale 50x20 --size 100 --fast
    PYTHONPATH=. .venv/bin/python -m bench.scale_probe --lab /srv/lab50 [--minutes 10]

The lab's own ``probe-fleet`` deployment (on a ``control`` worker) loops over every
app server and every client's health page through the front door, and after each
cycle emits ``ppo-dr.probe.heartbeat`` (payload: ``cycle_s``, ``targets``) to the
Prefect API behind HAProxy. This bench only reads, through that same address, every
``--poll`` seconds for ``--minutes``:

- the cycle times the probe reports (target: <= 2 s per cycle over 1,000 clients and
  50 servers);
- the event backlog: how far the newest heartbeat visible in the API lags behind now.
  A persister that keeps up shows a lag around one probe interval plus the ~2 s it
  takes an event to become readable; a backlog shows as a lag that grows poll after
  poll (target: none after 10 minutes).

It prints medians with min-max spread and the 1-minute load average at each poll (the
machine is shared: quote figures with the load). Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEARTBEAT_EVENT = "ppo-dr.probe.heartbeat"
PAGE = 50  # the API refuses more per page


def spread(values: list[float]) -> str:
    """``median (min-max), n=N`` of *values*."""
    if not values:
        return "no samples"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}), n={len(values)}"


def api_url(lab: Path) -> str:
    """HAProxy's address, as the host sees it, from the lab's control plane record."""
    record = json.loads((lab / "control-plane" / "controlplane.json").read_text())
    return f"http://127.0.0.1:{record['proxy_port']}/api"


def heartbeats_since(since: datetime) -> list[tuple[datetime, dict[str, object]]]:
    """Every heartbeat the API holds since *since*: (occurred, payload), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    found: list[tuple[datetime, dict[str, object]]] = []
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=[HEARTBEAT_EVENT]),
                occurred=EventOccurredFilter(since=since),
            ),
            limit=PAGE,
        )
        while page is not None:
            found += [(e.occurred, dict(e.payload)) for e in page.events]
            page = client.read_events_page(str(page.next_page)) if page.next_page else None
    return sorted(found, key=lambda item: item[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", type=Path, required=True, help="the distributed lab's directory")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to watch")
    parser.add_argument("--poll", type=float, default=30.0, help="seconds between reads")
    args = parser.parse_args()
    os.environ["PREFECT_API_URL"] = api_url(args.lab.resolve())

    start = datetime.now(UTC)
    stop_at = time.monotonic() + args.minutes * 60
    lags: list[float] = []
    loads: list[float] = []
    api_errors = 0
    seen: list[tuple[datetime, dict[str, object]]] = []
    print(f"watching {HEARTBEAT_EVENT} at {os.environ['PREFECT_API_URL']} for {args.minutes} min")
    while time.monotonic() < stop_at:
        time.sleep(args.poll)
        now = datetime.now(UTC)
        load = os.getloadavg()[0]
        loads.append(load)
        try:
            seen = heartbeats_since(start - timedelta(seconds=5))
        except Exception as exc:  # an overloaded API is a finding, not the end of the bench
            api_errors += 1
            print(f"{now:%H:%M:%S} the API failed to answer: {str(exc)[:120]} (load {load:.1f})")
            continue
        if not seen:
            print(f"{now:%H:%M:%S} no heartbeat yet (load {load:.1f})")
            continue
        lag = (now - seen[-1][0]).total_seconds()
        lags.append(lag)
        newest = seen[-1][1]
        print(
            f"{now:%H:%M:%S} heartbeats {len(seen)}, newest {lag:.1f} s old, last cycle "
            f"{newest.get('cycle_s')} s over {newest.get('targets')} targets (load {load:.1f})"
        )
    cycles = [float(str(p["cycle_s"])) for _, p in seen if "cycle_s" in p]
    targets = sorted({int(str(p["targets"])) for _, p in seen if "targets" in p})
    print()
    print(f"targets per cycle: {targets or 'none seen'}")
    print(f"cycle time, s:                 {spread(cycles)} (target <= 2 s)")
    print(f"newest heartbeat's age, s:     {spread(lags)}")
    if len(lags) >= 4:
        half = len(lags) // 2
        print(
            f"  first half {statistics.median(lags[:half]):.1f} s, "
            f"second half {statistics.median(lags[half:]):.1f} s (growing = a backlog)"
        )
    print(f"polls the API failed:          {api_errors} of {len(loads)}")
    print(f"load average (1 min):          {spread(loads)}")
    return 0 if cycles else 1


if __name__ == "__main__":
    sys.exit(main())
