"""The package's shape, read from its source (ast; nothing is imported):

* no import cycle between modules (function-level imports included);
* no import runs up a floor (a lower layer never imports a higher one);
* no private name (``_x``) imported from another module;
* ``engine/`` holds loops only (under 2.2k lines); no function over 80 lines outside the
  Triton kernels.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "glsmamba"

# lowest first; a module may import its own floor and the floors below it
FLOORS = {
    "glsmamba": 0, "glsmamba.errors": 0, "glsmamba.fileio": 0, "glsmamba.progress": 0,
    "glsmamba.outputs": 0, "glsmamba.checkpoint": 0,
    "glsmamba.ops": 1,
    "glsmamba.models": 2, "glsmamba.data": 2, "glsmamba.synth": 2, "glsmamba.trackers": 2,
    "glsmamba.evaluation": 3,
    "glsmamba.engine": 4, "glsmamba.config": 4,
    "glsmamba.inference": 5, "glsmamba.export": 5,
    "glsmamba.recipes": 6, "glsmamba.preflight": 6,
    "glsmamba.commands": 7, "glsmamba.cli": 7, "glsmamba.__main__": 7,
}
MAX_FUNCTION_LINES = 80
MAX_ENGINE_LINES = 2200


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(imported glsmamba module, imported name or None) for every import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in MODULES else (base, alias.name))
    return [(module, item) for module, item in found if module.split(".")[0] == "glsmamba"]


GRAPH = {name: sorted({m for m, _ in _imports(name, path) if m in MODULES and m != name})
         for name, path in MODULES.items()}


def floor_of(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in FLOORS:
            return FLOORS[prefix]
    raise AssertionError(f"{module}: no floor; add its package to FLOORS in {__file__}")


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
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
                    work.append((child, iter(graph.get(child, ()))))
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
                    cycles.append(sorted(component))
    return cycles


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": ["b"], "b": []}) == []


def test_no_import_cycles():
    assert find_cycles(GRAPH) == []


def test_every_module_has_a_floor():
    for module in MODULES:
        floor_of(module)


def test_no_import_runs_up_a_floor():
    upward = [f"{module} (floor {floor_of(module)}) imports {target} (floor {floor_of(target)})"
              for module, targets in GRAPH.items() for target in targets
              if floor_of(target) > floor_of(module)]
    assert upward == []


def test_no_private_name_imported_across_modules():
    private = [f"{name} imports {item} from {module}"
               for name, path in MODULES.items() for module, item in _imports(name, path)
               if item and item.startswith("_") and not item.startswith("__") and module != name]
    assert private == []


def _is_triton_kernel(module: str, node: ast.AST) -> bool:
    """A Triton kernel: ``@triton.jit`` or a ``*_kernel`` of ops/scan_triton.py (jitted
    when the module loads, or run under the interpreter)."""
    return (any("triton" in ast.unparse(decorator) for decorator in node.decorator_list)
            or (module == "glsmamba.ops.scan_triton" and node.name.endswith("_kernel")))


def test_functions_are_short():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and not _is_triton_kernel(name, node):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_engine_holds_loops_only():
    lines = sum(len(p.read_text(encoding="utf-8").splitlines())
                for p in (PACKAGE / "engine").glob("*.py"))
    assert lines < MAX_ENGINE_LINES, f"engine/ has {lines} lines"
