"""Ids and relative paths that are safe to hand to a shell, a URL or a filesystem.

Every id in the fleet (data centre, server, client, person) matches ``ID_PATTERN``:
lower-case letters, digits and dashes, starting with a letter or digit, at most 63
characters. Such an id cannot contain a path separator, a dot-dot, white space or a
shell metacharacter, so it is safe in file names, run names, tags and commands.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from ppo_dr.errors import UnsafeInputError

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
ID_RULE = "id syntax [a-z0-9][a-z0-9-]{0,62}"
_ID_RE = re.compile(ID_PATTERN)
#: How much of a refused value an error repeats: a 10 kB "id" is not echoed into every
#: log line, run state and terminal that shows the error.
SHOWN_LEN = 80


def shown(value: object) -> str:
    """*value*'s repr for an error message, cut to :data:`SHOWN_LEN` with its length."""
    text = repr(value)
    if len(text) <= SHOWN_LEN:
        return text
    return f"{text[: SHOWN_LEN - 1]}… ({len(text)} characters)"


def is_valid_id(value: object) -> bool:
    """True if *value* is a str that matches the fleet id syntax."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def check_id(value: object, what: str = "id") -> str:
    """Return *value* if it is a valid id, else raise :class:`UnsafeInputError`."""
    if not is_valid_id(value):
        raise UnsafeInputError(f"{what} {shown(value)} refused: does not match {ID_RULE}")
    return str(value)


def relative_path_problem(value: str) -> str | None:
    """Why *value* is not a safe relative path inside a root, or None if it is."""
    if not value:
        return "must not be empty"
    if "\x00" in value:
        return "must not contain a NUL byte"
    if value.startswith("/") or value.startswith("\\"):
        return "must be relative to the data root, not absolute"
    parts = PurePosixPath(value).parts
    if any(part == ".." for part in parts):
        return "must not contain '..' (it would leave the data root)"
    if value in {".", "./"} or any(part in {".", ""} for part in value.rstrip("/").split("/")):
        return "must be normalised (no '.' or empty components)"
    if "\\" in value:
        return "must use '/' as separator, not '\\'"
    return None


def check_relative_path(value: str, what: str = "path") -> str:
    """Return *value* if it is a safe relative path, else raise :class:`UnsafeInputError`."""
    problem = relative_path_problem(value)
    if problem is not None:
        raise UnsafeInputError(f"{what} {shown(value)} refused: {problem}")
    return value.rstrip("/")


def absolute_path_problem(value: str) -> str | None:
    """Why *value* is not a clean absolute POSIX path, or None if it is."""
    if "\x00" in value:
        return "must not contain a NUL byte"
    if not value.startswith("/"):
        return "must be an absolute path"
    if any(part == ".." for part in PurePosixPath(value).parts):
        return "must not contain '..'"
    return None
