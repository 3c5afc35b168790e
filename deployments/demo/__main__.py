"""``python -m deployments.demo`` (what ``make demo`` runs): the whole story, narrated."""

import sys

from deployments.demo.story import main
from deployments.demo.waiting import WaitTimedOut

try:
    sys.exit(main())
except WaitTimedOut as exc:
    sys.exit(f"demo: {exc}")
