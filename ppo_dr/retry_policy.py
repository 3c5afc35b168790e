"""The back-off of every task that does I/O, kept where the domain can read it.

The Prefect tasks take these as their retry options (``tasks.IO_RETRIES``); the chaos
suite's ``channel-errors`` verdict derives from the same numbers how soon a retry may
come and how many attempts one notice gets, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Final

#: Back-off between attempts of a task that does I/O, in seconds (three retries).
RETRY_DELAYS: Final[list[float]] = [1, 4, 15]
#: Back-off of a task that cannot go on without the Prefect API (it starts a subflow
#: run), when the API does not answer: a server restart takes tens of seconds (the
#: chaos suite's ``prefect-server-kill``: 10 s down, then its start), so about a minute
#: and a half in all, where :data:`RETRY_DELAYS` gives 20 s.
API_RETRY_DELAYS: Final[list[float]] = [2, 5, 10, 20, 30, 30]
#: Each delay varies by up to this factor, so retries from many runs do not align.
RETRY_JITTER: Final = 0.5
#: Attempts of one task run: its first and one per delay.
MAX_ATTEMPTS: Final = len(RETRY_DELAYS) + 1
#: The shortest wait between two attempts: the first delay less its whole jitter.
MIN_BACKOFF_S: Final = RETRY_DELAYS[0] * (1 - RETRY_JITTER)
