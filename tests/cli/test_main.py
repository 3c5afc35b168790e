"""The root ``ppo-dr`` command: every group is there, and help stays quick because it
imports nothing heavy (Prefect, the store, SSH, the fleet model)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app
from tests.cli.entry import ROOT, entry_point
from tests.fresh_python import run_python

GROUPS = ["inventory", "db", "lab", "mirror", "incident", "maintenance", "failover", "serve"]
#: What only a running command may import: help must not pay for it.
HEAVY = [
    "prefect",
    "sqlalchemy",
    "paramiko",
    "asyncssh",
    "boto3",
    "pandas",
    "deployments",
    "flows",
    "tasks",
    "ppo_dr.store",
    "ppo_dr.inventory",
    "ppo_dr.fleet_access",
    "ppo_dr.failover",
    "ppo_dr.mirror",
    "ppo_dr.lab.supervisor",
    "matplotlib",
]
HELP_OF = [
    ["--help"],
    *([group, "--help"] for group in GROUPS),
    ["incident", "ack", "--help"],
    ["failover", "run", "--help"],
    ["failover", "approve", "--help"],
    ["mirror", "restore", "--help"],
    ["lab", "chaos", "--help"],
]


def test_the_declared_entry_point_is_the_root_command() -> None:
    assert entry_point() == ("cli.main", "main")


def test_help_lists_every_group() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for group in GROUPS:
        assert f" {group} " in result.output


def test_help_imports_nothing_heavy() -> None:
    code = f"""
import json, sys
from cli.main import app
heavy_dot = tuple(h + "." for h in {HEAVY!r})
for args in {HELP_OF!r}:
    try:
        app(args)
    except SystemExit as exc:
        assert exc.code == 0, (args, exc.code)
heavy = tuple({HEAVY!r})
print(json.dumps(sorted(m for m in sys.modules if m in heavy or m.startswith(heavy_dot))))
"""
    printed = run_python(code, cwd=ROOT, timeout=120)
    assert json.loads(printed.splitlines()[-1]) == []
