"""Where the distributed topology's workers go (pure): one per DC pool in its DC, two
``control`` workers in two DCs, in two countries where the fleet has two; and how
often they ask the API for work."""

from __future__ import annotations

import os

import pytest

from deployments.workers import WORKER_QUERY_S, PlacedWorker, placed_workers, worker_env
from ppo_dr.inventory import Fleet, load_fleet
from tests.fresh_python import run_python
from tests.lab.test_topology import make_fleet

#: What the engine's worker reads as its poll interval, in a fresh interpreter.
READ_POLL = (
    "from prefect.settings import get_current_settings\n"
    "print(get_current_settings().worker.query_seconds)"
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    directory = tmp_path_factory.mktemp("fleet")
    make_fleet(directory, clients=2)
    return load_fleet(directory / "fleet.yaml")


def _with_dcs(fleet: Fleet, *dcs: tuple[str, str]) -> Fleet:
    """*fleet* with other data centres (id, country); the rest does not matter here."""
    model = type(fleet.data_centres[0])
    centres = [
        fleet.data_centres[0].model_copy(update={"id": dc, "country": country})
        for dc, country in dcs
    ]
    assert all(isinstance(c, model) for c in centres)
    return fleet.model_copy(update={"data_centres": centres})


def test_the_lab_fleet_gets_a_worker_per_dc_and_control_in_cpt1_and_lon1(fleet: Fleet) -> None:
    assert [(w.pool, w.dc, w.name) for w in placed_workers(fleet)] == [
        ("dc-jhb1", "jhb1", "dc-jhb1@jhb1"),
        ("dc-cpt1", "cpt1", "dc-cpt1@cpt1"),
        ("dc-lon1", "lon1", "dc-lon1@lon1"),
        ("control", "cpt1", "control@cpt1"),
        ("control", "lon1", "control@lon1"),
    ]


@pytest.mark.parametrize(
    ("dcs", "control_in"),
    [
        ((("a", "ZA"), ("b", "ZA"), ("c", "ZA")), ["b", "c"]),  # one country: last two DCs
        ((("a", "ZA"), ("b", "GB"), ("c", "GB")), ["a", "c"]),  # two countries: one each
        ((("a", "ZA"), ("b", "GB"), ("c", "DE")), ["b", "c"]),
        ((("a", "ZA"), ("b", "ZA")), ["a", "b"]),
        ((("a", "ZA"),), ["a"]),  # one DC: one control worker, nowhere else to put one
    ],
)
def test_control_workers_spread_over_countries_then_dcs(
    fleet: Fleet, dcs: tuple[tuple[str, str], ...], control_in: list[str]
) -> None:
    workers = placed_workers(_with_dcs(fleet, *dcs))
    assert [w.dc for w in workers if w.pool == "control"] == control_in
    assert [w for w in workers if w.pool != "control"] == [
        PlacedWorker(f"dc-{dc}", dc) for dc, _country in dcs
    ]


@pytest.mark.parametrize(("given", "polls"), [(None, float(WORKER_QUERY_S)), ("7", 7.0)])
def test_workers_poll_every_few_seconds_unless_the_operator_says_otherwise(
    given: str | None, polls: float
) -> None:
    """The engine itself reads our poll interval (a wrong variable name would be ignored
    silently), and an operator's own setting is kept."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_WORKER_")}
    if given is not None:
        base["PREFECT_WORKER_QUERY_SECONDS"] = given
    assert WORKER_QUERY_S < 10  # the engine's default, which this exists to shorten
    assert float(run_python(READ_POLL, timeout=60, env=worker_env(base=base))) == polls
