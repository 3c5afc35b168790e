"""``takes_options``: a dataclass of options shared by commands reads, parses and helps
exactly as if each command listed them, and the command gets them as one value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from cli.support import takes_options

ColourOption = Annotated[str | None, typer.Option("--colour", "-c", help="Paint it.")]
SizeOption = Annotated[int, typer.Option("--size", min=1, help="How big.")]


@dataclass(frozen=True)
class Shape:
    colour: ColourOption = None
    size: SizeOption = 3


def apps() -> tuple[typer.Typer, typer.Typer, list[object]]:
    """The same command twice: its options written out, and taken as a ``Shape``."""
    seen: list[object] = []
    written, grouped = typer.Typer(), typer.Typer()

    @written.command()
    def draw(
        name: Annotated[str, typer.Argument(help="What to draw.")],
        colour: ColourOption = None,
        size: SizeOption = 3,
        dry: Annotated[bool, typer.Option("--dry", help="Say, do not draw.")] = False,
    ) -> None:
        seen.append((name, Shape(colour, size), dry))

    @grouped.command("draw")
    @takes_options(Shape, "shape")
    def draw_grouped(
        name: Annotated[str, typer.Argument(help="What to draw.")],
        shape: Shape,
        dry: Annotated[bool, typer.Option("--dry", help="Say, do not draw.")] = False,
    ) -> None:
        seen.append((name, shape, dry))

    return written, grouped, seen


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["box"],
        ["box", "-c", "red", "--size", "5", "--dry"],
        ["box", "--size", "0"],  # refused by the option's own rule, in both
        ["--colour", "blue"],  # the argument is missing, in both
    ],
)
def test_grouped_options_behave_as_written_out(argv: list[str]) -> None:
    written, grouped, seen = apps()
    runner = CliRunner()
    by_hand = runner.invoke(written, argv, env={"COLUMNS": "100"})
    calls = list(seen)
    seen.clear()
    shared = runner.invoke(grouped, argv, env={"COLUMNS": "100"})
    assert (shared.exit_code, shared.output) == (by_hand.exit_code, by_hand.output)
    assert seen == calls
    if argv == ["--help"]:
        assert "--colour" in shared.output and "How big." in shared.output
    elif argv[0] == "box" and by_hand.exit_code == 0:
        assert len(seen) == 1 and isinstance(seen[0], tuple) and isinstance(seen[0][1], Shape)
