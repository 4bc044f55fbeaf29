"""The package's shape: no import cycles between imbal's modules (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import imbal

ROOT = Path(imbal.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """imbal modules imported anywhere in the file (function bodies too), except under
    `if TYPE_CHECKING:`, which never runs."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_block(node):
            continue
        stack.extend(ast.iter_child_nodes(node))
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            # the longest imbal module the name points to ("imbal.x.y.attr" -> "imbal.x.y")
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != me and name != "imbal":
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            # a package's __init__ importing its own submodules is how packages register parts
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "imbal.training.trainer" in graph
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_packages_are_laid_out_by_concern():
    for package in ("data", "models", "remedies", "pretext", "training", "study", "bench"):
        assert (ROOT / package / "__init__.py").is_file(), package


def test_no_private_torch_api_and_no_hand_written_optimizers():
    """Well-kept parts over copies: optimizers and schedules are torch.optim's, and imbal uses
    torch's public API only (the private modules change between releases without notice)."""
    private = ("torch." + "_C", "torch." + "_dynamo")  # split: this file is not under imbal/
    found = [f"{path.relative_to(ROOT.parent)}: {name}" for path in sorted(ROOT.rglob("*.py"))
             for name in private if name in path.read_text()]
    assert found == []
    assert not (ROOT / "training" / "optimizers.py").exists()
