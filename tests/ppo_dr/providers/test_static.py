"""The static provider: claiming free spares of a data centre, race-safe, against a real store."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from ppo_dr.errors import PermanentError, UnsafeInputError
from ppo_dr.failover.plan import ProvisionRequest
from ppo_dr.inventory import Fleet, parse_fleet
from ppo_dr.providers import ProviderError, provider_for, provisionable_dcs
from ppo_dr.providers.static import StaticProvider
from ppo_dr.store import Store
from tests.threads import run_in_threads

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fleet.yaml"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBc8S/DgXEKaFYyc7BR+I4z9Ipxyu6sNZ0TNLfJxZUnT"


def spare(n: int, *, http: bool = True) -> dict[str, object]:
    entry: dict[str, object] = {
        "id": f"spare-cpt1-{n}",
        "dc": "cpt1",
        "role": "spare",
        "ssh": {"host": f"spare{n}.cpt1.ppo.example", "host_key": KEY},
    }
    if http:
        entry["http"] = {"host": f"spare{n}.cpt1.ppo.example", "port": 8080}
    return entry


@pytest.fixture
def fleet() -> Fleet:
    """The example fleet with spares in its static DC cpt1 (one of them without HTTP)."""
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    doc["servers"] += [spare(1), spare(2), spare(3, http=False)]
    return parse_fleet(yaml.safe_dump(doc), "fleet.yaml")


@pytest.fixture
def store_url(tmp_path: Path, fleet: Fleet) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store(url)
    try:
        store.upgrade()
        store.seed_placements({c.id: c.server for c in fleet.clients})
    finally:
        store.close()
    return url


@pytest.fixture
def provider(fleet: Fleet, store_url: str, tmp_path: Path) -> StaticProvider:
    made = provider_for(
        fleet, "cpt1", fleet_file=EXAMPLE, store_url=store_url, claims_dir=tmp_path / "claims"
    )
    assert isinstance(made, StaticProvider)
    return made


def place(store_url: str, client_id: str, server_id: str) -> None:
    store = Store(store_url)
    try:
        placement = store.placement(client_id)
        assert placement is not None
        store.move_client(client_id, server_id, placement.version, reason="test")
    finally:
        store.close()


def test_claims_a_free_spare_and_a_rerun_gets_the_same(provider: StaticProvider) -> None:
    first = provider.provision(ProvisionRequest("scratch-cpt1-a", "cpt1"))
    assert first.created and first.provider == "static"
    assert first.server.id == "spare-cpt1-1" and first.server.role == "spare"
    assert first.detail["request"] == "scratch-cpt1-a"

    again = provider.provision(ProvisionRequest("scratch-cpt1-a", "cpt1"))
    assert not again.created and again.server == first.server

    second = provider.provision(ProvisionRequest("scratch-cpt1-b", "cpt1"))
    assert second.created and second.server.id == "spare-cpt1-2"


def test_no_free_spare_names_who_holds_each(provider: StaticProvider, store_url: str) -> None:
    place(store_url, "table-bay-fisheries", "spare-cpt1-1")
    provider.provision(ProvisionRequest("scratch-cpt1-a", "cpt1"))  # takes spare-cpt1-2

    with pytest.raises(ProviderError) as caught:
        provider.provision(ProvisionRequest("scratch-cpt1-b", "cpt1"))
    message = str(caught.value)
    assert "spare-cpt1-1: hosts table-bay-fisheries" in message
    assert "spare-cpt1-2: claimed by scratch-cpt1-a" in message
    assert "spare-cpt1-3" not in message  # no HTTP: never a candidate


def test_release_frees_the_spare_and_is_idempotent(provider: StaticProvider) -> None:
    got = provider.provision(ProvisionRequest("scratch-cpt1-a", "cpt1"))
    provider.release(got.server.id)
    provider.release(got.server.id)
    assert provider.claims() == {}
    # Released by the request's id works too (all the plan knows).
    provider.provision(ProvisionRequest("scratch-cpt1-b", "cpt1"))
    provider.release("scratch-cpt1-b")
    assert provider.claims() == {}


def test_release_is_refused_while_a_client_is_placed_there(
    provider: StaticProvider, store_url: str
) -> None:
    got = provider.provision(ProvisionRequest("scratch-cpt1-a", "cpt1"))
    place(store_url, "table-bay-fisheries", got.server.id)
    with pytest.raises(ProviderError, match="still hosts clients \\(table-bay-fisheries\\)"):
        provider.release(got.server.id)
    assert set(provider.claims()) == {got.server.id}


def test_concurrent_claims_never_share_a_spare(provider: StaticProvider) -> None:
    won: dict[str, str] = {}
    failed: list[Exception] = []
    start = threading.Barrier(6)

    def claim(n: int) -> None:
        start.wait()
        try:
            got = provider.provision(ProvisionRequest(f"scratch-cpt1-{n}", "cpt1"))
            won[f"scratch-cpt1-{n}"] = got.server.id
        except ProviderError as exc:
            failed.append(exc)

    run_in_threads(claim, 6, timeout=30)
    assert sorted(won.values()) == ["spare-cpt1-1", "spare-cpt1-2"]
    assert len(failed) == 4
    assert {c.spare: c.request for c in provider.claims().values()} == {
        spare: request for request, spare in won.items()
    }


def test_a_damaged_claim_still_holds_its_spare(provider: StaticProvider) -> None:
    provider.claims_dir.mkdir(parents=True)
    (provider.claims_dir / "spare-cpt1-1.claim").write_text("{not json")
    got = provider.provision(ProvisionRequest("scratch-cpt1-a", "cpt1"))
    assert got.server.id == "spare-cpt1-2"


def test_route_is_a_receipt_that_the_placements_route(
    provider: StaticProvider, store_url: str
) -> None:
    place(store_url, "table-bay-fisheries", "spare-cpt1-1")
    receipt = provider.route("table-bay-fisheries", "spare-cpt1-1")
    assert "reads placements" in receipt and "table-bay-fisheries -> spare-cpt1-1" in receipt
    with pytest.raises(PermanentError, match="places table-bay-fisheries on spare-cpt1-1"):
        provider.route("table-bay-fisheries", "app-cpt1-1")
    with pytest.raises(PermanentError, match="no placement"):
        provider.route("nobody", "app-cpt1-1")


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (ProvisionRequest("../../etc", "cpt1"), UnsafeInputError),
        (ProvisionRequest("scratch-x", "jhb1"), ProviderError),
        (ProvisionRequest("scratch-x", "cpt1", template="db"), ProviderError),
    ],
)
def test_bad_requests_are_refused(
    provider: StaticProvider, request_: ProvisionRequest, error: type[Exception]
) -> None:
    with pytest.raises(error):
        provider.provision(request_)
    assert provider.claims() == {}


def test_hostile_release_is_refused(provider: StaticProvider) -> None:
    with pytest.raises(UnsafeInputError):
        provider.release("../spare-cpt1-1")


def test_a_dc_without_spares_says_so(fleet: Fleet, store_url: str, tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    bare = parse_fleet(yaml.safe_dump(doc), "fleet.yaml")
    provider = StaticProvider(bare, "cpt1", store_url=store_url, claims_dir=tmp_path / "c")
    with pytest.raises(ProviderError, match="cpt1 has no spare servers"):
        provider.provision(ProvisionRequest("scratch-cpt1-a", "cpt1"))


def test_provider_for_picks_by_the_dc_provider(
    fleet: Fleet, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ppo_dr.providers.aws import AwsProvider
    from ppo_dr.providers.lab import LabProvider

    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))

    def pick(dc: str) -> object:
        return provider_for(fleet, dc, fleet_file=tmp_path / "fleet.yaml", store_url=store_url)

    static = pick("cpt1")
    assert isinstance(static, StaticProvider)
    assert static.claims_dir == tmp_path / "home" / "claims" / fleet.name
    assert isinstance(pick("jhb1"), AwsProvider)
    lab_fleet = fleet.model_copy(
        update={
            "data_centres": tuple(
                d.model_copy(update={"provider": "lab"}) if d.id == "cpt1" else d
                for d in fleet.data_centres
            )
        }
    )
    lab = provider_for(lab_fleet, "cpt1", fleet_file=tmp_path / "fleet.yaml", store_url=store_url)
    assert isinstance(lab, LabProvider) and lab.lab.directory == tmp_path.resolve()
    with pytest.raises(ProviderError, match="no data centre 'mars1'"):
        pick("mars1")
    with pytest.raises(UnsafeInputError):
        pick("../x")


def test_provisionable_dcs_are_the_lab_and_aws_ones(fleet: Fleet) -> None:
    assert provisionable_dcs(fleet) == {"jhb1", "lon1"}  # cpt1 is static
