"""No two modules of ours import each other, directly or round a ring, counting imports
made inside functions.

import-linter's contracts check layers between packages; an import inside a function
(used to keep ``ppo-dr --help`` fast, or to dodge a loop) is in its graph too, but a
ring of modules inside one layer is only caught here. ``TYPE_CHECKING`` imports are
no runtime dependency and are left out, as in the contracts.
"""

from __future__ import annotations

from collections.abc import Iterable

import grimp

PACKAGES = ("ppo_dr", "flows", "tasks", "deployments", "cli")


def import_rings(graph: grimp.ImportGraph) -> list[list[str]]:
    """The sets of modules that reach each other through imports (Tarjan's strongly
    connected components of more than one module), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    rings: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative, so a long import chain cannot hit the recursion limit.
        work: list[tuple[str, Iterable[str]]] = []

        def enter(module: str) -> None:
            index[module] = low[module] = len(index)
            stack.append(module)
            on_stack.add(module)
            work.append((module, iter(sorted(graph.find_modules_directly_imported_by(module)))))

        enter(start)
        while work:
            module, targets = work[-1]
            for target in targets:
                if target not in graph.modules:
                    continue
                if target not in index:
                    enter(target)
                    break
                if target in on_stack:
                    low[module] = min(low[module], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    ring = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        ring.append(member)
                        if member == module:
                            break
                    if len(ring) > 1:
                        rings.append(sorted(ring))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return rings


def test_no_module_of_ours_is_in_an_import_ring() -> None:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    assert len(graph.modules) > 100  # the packages were found, not an empty graph
    assert import_rings(graph) == []


def test_the_ring_finder_names_a_ring_and_only_the_ring() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [
        ("pkg.a", "pkg.b"),
        ("pkg.b", "pkg.c"),
        ("pkg.c", "pkg.a"),  # a -> b -> c -> a: one ring
        ("pkg.c", "pkg.d"),  # d hangs off the ring, outside it
        ("pkg.e", "pkg.f"),
        ("pkg.f", "pkg.e"),  # a second, two-module ring
    ]:
        graph.add_import(importer=importer, imported=imported)
    graph.add_module("pkg.alone")
    assert sorted(import_rings(graph)) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.e", "pkg.f"]]


def test_a_tree_of_imports_has_no_ring() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("pkg.a", "pkg.b"), ("pkg.a", "pkg.c"), ("pkg.b", "pkg.c")]:
        graph.add_import(importer=importer, imported=imported)
    assert import_rings(graph) == []
