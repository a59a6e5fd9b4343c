"""The parameter tree: the checkpoint's dotted names as nested dicts, layer lists as Python lists.

    flat = {"model.encoder.layers.3.fc1.weight": w}
    unflatten_params(flat)["model"]["encoder"]["layers"][3]["fc1"]["weight"] is w

One home for the three helpers every module that walks parameters uses (checkpoint, backend,
precision, quantize).
"""

from __future__ import annotations


def unflatten_params(flat: dict) -> dict:
    """``{"model.encoder.layers.3.fc1.weight": x}`` -> ``params["model"]["encoder"]["layers"][3]["fc1"]["weight"]``."""
    tree: dict = {}
    for name, x in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = x

    def lists(node):
        if not isinstance(node, dict):
            return node
        node = {k: lists(v) for k, v in node.items()}
        if node and all(k.isdecimal() for k in node) and sorted(map(int, node)) == list(range(len(node))):
            return [node[str(i)] for i in range(len(node))]
        return node

    return lists(tree)


def flatten_params(tree, prefix: str = "") -> dict:
    """The inverse of unflatten_params (a flat dict passes through unchanged)."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out = {}
    for k, v in items:
        out.update(flatten_params(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def tree_map(fn, tree):
    """Apply fn to every array leaf of a nested dict / list parameter tree."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, v) for v in tree)
    return fn(tree)


__all__ = ["flatten_params", "unflatten_params", "tree_map"]
