"""Hostile fleet files through ``ppo-dr inventory check``: each is one clear violation
naming the file, the path in it and the rule, in well under a second, never a crash."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ppo_dr.inventory.load import MAX_FLEET_BYTES
from tests.cli.entry import ROOT

EXAMPLE = (ROOT / "examples" / "fleet.yaml").read_text(encoding="utf-8")

#: Nine levels of nine aliases: 387 million strings if anything expands it.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def _replace(old: str, new: str) -> str:
    assert old in EXAMPLE, old
    return EXAMPLE.replace(old, new, 1)


# (name, file content, path in the file, rule)
HOSTILE_FILES: list[tuple[str, str | bytes, str, str]] = [
    ("alias bomb", ALIAS_BOMB, "", "no aliases"),
    ("alias inside a fleet", _replace("version: 1", "version: &v 1\nold: *v"), "", "no aliases"),
    ("duplicate key", _replace("name: ppo-prod", "name: ppo-prod\nname: other"), "", "unique keys"),
    ("not UTF-8", EXAMPLE.encode() + b"# caf\xe9\n", "", "readable file"),
    ("section not a list", _replace("data_centres:", "data_centres: 5\nold:"), "data_centres",
     "field type"),
    ("port a list", _replace("port: 22, user: ppo", "port: [22], user: ppo"),
     "servers[app-jhb1-1].ssh.port", "port range 1-65535"),
    ("dangling dc", _replace("dc: jhb1", "dc: nowhere"), "servers[app-jhb1-1].dc",
     "known reference"),
    ("client on a mirror", _replace("server: app-jhb1-1", "server: mirror-jhb1-1"),
     "clients[acme-mining].server", "clients sit on app servers"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "where", "rule"), [c[1:] for c in HOSTILE_FILES],
                         ids=[c[0] for c in HOSTILE_FILES])  # fmt: skip
def test_a_hostile_fleet_file_is_one_clear_violation(
    tmp_path: Path, content: str | bytes, where: str, rule: str
) -> None:
    path = tmp_path / "fleet.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    started = time.monotonic()
    result = CliRunner().invoke(app, ["inventory", "check", str(path)])
    assert time.monotonic() - started < 5
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = next(x for x in result.stderr.splitlines() if f"[rule: {rule}" in x)
    assert line.lstrip().startswith(str(path)), line
    assert f": {where}: " in line if where else True


def test_a_50_mb_fleet_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    with path.open("w", encoding="utf-8") as out:
        out.write(EXAMPLE)
        out.write(("# " + "x" * 1022 + "\n") * (50 * 1024))
    assert path.stat().st_size > MAX_FLEET_BYTES
    started = time.monotonic()
    result = CliRunner().invoke(app, ["inventory", "check", str(path)])
    assert time.monotonic() - started < 2
    assert result.exit_code == 2, result.output
    assert f"{path}" in result.stderr and "[rule: file size]" in result.stderr
