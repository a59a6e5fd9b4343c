"""The exercise notebook's rubric and how a submission's notebook is read: shared by the grader (which never
runs a submission's code) and the worker (which does, in the submission's own process)."""

from __future__ import annotations

import ast
import json
import re

from ..errors import InputError

# Points per exercise function: the exercises' headings state them too (a test keeps the two equal).
RUBRIC = {
    "layer_norm": 2, "ffn": 2,                                    # 1 · layer norm and the FFN
    "sinusoidal_positions": 2,                                    # 2 · the sinusoid
    "global_local_attention": 4,                                  # 3 · block-local attention, global tokens
    "stagger": 2, "encoder_layer": 3,                             # 4 · staggered blocks, the encoder layer
    "self_attention": 3, "cross_kv": 1, "cross_attention": 3,     # 5 · the decoder's attention and caches
    "beam_step": 4,                                               # 6 · one step of beam search
    "layer_norm_backward": 2, "softmax_backward": 2,              # 7 · backward passes: layer norm, softmax,
    "global_local_attention_backward": 4,                         #     block-local attention
}
SKIP_TAG = "grader_skip"           # the check cells: the grader checks the functions itself
MAX_NOTEBOOK_BYTES = 20 * 2**20    # a submission is source code; anything larger is refused unread


class NotANotebook(InputError):
    """The submission is not a readable notebook (not JSON, too large, no cells)."""


def read_notebook(path) -> dict:
    """The notebook's JSON as a dict, or NotANotebook saying why not."""
    with open(path, "rb") as f:
        data = f.read(MAX_NOTEBOOK_BYTES + 1)
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise NotANotebook(f"the file is larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB")
    try:
        nb = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise NotANotebook(f"not a notebook: not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotANotebook("not a notebook: no list of cells")
    return nb


def _source(cell):
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src if isinstance(src, str) else ""


def code_cells(nb) -> list:
    """(index, source) of every code cell the grader runs: all but the check cells (tagged SKIP_TAG)."""
    out = []
    for i, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        tags = (cell.get("metadata") or {}).get("tags") or []
        if isinstance(tags, list) and SKIP_TAG in tags:
            continue
        out.append((i, _source(cell)))
    return out


_MAGIC = re.compile(r"^\s*[%!]")


def own_definitions(nb) -> dict:
    """{rubric name: None if the notebook defines it with its own `def`, else why not}, read from the source
    alone (nothing runs). The last top-level binding of the name must be a `def` whose body calls no function
    of the same name (minipegx's own: `L.layer_norm(...)`). Code that reaches minipegx's function another way
    (an alias, getattr) is caught when it runs instead (harvest watches for minipegx's function)."""
    last = {}
    for _, source in code_cells(nb):
        try:
            tree = ast.parse("\n".join("" if _MAGIC.match(line) else line for line in source.splitlines()))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in tree.body:
            for name in RUBRIC:
                binding = _binds(node, name)
                if binding is not None:
                    last[name] = (node, binding)
    verdicts = {}
    for name in RUBRIC:
        if name not in last:
            verdicts[name] = None            # no definition at all: harvest says "not a function"
            continue
        node, binding = last[name]
        if binding != "def":
            verdicts[name] = f"`{name}` is bound by {binding}, not defined by a `def` of your own"
        elif any(isinstance(n, ast.Call) and _called_name(n.func) == name for n in ast.walk(node)):
            verdicts[name] = f"your `def {name}` calls a function named {name} (minipegx's own?)"
        else:
            verdicts[name] = None
    return verdicts


def _called_name(func):
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _binds(node, name):
    """How a top-level statement binds `name`: "def", a description, or None."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
        return "def"
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            if (alias.asname or alias.name.split(".")[0]) == name or alias.name == "*":
                return "an import"
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.ClassDef, ast.With, ast.For, ast.If,
                         ast.Try, ast.While)):
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and sub.id == name and isinstance(sub.ctx, ast.Store):
                return "an assignment"
            if isinstance(sub, ast.ClassDef) and sub.name == name:
                return "a class"
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and sub.name == name and sub is not node:
                return "a def inside another statement"
            if isinstance(sub, (ast.Import, ast.ImportFrom)) and any(
                    (a.asname or a.name.split(".")[0]) == name or a.name == "*" for a in sub.names):
                return "an import"
    return None
