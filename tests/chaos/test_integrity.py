"""Damaged data at rest: which chunk is hit, how the pack is damaged, and the verdict
(verify names client, file and mirror; the restore takes the other mirror; the drill
from the damaged mirror fails loudly; nobody paged; clean again after the heal)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ppo_dr.errors import LabError
from ppo_dr.lab.chaos.catalogue import BY_NAME
from ppo_dr.lab.chaos.integrity import (
    ChunkRef,
    DamageDone,
    IntegrityObservation,
    choose_blob,
    damage_pack,
    judge_integrity,
)
from ppo_dr.lab.chaos.verdict import RESULT_KEYS
from tests.chaos.judging import assert_fails_saying
from tests.chaos.test_verdict import T0, at

LOCATIONS = {"b-small": ("p1", 0, 10), "b-big": ("p2", 40, 20), "b-big2": ("p2", 60, 20)}


def test_the_first_chunk_of_the_largest_file_is_chosen() -> None:
    files = [("journal.log", 10, ("b-small",)), ("data/blob.bin", 2000, ("b-big", "b-big2"))]
    chunk = choose_blob("acme", "20261204T080000Z", files, LOCATIONS)
    assert chunk == ChunkRef("acme", "20261204T080000Z", "data/blob.bin", "b-big", "p2", 40, 20)


def test_equal_sizes_go_to_the_first_path_and_unindexed_or_empty_files_are_skipped() -> None:
    files = [
        ("b", 2000, ("b-big",)),
        ("a", 2000, ("b-small",)),
        ("huge-unindexed", 9999, ("nowhere",)),
        ("empty", 0, ()),
    ]
    assert choose_blob("acme", "s", files, LOCATIONS).path == "a"


def test_a_snapshot_without_a_stored_chunk_is_a_clear_error() -> None:
    with pytest.raises(LabError, match="acme/s: no stored chunk"):
        choose_blob("acme", "s", [("empty", 0, ())], LOCATIONS)


CHUNK = ChunkRef("acme", "s", "data/blob.bin", "b-big", "p2", 4, 6)
PACK = bytes(range(16))


def test_a_bitflip_changes_one_bit_of_one_byte_inside_the_chunk() -> None:
    damaged, where = damage_pack(PACK, CHUNK, "bitflip")
    assert where == 7 and len(damaged) == len(PACK)
    differing = [i for i in range(len(PACK)) if damaged[i] != PACK[i]]
    assert differing == [7] and damaged[7] ^ PACK[7] == 1


def test_a_truncation_cuts_the_pack_inside_the_chunk() -> None:
    damaged, where = damage_pack(PACK, CHUNK, "truncate")
    assert where == 7 and damaged == PACK[:7]


@pytest.mark.parametrize(
    "chunk", [replace(CHUNK, offset=12), replace(CHUNK, length=0), replace(CHUNK, offset=-1)]
)
def test_a_chunk_outside_the_pack_is_refused(chunk: ChunkRef) -> None:
    with pytest.raises(LabError, match="lies outside its 16 bytes"):
        damage_pack(PACK, chunk, "bitflip")


DONE = DamageDone("mirror-a", "mirror-b", CHUNK, "bitflip", 7, 16)
GOOD = IntegrityObservation(
    fault="bitflip",
    injected_at=T0,
    damage=DONE,
    verify_named=(("mirror-a", "acme", "data/blob.bin"), ("mirror-a", "", "")),
    verified_at=at(1.5),
    other_problems=(),
    served_by={"mirror-a": 3, "mirror-b": 1},
    restored_at=at(3),
    drill_state="FAILED",
    drills=(("mirror-a", False),),
    drill_incidents=((12, at(40)),),
    lost=0,
    healed_at=at(50),
    after_heal_problems=(),
    snapshots_intact=True,
    events=(("pack damaged", T0), ("verify named the damage", at(1.5)), ("healed", at(50))),
)


def test_a_damage_noticed_everywhere_it_should_be_holds() -> None:
    result = judge_integrity(BY_NAME["bitflip"], GOOD)
    assert result.passed, result.notes
    row = result.as_json()
    assert tuple(row) == RESULT_KEYS
    assert row["target"] == "mirror-a" and row["detected_after_s"] == 1.5
    assert row["incidents_opened"] == 1 and row["pages_sent"] == 0 and row["rto_s"] is None
    assert row["acked_writes_lost"] == 0 and row["snapshots_intact"] is True
    assert "verify named client acme, file data/blob.bin" in row["notes"][0]
    assert result.events == [
        ("pack damaged", 0.0),
        ("verify named the damage", 1.5),
        ("healed", 50.0),
    ]


def test_truncate_pack_is_judged_by_the_same_rules() -> None:
    result = judge_integrity(BY_NAME["truncate-pack"], replace(GOOD, fault="truncate-pack"))
    assert result.passed and result.fault == "truncate-pack"


BROKEN = [
    ({"damage": None}, "the fault was not injected"),
    ({"verify_named": None}, "verify --read-data of mirror-a could not run"),
    ({"verify_named": (("mirror-a", "", ""),)}, "did not name client acme, file data/blob.bin"),
    ({"verify_named": (("mirror-b", "acme", "data/blob.bin"),)}, "did not name client acme"),
    ({"other_problems": None}, "verify --read-data of mirror-b could not run"),
    ({"other_problems": ("bad",)}, "mirror-b, not damaged, failed verify: bad"),
    ({"served_by": None}, "the restore from both mirrors did not finish"),
    ({"refused": ("data/blob.bin",)}, "the restore refused 1 file(s)"),
    ({"served_by": {"mirror-a": 4, "mirror-b": 0}}, "the restore took nothing from mirror-b"),
    ({"drills": ()}, "no drill of acme from mirror-a"),
    ({"drills": (("mirror-b", True),)}, "no drill of acme from mirror-a"),
    ({"drills": (("mirror-a", False), ("mirror-a", True))}, "passed on damaged data"),
    ({"drill_state": "COMPLETED"}, "the drill run ended COMPLETED, not FAILED"),
    ({"drill_incidents": ()}, "no drill-failed incident for acme"),
    ({"outage_incidents": 1}, "1 outage incident(s)"),
    ({"pages": (at(2),)}, "1 page(s) sent"),
    ({"notice_keys": ("k", "k")}, "1 notice(s) sent twice"),
    ({"lost": None}, "could not be checked"),
    ({"lost": 3}, "3 acknowledged write(s) missing"),
    ({"after_heal_problems": None}, "not verified after the heal"),
    ({"after_heal_problems": ("mirror-a: x",)}, "still damaged after the heal: mirror-a: x"),
    ({"snapshots_intact": False}, "not all intact"),
    ({"problems": ("DRError: mirror gone",)}, "DRError: mirror gone"),
]


@pytest.mark.parametrize(("change", "note"), BROKEN)
def test_each_broken_rule_fails_the_fault_with_its_note(
    change: dict[str, object], note: str
) -> None:
    assert_fails_saying(judge_integrity(BY_NAME["bitflip"], replace(GOOD, **change)), note)  # type: ignore[arg-type]
