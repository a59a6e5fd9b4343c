"""The package's layout: its import graph has no circle, every module imports on its own in a fresh
interpreter (so no module works only because another one happened to be imported first), and the
cross-attention keys/values are built in one place for the forward pass and the search."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import minipegx

ROOT = Path(minipegx.__file__).parent
PACKAGE = "minipegx"


def module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in ROOT.rglob("*.py"))


def imports(path):
    """The minipegx modules a file imports, at module level or inside functions (lazy imports count too).
    `from . import x` names module x when x is one, else the package itself."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            found |= set(subs) if subs else {base}
    # Importing a.b.c also runs a.b's __init__, unless the importer is inside a.b (already running).
    out = set()
    for target in found:
        out.add(target)
        parent = target.rpartition(".")[0]
        if parent not in (PACKAGE, "") and parent in MODULES and not name.startswith(parent + "."):
            out.add(parent)
    # The root package's __init__ runs before any submodule: an edge to it says nothing.
    return out - {PACKAGE, name}


def graph():
    return {module_name(p): imports(p) for p in ROOT.rglob("*.py")}


def find_cycle(edges):
    """A list of modules forming a circle, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_accepts_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_relative_imports_of_modules_and_of_names():
    g = graph()
    assert "minipegx.generation.options" in g["minipegx.generation.search"]      # from .options import ...
    assert "minipegx.decoder" in g["minipegx.decoding"]                          # from . import decoder as D
    assert "minipegx.generation" in g["minipegx.model"]                           # from .generation import ...


def test_no_import_circle_anywhere_in_the_package():
    assert find_cycle(graph()) is None


def test_generation_and_input_checks_never_import_the_model():
    g = graph()
    for m in MODULES:
        if m.startswith("minipegx.generation") or m in ("minipegx.inputs", "minipegx.decoding"):
            assert "minipegx.model" not in g[m], m


@pytest.mark.parametrize("module", [m for m in MODULES if not m.endswith("__main__")])  # __main__ runs the CLI
def test_every_module_imports_alone_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def calls_to(function):
    """{module: number of calls to `function`} over the package (a bare name or an attribute)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                if (f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)) == function:
                    found[module_name(path)] = found.get(module_name(path), 0) + 1
    return found


def test_cross_keys_values_and_the_cross_mask_are_prepared_in_one_place():
    assert calls_to("cross_kv") == {"minipegx.decoding": 1}
    users = calls_to("prepare_decoding")
    assert set(users) == {"minipegx.model", "minipegx.generation.cache"}
