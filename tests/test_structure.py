"""Package structure: no import cycles between geomprobe's modules.

Every module of the package is parsed with :mod:`ast` (nothing is imported or executed) and every
``import`` statement anywhere in it counts: module level, inside functions and classes, under ``try``
and under ``if TYPE_CHECKING:`` (a type-only import is still a dependency of the design).  Names are
resolved the way Python resolves them: relative imports against the importing module's package,
``from pkg import x`` to the submodule ``pkg.x`` when there is one (else to ``pkg`` itself), and
``import geomprobe as gp`` to the package ``__init__``.  Importing ``a.b.c`` also runs the parent
packages' ``__init__`` files; those implicit edges are left out (every submodule would otherwise form a
cycle with the package that re-exports it).  A cycle is a strongly connected component with more than
one module, or a module importing itself.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

import geomprobe

Edge = tuple[str, str]


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file, for every ``.py`` file under the package folder ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = path
    return out


def _known(name: str, modules) -> str | None:
    """``name`` if it is a module of the package, else its longest known prefix (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def imports_of(name: str, path: Path, modules) -> dict[str, int]:
    """Modules of the package that ``name`` imports anywhere in its source -> first line doing so."""
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    package_parts = name.split(".") if is_package else name.split(".")[:-1]
    found: dict[str, int] = {}

    def add(target: str | None, line: int):
        if target is not None and target not in found:
            found[target] = line

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_known(alias.name, modules), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > len(package_parts):
                    raise ValueError(f"{path}:{node.lineno}: relative import beyond the top package")
                base_parts = package_parts[:len(package_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if _known(base, modules) is None:
                continue  # a third-party or standard-library module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # ``from . import x`` imports the submodule x; ``from .m import f`` imports m
                add(sub if alias.name != "*" and sub in modules else _known(base, modules), node.lineno)
    return found


def import_graph(root: Path, package: str) -> tuple[dict[str, set[str]], dict[Edge, str]]:
    """Module -> modules it imports, and where each edge comes from (``file:line``)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    where: dict[Edge, str] = {}
    for name, path in modules.items():
        for target, line in imports_of(name, path, modules).items():
            graph[name].add(target)
            where[(name, target)] = f"{path.relative_to(root.parent)}:{line}"
    return graph, where


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in a deterministic order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            advanced = False
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return sorted(out)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The components that are cycles: several modules, or one module importing itself."""
    return [c for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph.get(c[0], ())]


def shortest_cycle(graph: dict[str, set[str]], start: str, members: set[str]) -> list[str]:
    """A shortest import path start -> ... -> start inside ``members`` (breadth first)."""
    prev: dict[str, str] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [start, *reversed(path[:-1]), start] if v != start else [start, start]
            if w not in seen:
                seen.add(w)
                prev[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is on no cycle")


def describe(graph: dict[str, set[str]], where: dict[Edge, str]) -> str:
    """Every cycle: its modules, one shortest loop through it, and every import edge inside it."""
    lines = []
    for comp in cycles(graph):
        members = set(comp)
        lines.append(f"cycle of {len(comp)} module(s): {', '.join(comp)}")
        lines.append("  e.g. " + " -> ".join(shortest_cycle(graph, comp[0], members)))
        for a in comp:
            for b in sorted(graph[a] & members):
                lines.append(f"  {a} -> {b}  ({where.get((a, b), '?')})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- the test


def test_geomprobe_has_no_import_cycles():
    root = Path(geomprobe.__file__).parent
    graph, where = import_graph(root, "geomprobe")
    assert len(graph) > 30 and "geomprobe.data.forms" in graph  # the walk found the package
    found = cycles(graph)
    assert not found, "import cycles between geomprobe modules:\n" + describe(graph, where)


# --------------------------------------------------------------------------------------------- the detector


def test_scc_on_synthetic_graphs():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"f"}, "g": {"a"}, "h": set()}
    assert cycles(g) == [["a", "b", "c"], ["d", "e"], ["f"]]
    assert shortest_cycle(g, "a", {"a", "b", "c"}) == ["a", "b", "c", "a"]
    assert shortest_cycle(g, "f", {"f"}) == ["f", "f"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []  # a chain is no cycle
    # a long chain closed at the end: one component, and no recursion limit
    n = 5000
    chain = {str(i): {str(i + 1)} for i in range(n)}
    chain[str(n)] = {"0"}
    assert [len(c) for c in cycles(chain)] == [n + 1]


def _write(root: Path, files: dict[str, str]):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, "utf-8")


def test_detector_finds_planted_cycles_in_a_package(tmp_path):
    pkg = tmp_path / "pk"
    _write(pkg, {
        "__init__.py": "from . import a\nfrom .sub import helper\n",
        "a.py": "import os\nfrom .sub.deep import thing\n",
        "sub/__init__.py": "from .helper import x\n",
        "sub/helper.py": "x = 1\n",
        # function-level `import pk as p`: an edge to the package __init__, which imports a -> sub.deep
        "sub/deep.py": "thing = 2\ndef f():\n    import pk as p\n    return p\n",
        # `from .. import b2` is the submodule b2; b2 imports b1 back under TYPE_CHECKING
        "b1.py": "from . import b2\n",
        "b2.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pk.b1 import B\n",
        # relative two levels up, inside a class body, and a self-import
        "sub/c.py": "class C:\n    from ..d import y\n",
        "d.py": "def g():\n    from .sub import c\ny = 0\n",
        "selfish.py": "def h():\n    from . import selfish\n",
        "clean.py": "import json\nfrom .sub.helper import x\n",
    })
    graph, where = import_graph(pkg, "pk")
    assert graph["pk"] == {"pk.a", "pk.sub.helper"}  # `from .sub import helper`: the submodule
    assert graph["pk.sub"] == {"pk.sub.helper"}
    assert graph["pk.clean"] == {"pk.sub.helper"}  # json is not a package module
    assert graph["pk.sub.c"] == {"pk.d"}  # `from ..d import y`: the module d, not a submodule y
    assert where[("pk.sub.deep", "pk")] == "pk/sub/deep.py:3"
    assert cycles(graph) == [
        ["pk", "pk.a", "pk.sub.deep"],
        ["pk.b1", "pk.b2"],
        ["pk.d", "pk.sub.c"],
        ["pk.selfish"],
    ]
    text = describe(graph, where)
    assert "pk.sub.deep -> pk  (pk/sub/deep.py:3)" in text and "pk.b2 -> pk.b1  (pk/b2.py:3)" in text
    # breaking the loops empties the report
    _write(pkg, {"sub/deep.py": "thing = 2\n", "b2.py": "B = 1\n", "d.py": "y = 0\n", "selfish.py": "\n"})
    graph, where = import_graph(pkg, "pk")
    assert cycles(graph) == [] and describe(graph, where) == ""


def test_relative_import_beyond_the_top_is_an_error(tmp_path):
    _write(tmp_path / "pk", {"__init__.py": "", "m.py": "from .. import x\n"})
    with pytest.raises(ValueError, match="beyond the top"):
        import_graph(tmp_path / "pk", "pk")
