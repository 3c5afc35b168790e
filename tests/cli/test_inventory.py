"""``ppo-dr inventory check FILE``: a summary and exit 0, or every violation and exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from ppo_dr.inventory import check_fleet_text
from tests.cli.entry import PPO_DR

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fleet.yaml"
runner = CliRunner()


def bad_fleet(tmp_path: Path) -> Path:
    """The example with five independent mistakes."""
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    servers = {s["id"]: s for s in doc["servers"]}
    clients = {c["id"]: c for c in doc["clients"]}
    servers["app-jhb1-1"]["ssh"]["port"] = 70000
    servers["app-cpt1-1"]["mirrors"] = ["mirror-cpt1-1"]
    clients["acme-mining"]["data_path"] = "../../etc"
    clients["thames-advisory"]["countries"] = ["ZA"]
    doc["data_centres"][0]["id"] = "a;rm -rf /"
    doc["channels"]["email"]["api_key"] = "SG.xxx"
    path = tmp_path / "bad fleet.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def test_check_example_prints_summary_and_exits_0() -> None:
    result = runner.invoke(app, ["inventory", "check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "fleet ppo-prod: 3 data centres, 9 servers, 5 clients" in out
    assert "jhb1 (ZA, aws): 2 app, 1 mirror, 1 spare" in out
    assert "cpt1 (ZA, static): 1 app, 1 mirror" in out
    assert "lon1 (GB, aws): 1 app, 1 mirror, 1 spare" in out
    assert "app-jhb1-1 [jhb1] 2/40 clients; on-site mirror-jhb1-1; off-site mirror-cpt1-1" in out
    assert "app-lon1-1 [lon1] 1/40 clients; on-site mirror-lon1-1; off-site mirror-jhb1-1" in out
    assert "spares: spare-jhb1-1, spare-lon1-1" in out
    assert out.rstrip().endswith(f"{EXAMPLE}: OK")
    assert result.stderr == ""


def test_check_bad_file_lists_every_violation_and_exits_2(tmp_path: Path) -> None:
    path = bad_fleet(tmp_path)
    _, violations = check_fleet_text(path.read_text(encoding="utf-8"), str(path))
    assert len(violations) >= 6

    result = runner.invoke(app, ["inventory", "check", str(path)])
    assert result.exit_code == 2
    err = result.stderr
    assert f"{path}: {len(violations)} violation(s)" in err
    for violation in violations:
        assert violation.line is not None
        assert f"{path}:{violation.line}: {violation.path}: " in err
        assert f"[rule: {violation.rule}]" in err
    for path_in_file, rule in [
        ("servers[app-jhb1-1].ssh.port", "port range 1-65535"),
        ("servers[app-cpt1-1].mirrors", "off-site mirror"),
        ("clients[acme-mining].data_path", "relative path inside the data root"),
        ("clients[thames-advisory].countries", "residency"),
        ("data_centres[0].id", "id syntax"),
        ("channels.email.api_key", "secrets are references"),
    ]:
        line = next(line for line in err.splitlines() if f": {path_in_file}: " in line)
        assert f"[rule: {rule}" in line
    assert "Traceback" not in result.output
    assert "SG.xxx" not in result.output
    assert "OK" not in result.stdout
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "broken.yaml",
            b"version: 1\nname: x\n  servers: [\n",
            ["{path}:3: (top level): ", "[rule: YAML syntax]"],
        ),
        ("nowhere.yaml", None, ["{path}", "No such file or directory", "[rule: readable file]"]),
        (
            "latin1.yaml",
            "name: Société Générale\n".encode("latin-1"),
            ["{path}", "utf-8", "[rule: readable file]"],
        ),
        ("", None, ["[rule: readable file]"]),  # tmp_path itself: a directory
        ("list.yaml", b"- a\n- b\n", ["[rule: document shape]"]),
    ],
    ids=["yaml-syntax", "missing", "not-utf8", "directory", "not-a-mapping"],
)
def test_a_file_that_is_no_fleet_exits_2_naming_the_rule(
    tmp_path: Path, name: str, content: bytes | None, expected: list[str]
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(app, ["inventory", "check", str(path)])
    assert result.exit_code == 2
    for text in expected:
        assert text.format(path=path) in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("kind", "why"), [("missing", "No such file or directory"), ("latin1", "utf-8")]
)
def test_check_a_file_that_cannot_be_read(tmp_path: Path, kind: str, why: str) -> None:
    path = tmp_path / f"{kind}.yaml"
    if kind == "latin1":
        path.write_bytes("name: Société Générale\n".encode("latin-1"))
    result = runner.invoke(app, ["inventory", "check", str(path)])
    assert result.exit_code == 2
    assert str(path) in result.stderr
    assert why in result.stderr
    assert "[rule: readable file]" in result.stderr
    assert "Traceback" not in result.output


def test_check_a_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["inventory", "check", str(tmp_path)])
    assert result.exit_code == 2
    assert "[rule: readable file]" in result.stderr
    assert "Traceback" not in result.output


def test_check_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    result = runner.invoke(app, ["inventory", "check", str(path)])
    assert result.exit_code == 2
    assert "[rule: document shape]" in result.stderr


# ------------------------------------------------------- the real command (declared entry point)


def check_in_subprocess(path: Path) -> subprocess.CompletedProcess[str]:
    """``ppo-dr inventory check PATH`` run as the console script runs it."""
    return subprocess.run(
        [*PPO_DR, "inventory", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_checks_the_example() -> None:
    done = check_in_subprocess(EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert "on-site mirror-jhb1-1" in done.stdout
    assert f"{EXAMPLE}: OK" in done.stdout


@pytest.mark.parametrize("kind", ["bad", "missing", "latin1"])
def test_the_command_fails_cleanly(tmp_path: Path, kind: str) -> None:
    if kind == "bad":
        path = bad_fleet(tmp_path)
    elif kind == "missing":
        path = tmp_path / "missing.yaml"
    else:
        path = tmp_path / "latin1.yaml"
        path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    done = check_in_subprocess(path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert str(path) in done.stderr
    assert "[rule: " in done.stderr
    if kind == "bad":
        assert f"{path}: " in done.stderr
        assert "servers[app-jhb1-1].ssh.port" in done.stderr
        assert "[rule: residency]" in done.stderr
