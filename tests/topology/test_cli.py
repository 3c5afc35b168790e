"""``ppo-dr worker`` and ``ppo-dr deploy`` refuse bad input with one clear line and
exit 2, before starting or writing anything (no server needed)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.lab.test_topology import make_fleet


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    make_fleet(tmp_path, clients=2)
    return tmp_path / "fleet.yaml"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_worker_for_an_unknown_dc_names_the_known_ones(fleet_file: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["worker", "--dc", "nowhere", "-f", str(fleet_file), "--api-url", "http://127.0.0.1:1/api"],
    )
    assert result.exit_code == 2
    assert "unknown data centre 'nowhere'; known: jhb1, cpt1, lon1" in result.output


def test_worker_needs_exactly_one_pool(fleet_file: Path) -> None:
    result = CliRunner().invoke(app, ["worker", "-f", str(fleet_file)])
    assert result.exit_code == 2
    assert "exactly one of --dc ID or --control" in result.output


def test_deploy_to_an_unreachable_server_names_its_url(
    fleet_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    url = f"http://127.0.0.1:{_closed_port()}/api"
    result = CliRunner().invoke(app, ["deploy", "-f", str(fleet_file), "--api-url", url])
    assert result.exit_code == 2
    assert f"Prefect API at {url} unreachable" in result.output


def test_deploy_without_a_server_says_how_to_name_one(
    fleet_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = CliRunner().invoke(app, ["deploy", "-f", str(fleet_file)])
    assert result.exit_code == 2
    assert "pass --api-url or set PREFECT_API_URL" in result.output


def test_lab_up_with_an_unknown_topology_names_the_known_ones_and_makes_nothing(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(
        app, ["lab", "up", "--dir", str(tmp_path / "lab"), "--topology", "mesh"]
    )
    assert result.exit_code == 2
    assert "unknown topology 'mesh': one of loopback, distributed" in result.output
    assert not (tmp_path / "lab").exists()
