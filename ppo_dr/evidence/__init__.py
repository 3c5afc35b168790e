"""Incident evidence bundles: everything an incident touched, exportable and checkable.

``ppo-dr evidence INCIDENT -o DIR`` writes, from the store (:mod:`.store_records`) and
the Prefect run history (read by ``deployments.run_history`` and handed in), one
JSON-lines file per kind of record, an ``index.html`` linking them, the incident
report, and ``MANIFEST.sha256`` (:mod:`.manifest`); the bundle hash (the manifest's
sha256) is recorded on the incident's timeline. ``ppo-dr evidence verify DIR`` reports
every file added, removed or edited since. See docs/evidence.md.
"""

from __future__ import annotations

from ppo_dr.evidence.export import (
    BUNDLE_ENTRY,
    ExportResult,
    RunsRead,
    export_bundle,
    recorded_hashes,
)
from ppo_dr.evidence.manifest import MANIFEST, BundleCheck, check_bundle

__all__ = [
    "BUNDLE_ENTRY",
    "MANIFEST",
    "BundleCheck",
    "ExportResult",
    "RunsRead",
    "check_bundle",
    "export_bundle",
    "recorded_hashes",
]
