"""The house's layering, read from the source: no import cycle between modules, and no module that
imports from a layer above its own (imports under ``if TYPE_CHECKING:`` are for type hints only
and are not counted; imports inside functions are)."""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "veracity"

# bottom first; a module may import from its own layer and the layers below it
LAYERS = [
    {"errors", "runtime", "cid", "logs"},
    {"exact"},
    {"models"},
    {"training"},
    {"workloads"},
    {"verify"},
    {"chain"},
    {"market"},
    {"blobs", "client", "sim"},
    {"node"},
    {"gateway"},
    {"agents", "data", "explorer"},
    {"cli"},
]


def _module_name(path: Path) -> str:
    parts = ["veracity", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside ``if TYPE_CHECKING:`` blocks."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    lines.add(getattr(sub, "lineno", -1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """Each module of ``veracity`` and the ``veracity`` modules it imports."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_only(tree)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "veracity"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                if base.split(".")[0] != "veracity":
                    continue
                for alias in node.names:  # `from veracity.exact import trace` imports a module
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in paths else base)
        graph[name] = {m for m in found if m in paths and m != name}
    return graph


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "cli"  # `veracity` itself: the CLI's entry
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS (and to docs/layout.md)")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_from_a_higher_layer():
    graph = import_graph()
    upward = [f"{m} ({LAYERS[layer(m)]}) imports {t} ({LAYERS[layer(t)]})"
              for m, targets in sorted(graph.items()) for t in sorted(targets) if layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("source,problem", [
    ("veracity/exact/x.py: from veracity.node import provider", "upward"),
    ("veracity/exact/a.py: from veracity.exact import b\nveracity/exact/b.py: from veracity.exact import a", "cycle"),
])
def test_the_checks_see_what_they_look_for(source, problem, tmp_path, monkeypatch):
    """The two checks fail on a made-up package with the fault they look for."""
    for entry in source.split("\n"):
        rel, code = entry.split(": ", 1)
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code + "\n")
    (tmp_path / "veracity" / "node").mkdir(exist_ok=True)
    (tmp_path / "veracity" / "node" / "provider.py").write_text("\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "veracity")
    graph = import_graph()
    if problem == "upward":
        assert layer("veracity.exact.x") < layer("veracity.node.provider") and "veracity.node.provider" in graph[
            "veracity.exact.x"]
    else:
        assert cycles(graph) == [["veracity.exact.a", "veracity.exact.b"]]
