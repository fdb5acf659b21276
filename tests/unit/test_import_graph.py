"""No import cycle between confide's modules, counting every import statement.

Imports under ``if TYPE_CHECKING:`` and inside functions count too: a cycle hidden that
way still means neither module can be read, tested or replaced without the other. The
graph is built from the source with ``ast`` (nothing is imported): an import of a
package is an import of its ``__init__``, and ``from confide.x import y`` where ``y`` is
a submodule is an import of ``confide.x.y`` (the package's ``__init__`` only when a
name that is not a submodule comes from it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import confide

PACKAGE = Path(confide.__file__).resolve().parent


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) ``from … import`` source."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a confide module."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, modules: dict[str, Path]) -> Iterator[str]:
    """The confide modules one module imports, by any import statement anywhere."""
    path = modules[module]
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found = _known(alias.name, modules)
                if found:
                    yield found
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, is_package, node.level, node.module)
            found = _known(source, modules)
            if found is None:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield submodule if submodule in modules else found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {
        module: {target for target in imports_of(module, modules) if target != module}
        for module in modules
    }


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def a_cycle(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through a component's first module, for the message."""
    members = set(component)
    start = component[0]
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                return [*paths[node], start]
            if child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    return component  # unreachable for a strongly connected component


def describe_cycles() -> list[str]:
    modules = module_names()
    graph = import_graph(modules)
    return [
        f"{' -> '.join(a_cycle(c, graph))}   (component: {', '.join(c)})"
        for c in strongly_connected(graph)
    ]


def test_no_import_cycle_between_confide_modules() -> None:
    cycles = describe_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg import a\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import x\n"
    )
    (package / "b.py").write_text("def f():\n    from pkg.sub import c\n")
    (package / "sub" / "c.py").write_text("from ..a import y\nimport pkg.b\n")
    (package / "d.py").write_text("from . import a\n")
    modules = module_names(package)
    graph = import_graph(modules)
    assert graph["pkg.a"] == {"pkg.b"}  # under TYPE_CHECKING, relative
    assert graph["pkg.b"] == {"pkg.sub.c"}  # inside a function, a submodule
    assert graph["pkg.sub.c"] == {"pkg.a", "pkg.b"}  # two levels up; import x.y
    assert graph["pkg.d"] == {"pkg.a"}  # "from . import a" names the submodule
    assert graph["pkg.sub"] == {"pkg.a"}  # "from pkg import a": a package's submodule
    (package / "e.py").write_text("from pkg.sub import c, thing\n")
    assert import_graph(module_names(package))["pkg.e"] == {"pkg.sub", "pkg.sub.c"}
    assert strongly_connected(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    assert a_cycle(["pkg.a", "pkg.b", "pkg.sub.c"], graph) == [
        "pkg.a",
        "pkg.b",
        "pkg.sub.c",
        "pkg.a",
    ]
