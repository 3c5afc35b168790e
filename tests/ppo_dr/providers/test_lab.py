"""The lab provider against the session lab: real processes, SSH, HTTP and front door."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppo_dr.errors import HostKeyError, LabError, TransientError, UnsafeInputError
from ppo_dr.failover.plan import ProvisionRequest
from ppo_dr.fleet_access import connect_ssh, write_known_hosts
from ppo_dr.inventory import load_fleet
from ppo_dr.lab.status import probe_http
from ppo_dr.lab.supervisor import Lab
from ppo_dr.providers import ProviderError, provider_for
from ppo_dr.providers.lab import LabProvider
from ppo_dr.store import Store

NEW = "app-cpt1-fa11-1"
MIRRORS = ("mirror-cpt1-1", "mirror-jhb1-1")
#: Generous: the machine is shared; the measured time is printed for the report.
PROVISION_BUDGET_S = 30.0


def make_provider(lab: Lab, dc: str = "cpt1", **options: float) -> LabProvider:
    provider = provider_for(
        load_fleet(lab.fleet_file),
        dc,
        fleet_file=lab.fleet_file,
        store_url=lab.store_url,
        **options,
    )
    assert isinstance(provider, LabProvider)
    return provider


@pytest.fixture
def provider(lab: Lab) -> Iterator[LabProvider]:
    """The cpt1 provider; whatever the test provisioned as NEW is released at the end."""
    provider = make_provider(lab)
    yield provider
    provider.release(NEW)


def server_pid(lab: Lab, server_id: str) -> int | None:
    return lab.recorded_pids().get(server_id)


def test_provisions_an_app_server_that_answers_ssh_and_http(
    lab: Lab, provider: LabProvider, tmp_path: Path
) -> None:
    started = time.monotonic()
    got = provider.provision(ProvisionRequest(NEW, "cpt1", mirrors=MIRRORS))
    took = time.monotonic() - started
    print(f"lab provision of {NEW}: {took:.2f} s")

    assert got.created and got.provider == "lab"
    assert took < PROVISION_BUDGET_S
    server = got.server
    assert (server.id, server.dc, server.role, server.mirrors) == (NEW, "cpt1", "app", MIRRORS)
    fleet = load_fleet(lab.fleet_file)
    assert fleet.server(NEW) == server
    assert server.http is not None and probe_http(server.http.port) is None

    # SSH with the host key pinned in fleet.yaml, nothing else trusted.
    ssh = server.ssh
    assert ssh is not None
    known_hosts = write_known_hosts(fleet, tmp_path / "access")
    remote = connect_ssh(ssh.host, ssh.port, ssh.user, str(lab.operator_key), str(known_hosts))
    try:
        assert remote.stat(server.data_root) is not None
    finally:
        remote.close()
    other_ssh = fleet.server("app-cpt1-1").ssh
    assert other_ssh is not None
    wrong = fleet.model_copy(
        update={
            "servers": tuple(
                s.model_copy(
                    update={"ssh": ssh.model_copy(update={"host_key": other_ssh.host_key})}
                )
                if s.id == NEW
                else s
                for s in fleet.servers
            )
        }
    )
    with pytest.raises(HostKeyError):
        connect_ssh(
            ssh.host,
            ssh.port,
            ssh.user,
            str(lab.operator_key),
            str(write_known_hosts(wrong, tmp_path / "wrong")),
        )

    # A rerun (a crashed flow retrying) gets the same running server.
    pid = server_pid(lab, NEW)
    again = make_provider(lab).provision(ProvisionRequest(NEW, "cpt1", mirrors=MIRRORS))
    assert not again.created and again.server == server
    assert server_pid(lab, NEW) == pid


def test_release_stops_the_process_and_forgets_the_server(lab: Lab, provider: LabProvider) -> None:
    got = provider.provision(ProvisionRequest(NEW, "cpt1"))  # mirrors derived by the lab
    assert got.server.mirrors == ("mirror-cpt1-1", "mirror-jhb1-1")
    pid = server_pid(lab, NEW)
    assert pid is not None

    provider.release(NEW)
    provider.release(NEW)  # gone already: fine

    assert pid not in {p for p, _module in lab.processes()}
    assert all(s.id != NEW for s in load_fleet(lab.fleet_file).servers)
    assert NEW not in lab.recorded_pids()


def test_route_waits_for_the_front_door_and_release_is_refused_while_placed(
    lab: Lab, provider: LabProvider
) -> None:
    got = provider.provision(ProvisionRequest(NEW, "cpt1", mirrors=MIRRORS))
    fleet = load_fleet(lab.fleet_file)
    client = fleet.clients_on("app-cpt1-1")[0].id
    quick = make_provider(lab, route_timeout=1.0)
    with pytest.raises(TransientError, match=f"does not route {client} to {NEW}"):
        quick.route(client, NEW)  # the placement is not switched yet

    store = Store(lab.store_url)
    try:
        before = store.placement(client)
        assert before is not None
        store.move_client(client, got.server.id, before.version, reason="provider test")
        try:
            receipt = provider.route(client, NEW)
            assert f"routes {client} -> {NEW}" in receipt
            with pytest.raises(LabError, match=f"still hosts clients: {client}"):
                provider.release(NEW)
            assert server_pid(lab, NEW) is not None
        finally:
            store.move_client(client, before.server_id, before.version + 1, reason="back")
    finally:
        store.close()
    assert "routes" in provider.route(client, before.server_id)


def test_a_rerun_with_other_mirrors_or_dc_is_refused(lab: Lab, provider: LabProvider) -> None:
    provider.provision(ProvisionRequest(NEW, "cpt1", mirrors=MIRRORS))
    with pytest.raises(LabError, match="exists already with mirrors"):
        provider.provision(
            ProvisionRequest(NEW, "cpt1", mirrors=("mirror-cpt1-1", "mirror-lon1-1"))
        )
    with pytest.raises(LabError, match="exists already as an app server in cpt1"):
        make_provider(lab, "jhb1").provision(ProvisionRequest(NEW, "jhb1"))


@pytest.mark.parametrize(
    ("request_", "error", "says"),
    [
        (ProvisionRequest("app-cpt1-x;id", "cpt1"), UnsafeInputError, "refused"),
        (ProvisionRequest("app-cpt1-x", "lon1"), ProviderError, "cannot provision"),
        (ProvisionRequest("app-cpt1-x", "cpt1", template="db"), ProviderError, "template"),
        (
            ProvisionRequest("app-cpt1-x", "cpt1", mirrors=("mirror-jhb1-1",)),
            LabError,
            "one mirror",
        ),
        (
            ProvisionRequest("app-cpt1-x", "cpt1", mirrors=("mirror-cpt1-1", "app-jhb1-1")),
            LabError,
            "it is an app server",
        ),
        (
            ProvisionRequest("app-cpt1-x", "cpt1", mirrors=("mirror-cpt1-1", "mirror-mars-1")),
            LabError,
            "not a server of the lab",
        ),
        (ProvisionRequest("app-cpt1-1", "cpt1"), LabError, "not started by start_server"),
    ],
)
def test_bad_requests_are_refused_and_start_nothing(
    lab: Lab, provider: LabProvider, request_: ProvisionRequest, error: type[Exception], says: str
) -> None:
    before = {s.id for s in load_fleet(lab.fleet_file).servers}
    with pytest.raises(error, match=says):
        provider.provision(request_)
    assert {s.id for s in load_fleet(lab.fleet_file).servers} == before


def test_release_of_a_fixed_server_is_refused(lab: Lab, provider: LabProvider) -> None:
    with pytest.raises(LabError, match="fixed topology"):
        provider.release("spare-cpt1-1")
