"""Every error class in ppo_dr (and the layers above it) sits in the one tree and is
named in its map, with the module it lives in."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import ppo_dr
from ppo_dr import errors
from ppo_dr.errors import DRError, PermanentError, TransientError, is_retryable


def _error_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(ppo_dr.__path__, "ppo_dr."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
            ):
                found.append(obj)
    return found


#: Modules above the domain that define error classes (walking every module of
#: ``deployments`` would run ``deployments.demo.__main__``).
UPPER_LAYERS = (
    "deployments.deploy",
    "deployments.demo.dc_loss",
    "deployments.demo.waiting",
    "deployments.local_server",
    "deployments.workers",
)


def _upper_error_classes() -> list[type[BaseException]]:
    return [
        obj
        for name in UPPER_LAYERS
        for obj in vars(importlib.import_module(name)).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name
    ]


ERROR_CLASSES = _error_classes() + _upper_error_classes()
MAP = (errors.__doc__ or "").split("\n\n")[1].splitlines()  # title, map, prose


def test_the_walk_finds_errors_outside_errors_py() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {"PlanError", "VerifyMismatch", "ProviderError", "CommandFailed"} <= names
    assert {"WorkerError", "DeployError", "StoryFailed", "WaitTimedOut"} <= names


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__qualname__)
def test_every_error_class_is_in_the_tree_and_its_map(cls: type[BaseException]) -> None:
    assert issubclass(cls, DRError), f"{cls.__module__}.{cls.__name__} is outside the tree"
    assert _map_lines(cls), f"{cls.__name__} missing from errors.py's map"
    if cls.__module__ != errors.__name__:
        # The module is named on the class's line, the line below (a list of classes), or
        # its base's line (classes beside their base, e.g. ``mirror.errors``).
        where = cls.__module__.removeprefix("ppo_dr.")
        lines = " ".join(_map_lines(cls) + _map_lines(cls.__mro__[1]))
        assert re.search(rf"\b{re.escape(where)}:", lines), f"map: {cls.__name__} is in {where}"


def _map_lines(cls: type) -> list[str]:
    """The map's line naming *cls* and the one below it (empty: not in the map)."""
    for i, line in enumerate(MAP):
        if re.search(rf"\b{cls.__name__}\b", line):
            return MAP[i : i + 2]
    return []


@pytest.mark.parametrize(
    "cls", [c for c in ERROR_CLASSES if c is not DRError], ids=lambda cls: cls.__qualname__
)
def test_retrying_follows_the_base_class(cls: type[BaseException]) -> None:
    exc = cls.__new__(cls)  # no arguments needed: only the class decides
    assert is_retryable(exc) is issubclass(cls, TransientError)
    assert issubclass(cls, TransientError) != issubclass(cls, PermanentError)
