"""No import cycles among the modules of minifit/ and kernels/, counting imports made
inside functions too (a lazy import hides a cycle, it does not remove it). An import of a
module's own parent package is not an edge: the parent is always initialised first."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_graph():
    mods = {}
    for pkg in ("minifit", "kernels"):
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            mods[".".join(parts)] = (f, is_pkg)
    graph = {m: set() for m in mods}
    for m, (f, is_pkg) in mods.items():
        base = m.split(".") if is_pkg else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                pkg = base[:len(base) - node.level + 1] if node.level else []
                stem = ".".join(pkg + (node.module.split(".") if node.module else []))
                targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and not m.startswith(t + "."):
                    graph[m].add(t)
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
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
                out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = module_graph()
    # the one deliberate exception: Tensor's operators (a + b, a[i], ...) are the functional
    # ops, which Tensor's methods import when called (functional is built on Tensor)
    graph["minifit.tensor"] = {t for t in graph["minifit.tensor"] if not t.startswith("minifit.functional")}
    assert cycles(graph) == []


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_kernels_never_import_minifit():
    graph = module_graph()
    assert not {(m, t) for m, ts in graph.items() if m.startswith("kernels") for t in ts if t.startswith("minifit")}


def test_kernel_tests_never_import_minifit():
    """tests/kernels holds the kernels to kernels.reference on arrays alone (the engine on
    the CUDA target is tested in tests/cuda)."""
    for f in sorted((ROOT / "tests" / "kernels").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "minifit" for n in names), f.name
