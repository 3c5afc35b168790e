"""FleetFile: a long run follows the fleet file's changes, and survives a bad edit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ppo_dr.errors import InventoryError
from ppo_dr.inventory import load_fleet
from ppo_dr.inventory.watch import FleetFile

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))  # a new version, however coarse the clock


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    text = EXAMPLE.read_text(encoding="utf-8")
    _write(path, text, 1_000_000_000)
    return path


def test_an_unchanged_file_is_not_read_again(fleet_file: Path) -> None:
    watched = FleetFile(fleet_file, load_fleet(fleet_file))
    assert watched.reread() is None
    assert watched.reread() is None


def test_a_changed_file_gives_the_new_fleet(fleet_file: Path) -> None:
    watched = FleetFile(fleet_file, load_fleet(fleet_file))
    text = fleet_file.read_text(encoding="utf-8")
    _write(fleet_file, text.replace("\nname: ", "\nname: x", 1), 2_000_000_000)
    fleet = watched.reread()
    assert fleet is not None and watched.fleet is fleet
    assert fleet.name == load_fleet(fleet_file).name != load_fleet(EXAMPLE).name
    assert watched.reread() is None


def test_a_bad_version_is_reported_once_and_the_last_good_fleet_kept(fleet_file: Path) -> None:
    good = load_fleet(fleet_file)
    watched = FleetFile(fleet_file, good)
    _write(fleet_file, "servers: [unclosed\n", 3_000_000_000)
    with pytest.raises(InventoryError, match=str(fleet_file)):
        watched.reread()
    assert watched.fleet is good
    assert watched.reread() is None  # the same bad version: not reported again
    fleet_file.unlink()
    with pytest.raises(InventoryError, match="readable file"):
        watched.reread()
    assert watched.fleet is good
