"""The shape of the ``sara`` package: no import cycle among its modules (every import counts:
module level, inside functions, under ``TYPE_CHECKING``; relative imports resolved), no import
from a higher layer, no file over 600 lines, ``sara/runs.py`` under 400, and every module named
in docs/ARCHITECTURE.md."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SARA = REPO / "sara"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"


def module_name(path: Path, root: Path) -> str:
    """``sara/core/sparse.py`` -> ``sara.core.sparse``; a package's ``__init__.py`` -> the
    package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` (module ``name``) imports anywhere in its body.
    ``from X import Y`` names ``X.Y`` when that is a module, else ``X``."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()

    def add(target: str) -> None:
        # the most specific known module that target names (a.b.c.func -> a.b.c)
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                add(full if full in known else mod)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    mods = package_modules(root)
    known = set(mods)
    return {name: imported_modules(path, name, known) for name, path in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (or a self-import), each as
    a sorted list (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1 or node in graph.get(node, ()):
                    cycles.append(sorted(comp))
    return sorted(cycles)


# --------------------------------------------------------------------------- the cycle finder
def test_find_cycles_on_synthetic_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]]
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}, "e": {"a", "c"}}) == [
        ["a", "b"], ["c", "d"]]


def test_import_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import low\n")
    (pkg / "sub" / "low.py").write_text("def f():\n    from ..high import g\n    return g\n")
    (pkg / "high.py").write_text("from pkg.sub.low import f\n\ndef g():\n    pass\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub"] == {"pkg.sub.low"}
    assert graph["pkg.sub.low"] == {"pkg.high"}
    assert graph["pkg.high"] == {"pkg.sub.low"}
    assert find_cycles(graph) == [["pkg.high", "pkg.sub.low"]]


# --------------------------------------------------------------------------- the package
def test_sara_has_no_import_cycle():
    graph = import_graph(SARA)
    assert len(graph) > 50 and graph["sara.runs"]  # the walk found the package
    assert find_cycles(graph) == []


#: The layers of docs/ARCHITECTURE.md: a module imports from its own layer or lower ones only.
LAYERS = {
    "sara.io": 0, "sara.env": 0, "sara.precision": 0,
    "sara.core": 1, "sara.data": 1, "sara.record": 1, "sara.rundir": 1,
    "sara.backbones": 2, "sara.methods": 2, "sara.metrics": 2,
    "sara.train": 3, "sara.sample": 3, "sara.evaluate": 3, "sara.budget": 3,
    "sara.analysis_math": 3, "sara.results": 3, "sara.stats": 3, "sara.lr_search": 3,
    "sara.weights": 3,
    "sara.hooks": 4, "sara.preflight": 4, "sara.export": 4, "sara.customisation": 4,
    "sara.runs": 5, "sara.cli": 5, "sara.customisation_checks": 5,
    "sara": 6,  # the package's public API
}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise KeyError(f"{module} is in no layer of LAYERS (add it, and to docs/ARCHITECTURE.md)")


def test_lower_layers_never_import_higher_ones():
    upward = sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                    for a, targets in import_graph(SARA).items() for b in targets
                    if layer_of(b) > layer_of(a))
    assert upward == []


def test_no_sara_file_over_600_lines_and_runs_under_400():
    lines = {str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines())
             for p in SARA.rglob("*.py")}
    assert {p: n for p, n in lines.items() if n > 600} == {}
    assert lines["sara/runs.py"] < 400


def test_every_sara_module_is_in_the_architecture_doc():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = [name for name, path in package_modules(SARA).items()
               if f"`{name}`" not in text
               and f"`{path.relative_to(REPO).as_posix()}`" not in text]
    assert missing == []
