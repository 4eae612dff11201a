"""The package's module-level imports form no cycle (issue 8): a module imported at the top of
another, in collapse_ray/, never imports it back, directly or through others. A package's
``__init__`` importing its own submodules is what a package is, not a cycle: the edge from a
submodule to its parent package is left out, the parent's edges to its submodules are kept."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "collapse_ray"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    found = set()
    for node in ast.parse(path.read_text()).body:   # module level only: imports inside functions are lazy
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found


def test_module_level_imports_have_no_cycle():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {m: {d for d in top_level_imports(p, modules) if d != m and not m.startswith(d + ".")}
             for m, p in files.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
