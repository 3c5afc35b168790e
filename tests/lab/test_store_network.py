"""The store's database on the lab network, the pure part: who pg_hba lets in, from
where; the URLs name a password file, never the password; bad passwords are refused
without being shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppo_dr.errors import LabError
from ppo_dr.lab import store_network
from ppo_dr.lab.controlplane import ControlPlane
from ppo_dr.store.engine import normalise_url


def _plane(tmp_path: Path, *, namespaced: bool) -> ControlPlane:
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "password").write_text("s3cret-s3cret-s3cret\n")
    return ControlPlane(
        directory=str(tmp_path),
        pg_port=5501,
        store_proxy_port=5502,
        netns="ppoabc123-ctl" if namespaced else None,
        netns_address="10.42.200.1" if namespaced else None,
    )


def _rules(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line and not line.startswith("#")]


def test_pg_hba_lets_only_the_ppo_role_in_from_loopback_without_namespaces() -> None:
    assert _rules(store_network.pg_hba(None)) == [
        ["local", "all", "postgres", "trust"],
        ["host", "prefect,store", "ppo", "127.0.0.1/32", "scram-sha-256"],
    ]


def test_pg_hba_adds_the_lab_range_and_nothing_wider_in_a_namespaced_lab() -> None:
    rules = _rules(store_network.pg_hba("10.42.200.1"))
    assert rules[-1] == ["host", "prefect,store", "ppo", "10.42.0.0/16", "scram-sha-256"]
    assert all(rule[0] == "local" or rule[-1] == "scram-sha-256" for rule in rules)
    assert not any("0.0.0.0/0" in rule or rule[2] == "all" for rule in rules if rule[0] == "host")


@pytest.mark.parametrize(
    ("address", "network"),
    [("10.42.200.1", "10.42.0.0/16"), ("10.0.1.1", "10.0.0.0/16"), ("10.255.0.1", "10.255.0.0/16")],
)
def test_lab_network_is_the_slash_16_of_an_address(address: str, network: str) -> None:
    assert store_network.lab_network(address) == network


@pytest.mark.parametrize(
    "address", ["192.168.1.1", "10.256.0.1", "10.1.1", "10.1.1.1/16", "", "10.1.1.1 all", "x"]
)
def test_lab_network_refuses_anything_but_a_lab_address(address: str) -> None:
    with pytest.raises(LabError, match="not an address of a lab"):
        store_network.lab_network(address)


def test_urls_name_the_passfile_and_never_the_password(tmp_path: Path) -> None:
    plane = _plane(tmp_path, namespaced=True)
    path = store_network.write_passfile(plane)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == "*:*:*:ppo:s3cret-s3cret-s3cret\n"
    urls = store_network.store_urls(plane)
    assert urls.url == f"postgresql://ppo@127.0.0.1:5502/store?passfile={path}"
    assert urls.inner_url == f"postgresql://ppo@10.42.200.1:5501/store?passfile={path}"
    for url in (urls.url, urls.inner_url):
        assert "s3cret" not in url
        parsed = normalise_url(url)
        assert (parsed.password, parsed.database, parsed.query) == (
            None,
            "store",
            {"passfile": str(path)},
        )


def test_without_namespaces_both_sides_use_postgresql_on_loopback(tmp_path: Path) -> None:
    plane = _plane(tmp_path, namespaced=False)
    urls = store_network.store_urls(plane)
    assert urls.url == urls.inner_url
    assert urls.url.startswith("postgresql://ppo@127.0.0.1:5501/store?passfile=")
    assert store_network.store_proxy_config(plane) == ""
    assert store_network.listen_addresses(plane) == "127.0.0.1"


def test_the_proxy_forwards_the_host_port_into_the_control_site(tmp_path: Path) -> None:
    plane = _plane(tmp_path, namespaced=True)
    config = store_network.store_proxy_config(plane)
    assert "mode tcp" in config
    assert "bind 127.0.0.1:5502\n" in config
    assert "server pg 127.0.0.1:5501 namespace ppoabc123-ctl\n" in config
    assert store_network.listen_addresses(plane) == "127.0.0.1,10.42.200.1"


def test_password_from_the_environment_is_used_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(store_network.PASSWORD_ENV, "a-Good_pass.word~16")
    assert store_network.pg_password() == "a-Good_pass.word~16"


def test_without_the_environment_each_password_is_new_and_long() -> None:
    first, second = store_network.pg_password(), store_network.pg_password()
    assert first != second and len(first) >= 24


@pytest.mark.parametrize(
    "bad", ["short", "has space in it long", "quote'in-the-password", "x:" * 10, "é" * 20]
)
def test_a_bad_password_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv(store_network.PASSWORD_ENV, bad)
    with pytest.raises(LabError) as caught:
        store_network.pg_password()
    assert bad not in str(caught.value)
    assert "16 to 128 characters" in str(caught.value)
