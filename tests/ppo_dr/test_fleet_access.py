"""Reaching fleet servers with the host keys fleet.yaml pins (pure parts, then the lab)."""

from __future__ import annotations

import pickle
import stat
import time
from pathlib import Path

import pytest

from ppo_dr.errors import AuthError, HostKeyError, PermanentError, UnsafeInputError, is_retryable
from ppo_dr.fleet_access import (
    FleetAccess,
    IdleSpareError,
    client_ids_on,
    client_path,
    home_server,
    homes,
    known_hosts_text,
    mirror_plan,
    operator_key_file,
    parse_repository_key,
    write_known_hosts,
)
from ppo_dr.inventory import Access, Fleet, SecretRef, load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.mirror.fleet_targets import client_sources, mirror_targets
from ppo_dr.placement import mirrors_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fleet.yaml"


@pytest.fixture(scope="module")
def example() -> Fleet:
    return load_fleet(EXAMPLE)


def with_key_file(fleet: Fleet, path: Path) -> Fleet:
    return fleet.model_copy(update={"access": Access(key_file=str(path))})


def with_host_key(fleet: Fleet, server_id: str, host_key: str) -> Fleet:
    servers = tuple(
        s.model_copy(update={"ssh": s.ssh.model_copy(update={"host_key": host_key})})
        if s.id == server_id
        else s
        for s in fleet.servers
    )
    return fleet.model_copy(update={"servers": servers})


# --------------------------------------------------------------------------- pure


def test_known_hosts_lists_every_pinned_key_and_nothing_else(
    example: Fleet, tmp_path: Path
) -> None:
    text = known_hosts_text(example)
    lines = text.splitlines()
    assert len(lines) == len(example.servers)
    for server, line in zip(example.servers, lines, strict=True):
        name = (
            server.ssh.host if server.ssh.port == 22 else f"[{server.ssh.host}]:{server.ssh.port}"
        )
        assert line == f"{name} {server.ssh.host_key}"
    path = write_known_hosts(example, tmp_path / "access")
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # Content-named: the same fleet gives the same file, a changed key a new one.
    assert write_known_hosts(example, tmp_path / "access") == path
    changed = with_host_key(example, example.servers[0].id, example.servers[1].ssh.host_key)
    assert write_known_hosts(changed, tmp_path / "access") != path


def test_the_operator_key_comes_from_the_file_or_an_env_secret(
    example: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The example names a Prefect Secret block: only the flows can resolve it.
    with pytest.raises(AuthError, match="Prefect Secret block"):
        operator_key_file(example, tmp_path)
    got = operator_key_file(example, tmp_path, key_text="-----BEGIN KEY-----\nabc")
    assert got.read_text() == "-----BEGIN KEY-----\nabc\n"
    assert stat.S_IMODE(got.stat().st_mode) == 0o600

    from_env = example.model_copy(
        update={"access": Access(key_secret=SecretRef(env="PPO_TEST_KEY"))}
    )
    monkeypatch.delenv("PPO_TEST_KEY", raising=False)
    with pytest.raises(AuthError, match=r"\$PPO_TEST_KEY, which is not set"):
        operator_key_file(from_env, tmp_path)
    monkeypatch.setenv("PPO_TEST_KEY", "secret-key-text\n")
    assert operator_key_file(from_env, tmp_path).read_text() == "secret-key-text\n"

    with pytest.raises(AuthError, match="does not exist"):
        operator_key_file(with_key_file(example, tmp_path / "nope"), tmp_path)
    (tmp_path / "k").write_text("key")
    assert operator_key_file(with_key_file(example, tmp_path / "k"), tmp_path) == tmp_path / "k"
    nothing = example.model_copy(update={"access": Access()})
    with pytest.raises(AuthError, match="names no operator key"):
        operator_key_file(nothing, tmp_path)


def test_sources_and_repositories_follow_the_fleet(example: Fleet) -> None:
    app = example.servers_by_role("app")[0]
    clients = client_ids_on(example, app.id)
    assert clients == [c.id for c in example.clients_on(app.id)]
    first = example.client(clients[0])
    assert client_path(example, first.id) == f"{app.data_root}/{first.data_path}"
    plan = mirror_plan(example, app.id)
    assert [m.id for m, _ in plan] == [
        example.onsite_mirror(app.id).id,
        *(m.id for m in example.offsite_mirrors(app.id)),
    ]
    for mirror, repo in plan:
        assert repo == f"{mirror.data_root}/repos/{app.id}"
    assert client_ids_on(example, app.id, [clients[-1]]) == [clients[-1]]


@pytest.mark.parametrize(
    ("server", "clients", "error", "match"),
    [
        ("../etc", None, UnsafeInputError, "server id"),
        ("app; rm -rf /", None, UnsafeInputError, "server id"),
        ("no-such-server", None, PermanentError, "no server"),
        ("MIRROR", None, UnsafeInputError, "server id"),
        (None, ["$(reboot)"], UnsafeInputError, "client id"),
        (None, ["no-such-client"], PermanentError, "not on server"),
    ],
)
def test_ids_are_checked_before_use(
    example: Fleet,
    server: str | None,
    clients: list[str] | None,
    error: type[Exception],
    match: str,
) -> None:
    server = server or example.servers_by_role("app")[0].id
    with pytest.raises(error, match=match):
        client_ids_on(example, server, clients)


def test_a_mirror_is_not_an_app_server(example: Fleet) -> None:
    mirror = example.servers_by_role("mirror")[0]
    with pytest.raises(PermanentError, match="not an app server"):
        mirror_plan(example, mirror.id)


def test_placements_decide_where_a_client_is_mirrored(example: Fleet) -> None:
    moved = "acme-mining"
    old = example.client(moved).server
    new = "app-cpt1-1"
    placed = {moved: new, "no-longer-in-fleet": "app-lon1-1"}
    assert homes(example, placed)[moved] == new
    assert "no-longer-in-fleet" not in homes(example, placed)
    # The old home's run no longer picks the client up; the new home's does.
    assert moved in client_ids_on(example, old)
    assert moved not in client_ids_on(example, old, placements=placed)
    assert moved in client_ids_on(example, new, placements=placed)
    with pytest.raises(PermanentError, match="not on server"):
        client_ids_on(example, old, [moved], placed)
    sources = {s.client_id: s.path for s in client_sources(example, new, placements=placed)}
    root = example.server(new).data_root
    assert sources[moved] == f"{root}/{example.client(moved).data_path}"
    assert client_path(example, moved, placed) == sources[moved]
    assert client_path(example, moved, server_id=old).startswith(example.server(old).data_root)
    # Clients without a placement stay where fleet.yaml puts them.
    other = next(c for c in example.clients if c.id != moved)
    assert homes(example, placed)[other.id] == other.server


def test_a_spare_is_a_home_only_while_clients_are_placed_on_it(example: Fleet) -> None:
    spare = "spare-jhb1-1"
    with pytest.raises(IdleSpareError, match="no client is placed on it"):
        home_server(example, spare)  # its scheduled mirror ends quietly on this one
    with pytest.raises(PermanentError, match="not an app server") as mirror:
        home_server(example, example.servers_by_role("mirror")[0].id)
    assert not isinstance(mirror.value, IdleSpareError)
    placed = {"acme-mining": spare}
    assert home_server(example, spare, placed).id == spare
    assert client_ids_on(example, spare, placements=placed) == ["acme-mining"]
    with pytest.raises(UnsafeInputError, match="server id"):
        homes(example, {"acme-mining": "../etc"})


def test_a_spare_turned_home_gets_the_planners_mirror_pair(example: Fleet) -> None:
    spare = "spare-jhb1-1"
    placed = {"acme-mining": spare}
    plan = mirror_plan(example, spare, placed)
    expected = mirrors_for(
        example, spare, countries=sorted(example.client("acme-mining").countries)
    )
    assert [m.id for m, _ in plan] == list(expected)
    assert plan[0][0].dc == example.server(spare).dc  # on-site first
    for mirror, repo in plan:
        assert repo == f"{mirror.data_root}/repos/{spare}"


# --------------------------------------------------------------------------- on the lab


def test_connects_with_the_pinned_keys(lab: Lab, tmp_path: Path) -> None:
    fleet = load_fleet(lab.fleet_file)
    app = fleet.servers_by_role("app")[0]
    with FleetAccess(fleet, state_dir=tmp_path, timeout=5) as access:
        remote = access.remote(app.id)
        assert access.remote(app.id) is remote  # pooled
        result = remote.exec(["health"], timeout=10)
        assert result.ok, result.stderr
        connected = mirror_targets(fleet, app.id, access)
        assert [t.mirror_id for t in connected.targets] == [
            m.id for m, _ in mirror_plan(fleet, app.id)
        ]
        assert connected.unreachable == {}
        assert connected.targets[0].repo_path.endswith(f"/repos/{app.id}")
        # Each target can open a NEW connection in another process: a picklable factory
        # with the fleet's pinned known_hosts and key, never the pooled connection.
        for target in connected.targets:
            assert target.connect is not None
            factory = pickle.loads(pickle.dumps(target.connect))  # noqa: S301 (our own bytes)
            fresh = factory()
            try:
                assert fresh is not target.remote and fresh.label == target.remote.label
                assert fresh.stat("/") is not None
            finally:
                fresh.close()
    assert access.known_hosts.is_relative_to(tmp_path)


def test_a_changed_host_key_is_refused_at_once(lab: Lab, tmp_path: Path) -> None:
    fleet = load_fleet(lab.fleet_file)
    app, other = fleet.servers_by_role("app")[:2]
    forged = with_host_key(fleet, app.id, other.ssh.host_key)
    with FleetAccess(forged, state_dir=tmp_path, timeout=5) as access:
        with pytest.raises(HostKeyError, match="host key changed") as caught:
            access.remote(app.id)
        assert not is_retryable(caught.value)
        with pytest.raises(HostKeyError):  # the factory other processes use checks it too
            access.connector(app.id)()
        # A mirror with a changed key is not "unreachable": it stops the whole run.
        mirror = fleet.onsite_mirror(app.id)
        forged_mirror = with_host_key(fleet, mirror.id, other.ssh.host_key)
    with (
        FleetAccess(forged_mirror, state_dir=tmp_path, timeout=5) as access,
        pytest.raises(HostKeyError),
    ):
        mirror_targets(forged_mirror, app.id, access)


def test_a_cut_mirror_is_reported_unreachable_and_the_other_is_returned(
    lab: Lab, tmp_path: Path
) -> None:
    fleet = load_fleet(lab.fleet_file)
    app = fleet.servers_by_role("app")[0]
    onsite = fleet.onsite_mirror(app.id)
    lab.break_(onsite.id, "network")
    try:
        started = time.monotonic()
        with FleetAccess(fleet, state_dir=tmp_path, timeout=2) as access:
            connected = mirror_targets(fleet, app.id, access)
        took = time.monotonic() - started
    finally:
        lab.heal(onsite.id)
    assert list(connected.unreachable) == [onsite.id]
    assert [t.mirror_id for t in connected.targets] == [m.id for m in fleet.offsite_mirrors(app.id)]
    assert took < 10


# ---- the repositories' encryption key (fleet.mirror.encryption_key)

KEY_HEX = "5e" * 32


@pytest.mark.parametrize(
    "text",
    [KEY_HEX, KEY_HEX.upper(), f"  {KEY_HEX}\n", "Xl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl4="],
)
def test_repository_key_reads_hex_and_base64(text: str) -> None:
    assert parse_repository_key(text, "env:K") == bytes.fromhex(KEY_HEX)


@pytest.mark.parametrize("text", ["", "5e" * 16, "5e" * 33, "not a key at all", "zz" * 32])
def test_repository_key_of_the_wrong_size_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(PermanentError, match="env:K") as info:
        parse_repository_key(text, "env:K")
    assert text.strip() == "" or text not in str(info.value)


def test_mirror_key_comes_from_the_reference_and_stays_unset_without_one(
    example: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "operator"
    key_file.write_text("not used here")
    fleet = with_key_file(example, key_file)
    plain = fleet.model_copy(
        update={"mirror": fleet.mirror.model_copy(update={"encryption_key": None})}
    )
    with FleetAccess(plain, state_dir=tmp_path) as access:
        assert access.mirror_key is None
    policy = plain.mirror.model_copy(
        update={"encryption_key": SecretRef(env="PPO_TEST_MIRROR_KEY")}
    )
    keyed = plain.model_copy(update={"mirror": policy})
    monkeypatch.setenv("PPO_TEST_MIRROR_KEY", KEY_HEX)
    with FleetAccess(keyed, state_dir=tmp_path) as access:
        assert access.mirror_key == bytes.fromhex(KEY_HEX)
    monkeypatch.delenv("PPO_TEST_MIRROR_KEY")
    with FleetAccess(keyed, state_dir=tmp_path) as access, pytest.raises(PermanentError):
        _ = access.mirror_key


def _with_s3_offsite(fleet: Fleet, **s3: object) -> Fleet:
    """*fleet* with app-cpt1-1's off-site mirror an S3 bucket in jhb1."""
    from ppo_dr.inventory import S3Location, Server

    bucket = Server(
        id="mirror-s3-af1",
        dc="jhb1",
        role="mirror",
        s3=S3Location.model_validate(
            {"bucket": "ppo-dr-af1", "prefix": "prod", "region": "af-south-1", **s3}
        ),
    )
    servers = tuple(
        s.model_copy(update={"mirrors": ("mirror-cpt1-1", "mirror-s3-af1")})
        if s.id == "app-cpt1-1"
        else s
        for s in fleet.servers
    )
    return fleet.model_copy(update={"servers": (*servers, bucket)})


def test_an_s3_mirror_gets_a_bucket_target_and_no_host_key(
    example: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id, secret = "AKIAFLEETTESTKEY0001", "fleet/test/secret+value"
    monkeypatch.setenv("PPO_T_KEY_ID", key_id)
    monkeypatch.setenv("PPO_T_SECRET", secret)
    fleet = _with_s3_offsite(
        with_key_file(example, tmp_path / "operator"),
        endpoint_url="http://127.0.0.1:9",
        access_key_id={"env": "PPO_T_KEY_ID"},
        secret_access_key={"env": "PPO_T_SECRET"},
    )
    (tmp_path / "operator").write_text("not used here")
    assert dict((m.id, p) for m, p in mirror_plan(fleet, "app-cpt1-1")) == {
        "mirror-cpt1-1": "/srv/ppo-mirror/repos/app-cpt1-1",
        "mirror-s3-af1": "/repos/app-cpt1-1",  # below the bucket's prefix
    }
    assert "mirror-s3-af1" not in known_hosts_text(fleet)
    assert len(known_hosts_text(fleet).splitlines()) == len(example.servers)
    with FleetAccess(fleet, state_dir=tmp_path) as access:
        connect = access.connector("mirror-s3-af1")
        assert key_id not in repr(connect) and secret not in repr(connect)
        assert pickle.loads(pickle.dumps(connect)) == connect  # noqa: S301 (our own bytes)
        remote = access.remote("mirror-s3-af1")
        assert remote is access.remote("mirror-s3-af1")  # one client per mirror
        assert remote.label == "s3://ppo-dr-af1/prod"
    monkeypatch.delenv("PPO_T_SECRET")
    with FleetAccess(fleet, state_dir=tmp_path) as access:
        with pytest.raises(PermanentError, match="env:PPO_T_SECRET") as info:
            access.connector("mirror-s3-af1")
        assert secret not in str(info.value)
