"""The package's import graph: no cycles, and no function-level import of the package's own modules.

Function-level imports stay allowed for heavy or optional third-party engines (onnxruntime, openvino,
huggingface_hub, tokenizers, starlette, ...), which keep ``import granite_rt`` light; an import of a
granite_rt module inside a function exists only to dodge a cycle, so it is refused here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "granite_rt"
# Package modules that may be imported inside a function, each with its reason: they need an optional extra.
OPTIONAL_MODULES = {
    "granite_rt.server": "needs the server extra (starlette, uvicorn); `granite-rt serve` imports it when run",
    "granite_rt.ray": "needs the ray extra (ray, pyarrow); `granite-rt embed-corpus --engine ray` imports it when run",
}
# Modules allowed one lazy import of the package, each with its reason.
LAZY_IMPORTERS = {
    "granite_rt.devices": "the deprecated alias devices.info_report resolves granite_rt.report on first use",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def own_imports(path: Path) -> tuple[set[str], set[str]]:
    """(module-level, function-level) imports of granite_rt modules in ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top, nested = set(), set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in child.names]
            for target in targets:
                if target == "granite_rt" or target.startswith("granite_rt."):
                    (nested if in_function else top).add(target)
            if not _type_checking_block(child):
                visit(child, inner)

    visit(tree, False)
    return top, nested


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        top, nested = own_imports(path)
        if name in LAZY_IMPORTERS:
            nested = set()
        edges[name] = {t for t in top | nested if t in modules and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by depth-first search (each reported once, from its smallest node)."""
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                found.append(path[:])
            elif nxt > start and nxt not in path:
                walk(start, nxt, path + [nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return found


def test_the_package_has_no_import_cycle():
    edges = graph()
    # a package's __init__ importing its own submodules is not a cycle of concern: drop parent -> child
    trimmed = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in edges.items()}
    assert cycles(trimmed) == []


def test_no_function_level_import_of_the_package_itself():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        _, nested = own_imports(path)
        nested = {t for t in nested if not any(t == m or t.startswith(m + ".") for m in OPTIONAL_MODULES)}
        if nested and name not in LAZY_IMPORTERS:
            offenders[name] = sorted(nested)
    assert offenders == {}


def test_cycle_finder_finds_a_cycle():
    """The check above can fail: a two-module loop is reported."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
