"""Reading fleet YAML: every item validated on its own, then the cross-item rules,
each violation reported with the file, its YAML line and its path in the file."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from ppo_dr.errors import InventoryError, PermanentError, Violation
from ppo_dr.ids import is_valid_id
from ppo_dr.inventory.fields import OUR_RULES
from ppo_dr.inventory.model import SECTIONS, Access, Fleet
from ppo_dr.inventory.rules import topology_problems

#: Far above any real fleet (5,000 clients are ~1 MB); refused before it is read, so
#: a runaway file cannot fill memory or keep the parser busy.
MAX_FLEET_BYTES = 8 * 1024 * 1024


class _Refused(yaml.MarkedYAMLError, PermanentError):
    """A YAML feature a fleet file may not use, with the rule it breaks (a YAML error for
    the parser that raises it, and in the one error tree like every error of ours)."""

    def __init__(self, rule: str, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.rule = rule


class _FleetLoader(yaml.SafeLoader):
    """SafeLoader without aliases (an alias bomb expands exponentially) and without
    duplicate keys (YAML keeps the last one silently, hiding an edit)."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise _Refused("no aliases", "anchors and aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int) and key in seen:
                raise _Refused("unique keys", f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass
class _Checker:
    """Collects violations with the file name and the YAML line of each path."""

    file: str
    lines: dict[tuple[str | int, ...], int]
    found: list[Violation]

    def add(self, loc: tuple[str | int, ...], rule: str, message: str) -> None:
        line = None
        for cut in range(len(loc), -1, -1):
            line = self.lines.get(loc[:cut])
            if line is not None:
                break
        self.found.append(Violation(self.file, _format_loc(loc, self.ids), rule, message, line))

    ids: dict[tuple[str | int, ...], str] | None = None


def _format_loc(loc: tuple[str | int, ...], ids: dict[tuple[str | int, ...], str] | None) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            label = (ids or {}).get(loc[: i + 1])
            out += f"[{label}]" if label else f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_RULE_OF_PYDANTIC = {
    "missing": "required field",
    "extra_forbidden": "unknown field",
    "literal_error": "allowed values",
    "greater_than_equal": "range",
    "less_than_equal": "range",
    "too_short": "not empty",
    "string_too_short": "not empty",
    "string_pattern_mismatch": "syntax",
}


def _rule_for(error: Any) -> str:
    if error.get("type") in OUR_RULES:
        return str(error["type"])
    if "port" in [str(p) for p in error.get("loc", ())]:
        return "port range 1-65535"
    return _RULE_OF_PYDANTIC.get(error.get("type", ""), "field type")


def _line_map(text: str) -> dict[tuple[str | int, ...], int]:
    """Map each path in the YAML document to its 1-based line, for error messages."""
    lines: dict[tuple[str | int, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=_FleetLoader)
    except (yaml.YAMLError, RecursionError):
        return lines

    def walk(node: yaml.Node, loc: tuple[str | int, ...]) -> None:
        lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[(*loc, key.value)] = key.start_mark.line + 1
                walk(value, (*loc, key.value))
                lines[(*loc, key.value)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*loc, index))

    if root is not None:
        with contextlib.suppress(RecursionError):  # lines are a courtesy, not a rule
            walk(root, ())
    return lines


def parse_fleet(text: str, file: str = "fleet.yaml") -> Fleet:
    """Validate fleet YAML *text*; raise :class:`InventoryError` listing every violation."""
    fleet, violations = check_fleet_text(text, file)
    if fleet is None or violations:
        raise InventoryError(file, violations)
    key_file = fleet.access.key_file
    if key_file is not None and not Path(key_file).is_absolute():
        resolved = str(Path(file).resolve().parent / key_file)
        fleet = fleet.model_copy(update={"access": Access(key_file=resolved)})
    return fleet


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file; raise :class:`InventoryError` on any violation."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FLEET_BYTES:
            message = f"{size} bytes; a fleet file may have at most {MAX_FLEET_BYTES}"
            raise InventoryError(str(path), [Violation(str(path), "", "file size", message)])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InventoryError(
            str(path), [Violation(str(path), "", "readable file", reason)]
        ) from exc
    return parse_fleet(text, str(path))


def check_fleet_text(text: str, file: str = "fleet.yaml") -> tuple[Fleet | None, list[Violation]]:
    """Validate fleet YAML; return the fleet (if it parsed) and every violation found."""
    if len(text) > MAX_FLEET_BYTES:
        message = f"{len(text)} characters; a fleet file may have at most {MAX_FLEET_BYTES}"
        return None, [Violation(file, "", "file size", message)]
    check = _Checker(file, _line_map(text), [])
    try:
        data = yaml.load(text, Loader=_FleetLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        check.found.append(Violation(file, "", exc.rule, exc.problem or "", line))
        return None, check.found
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem, context = getattr(exc, "problem", None), getattr(exc, "context", None)
        message = problem or str(exc).splitlines()[0]
        if problem and context:
            message += f" ({context})"
        check.found.append(Violation(file, "", "YAML syntax", message, line))
        return None, check.found
    except RecursionError:
        check.found.append(Violation(file, "", "YAML syntax", "the document is nested too deeply"))
        return None, check.found
    if not isinstance(data, dict):
        check.add(
            (), "document shape", "the document must be a mapping with data_centres, servers, ..."
        )
        return None, check.found

    # Only well-formed ids label a path; a hostile one is shown by its index.
    check.ids = {
        (section, i): item["id"]
        for section in SECTIONS
        for i, item in enumerate(_as_list(data.get(section)))
        if isinstance(item, dict) and is_valid_id(item.get("id"))
    }

    # Each list item is validated alone, so one bad server does not hide the others.
    cleaned: dict[str, Any] = dict(data)
    for section, model in SECTIONS.items():
        items = data.get(section, [] if section in {"clients", "people"} else None)
        if items is None:
            check.add((section,), "required field", f"'{section}' is required")
            cleaned[section] = []
            continue
        if not isinstance(items, list):
            check.add((section,), "field type", f"'{section}' must be a list")
            cleaned[section] = []
            continue
        good = []
        for index, item in enumerate(items):
            try:
                good.append(TypeAdapter(model).validate_python(item))
            except ValidationError as exc:
                for error in exc.errors():
                    check.add((section, index, *error["loc"]), _rule_for(error), error["msg"])
        cleaned[section] = good

    fleet: Fleet | None
    try:
        fleet = checked = Fleet.model_validate(cleaned)
    except ValidationError as exc:
        fleet = None
        for error in exc.errors():
            check.add(tuple(error["loc"]), _rule_for(error), error["msg"])
        # Leave the broken settings out (reported above) and check the items against
        # each other anyway, so a bad setting does not hide a topology mistake.
        for error in exc.errors():
            if error["loc"]:
                cleaned.pop(str(error["loc"][0]), None)
        cleaned.setdefault("name", "unnamed")
        try:
            checked = Fleet.model_validate(cleaned)
        except ValidationError:
            return None, check.found

    # A section that is not a list was reported above; the rules see it as empty.
    listed = {**data, **{section: _as_list(data.get(section)) for section in SECTIONS}}
    for loc, rule, message in topology_problems(checked, listed):
        check.add(loc, rule, message)
    return fleet, check.found


def _as_list(value: Any) -> list[Any]:
    """The items of a section, or none when it is not a list (reported elsewhere)."""
    return value if isinstance(value, list) else []
