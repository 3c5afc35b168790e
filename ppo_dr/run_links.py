"""Links to a flow run in Prefect's UI, so every answer of a report can be checked."""

from __future__ import annotations


def ui_base(api_url: str | None) -> str | None:
    """The UI's base URL for an API URL (``http://h:4200/api`` -> ``http://h:4200``)."""
    if not api_url:
        return None
    base = api_url.rstrip("/")
    return base.removesuffix("/api")


def flow_run_link(ui_url: str | None, flow_run_id: str | None) -> str | None:
    """The UI page of *flow_run_id* (None without a run, or without a UI to link to)."""
    if not flow_run_id or not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"
