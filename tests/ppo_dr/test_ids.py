"""Ids and relative paths: what is safe to hand to a shell, a URL or a filesystem."""

from __future__ import annotations

import posixpath
import re
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from ppo_dr.errors import PermanentError, UnsafeInputError
from ppo_dr.ids import (
    ID_PATTERN,
    ID_RULE,
    SHOWN_LEN,
    absolute_path_problem,
    check_id,
    check_relative_path,
    is_valid_id,
    relative_path_problem,
)
from ppo_dr.inventory import RelativePath
from tests.ppo_dr.hostile_ids import HOSTILE_IDS

GOOD_IDS = ["a", "0", "app-jhb1-1", "a-", "a--b", "9lives", "a" * 63, "x" + "-" * 62]
SHELL_META = set(" \t\n\r\x0b\x0c;&|<>()$`\\\"'*?[]{}~#!=%^,:@+/.\x00")


@pytest.mark.parametrize("good", GOOD_IDS)
def test_valid_ids(good: str) -> None:
    assert is_valid_id(good)
    assert check_id(good) == good


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_hostile_ids_are_refused(bad: str) -> None:
    assert not is_valid_id(bad)
    with pytest.raises(UnsafeInputError) as caught:
        check_id(bad, "server id")
    assert "server id" in str(caught.value)
    assert ID_RULE in str(caught.value)
    assert isinstance(caught.value, PermanentError)  # never retried


@pytest.mark.parametrize("check", [check_id, check_relative_path])
def test_a_huge_refused_value_is_cut_in_the_message_with_its_length(check: object) -> None:
    huge = "../" + "a" * 10_240
    with pytest.raises(UnsafeInputError) as caught:
        check(huge, "client id")  # type: ignore[operator]
    message = str(caught.value)
    assert len(message) < SHOWN_LEN + 120 and "(10245 characters)" in message
    assert message.startswith("client id '../aaa") and "refused" in message


@pytest.mark.parametrize("bad", [None, 1, 1.5, b"abc", ["a"], True])
def test_non_strings_are_not_ids(bad: object) -> None:
    assert not is_valid_id(bad)
    with pytest.raises(UnsafeInputError):
        check_id(bad)


def test_id_rule_matches_the_pattern() -> None:
    assert "[a-z0-9][a-z0-9-]{0,62}" in ID_RULE
    assert ID_PATTERN == r"^[a-z0-9][a-z0-9-]{0,62}$"


# Text that is often close to an id: lower-case letters, digits and dashes mixed
# with the characters an attacker would try.
near_ids = st.text(
    alphabet=st.sampled_from(
        list(string.ascii_lowercase + string.digits + "-" * 6) + sorted(SHELL_META) + ["A", "é"]
    ),
    max_size=70,
)


@given(st.one_of(st.text(), near_ids))
@example("a;rm -rf /")
@example("../x")
@example("A B")
@example("a\n")
@example("a" * 64)
def test_any_accepted_id_is_inert(value: str) -> None:
    if not is_valid_id(value):
        with pytest.raises(UnsafeInputError):
            check_id(value)
        return
    assert check_id(value) == value
    assert 1 <= len(value) <= 63
    assert "/" not in value
    assert ".." not in value
    assert not any(ch.isspace() for ch in value)
    assert not set(value) & SHELL_META
    assert not value.startswith("-")  # never read as a command-line option
    assert value.isascii()
    assert value == value.lower()
    assert re.fullmatch(r"[a-z0-9-]+", value)


@given(st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True))
def test_every_id_of_the_documented_form_is_accepted(value: str) -> None:
    assert is_valid_id(value)
    assert check_id(value) == value


# ----------------------------------------------------------------------------- relative paths

GOOD_PATHS = ["clients/acme", "a", "a/b/c", "clients/acme mining", "clients/ünï", "a..b/c", "a/"]
BAD_PATHS = [
    ("", "empty"),
    ("/etc", "absolute"),
    ("/", "absolute"),
    ("\\etc", "absolute"),
    ("..", ".."),
    ("../x", ".."),
    ("a/../b", ".."),
    ("a/..", ".."),
    ("a/../../..", ".."),
    ("a\x00b", "NUL"),
    ("a//b", "normalised"),
    ("./a", "normalised"),
    ("a/./b", "normalised"),
    ("a/.", "normalised"),
    ("a\\b", "'/'"),
    ("a\\..\\..\\etc", "'/'"),
]


@pytest.mark.parametrize("good", GOOD_PATHS)
def test_safe_relative_paths(good: str) -> None:
    assert relative_path_problem(good) is None
    assert check_relative_path(good) == good.rstrip("/")


@pytest.mark.parametrize(("bad", "why"), BAD_PATHS)
def test_unsafe_relative_paths(bad: str, why: str) -> None:
    problem = relative_path_problem(bad)
    assert problem is not None
    assert why in problem
    with pytest.raises(UnsafeInputError) as caught:
        check_relative_path(bad, "data path")
    assert "data path" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("/srv/ppo", True),
        ("/", True),
        ("/srv/ppo/", True),
        ("srv/ppo", False),
        ("", False),
        ("/srv/../etc", False),
        ("/srv/\x00", False),
    ],
)
def test_absolute_paths(value: str, ok: bool) -> None:
    assert (absolute_path_problem(value) is None) is ok


path_text = st.lists(
    st.one_of(
        st.sampled_from(["..", ".", "", "a", "b c", "ü", "\\", "\x00", "/", "..\\.."]),
        st.text(max_size=4),
    ),
    max_size=6,
).map("/".join)


@given(st.one_of(path_text, st.text()))
@example("a/..")
@example("..")
@example(".")
def test_any_accepted_relative_path_stays_inside_the_root(value: str) -> None:
    if relative_path_problem(value) is not None:
        with pytest.raises(UnsafeInputError):
            check_relative_path(value)
        return
    cleaned = check_relative_path(value)
    assert "\x00" not in cleaned
    assert "\\" not in cleaned
    assert not cleaned.startswith("/")
    assert ".." not in cleaned.split("/")
    root = "/srv/ppo"
    joined = posixpath.normpath(posixpath.join(root, cleaned))
    assert joined == root or joined.startswith(root + "/")


@given(st.one_of(path_text, st.text()))
@example(".")
@example("./")
def test_a_client_data_path_is_strictly_inside_the_root(value: str) -> None:
    """The inventory's data paths add one rule: never the data root itself."""
    adapter = TypeAdapter(RelativePath)
    try:
        cleaned = adapter.validate_python(value)
    except ValidationError:
        return
    root = "/srv/ppo"
    joined = posixpath.normpath(posixpath.join(root, cleaned))
    assert joined.startswith(root + "/"), (value, joined)
