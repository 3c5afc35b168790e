"""Every error class in ppo_dr sits in the one tree and is named in its map."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

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


ERROR_CLASSES = _error_classes()


def test_the_walk_finds_errors_outside_errors_py() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {"PlanError", "VerifyMismatch", "ProviderError", "CommandFailed"} <= names


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__qualname__)
def test_every_error_class_is_in_the_tree_and_its_map(cls: type[BaseException]) -> None:
    assert issubclass(cls, DRError), f"{cls.__module__}.{cls.__name__} is outside the tree"
    assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from errors.py's map"


@pytest.mark.parametrize(
    "cls", [c for c in ERROR_CLASSES if c is not DRError], ids=lambda cls: cls.__qualname__
)
def test_retrying_follows_the_base_class(cls: type[BaseException]) -> None:
    exc = cls.__new__(cls)  # no arguments needed: only the class decides
    assert is_retryable(exc) is issubclass(cls, TransientError)
    assert issubclass(cls, TransientError) != issubclass(cls, PermanentError)
