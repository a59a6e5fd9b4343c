"""The files of a quantized model (quantize.py holds the int8/NF4 formats; this module reads and writes them).

A folder written by ``save_quantized`` (or ``PegasusX.save_pretrained(dir, quantized="packed")``) holds
model.safetensors with, for each quantized weight ``<name>``, the tensors ``<name>.qweight`` and
``<name>.scale`` (int8) or ``<name>.absmax`` (nf4), every other tensor in float32, and
quantization_config.json naming the mode. Only minipegx reads it: transformers has no such format.
"""

from __future__ import annotations

import os

import numpy as np

from ..backend import to_numpy
from ..errors import CheckpointError
from ..limits import read_json
from ..quantize import MODES, NF4_BLOCK, _container, is_quantized
from ..tree import flatten_params, unflatten_params
from .names import expected_shapes
from .read import read_state_dict

QUANT_CONFIG = "quantization_config.json"
FORMAT_VERSION = 1


def packed_tensors(params) -> dict:
    """The flat {name: NumPy array} a quantized folder stores: each container as its named tensors,
    every other parameter in float32 (exact for fp16/bf16 values; any loader reads it)."""
    flat = {}
    for name, v in flatten_params(params).items():
        if is_quantized(v):
            flat.update({f"{name}.{k}": to_numpy(a) for k, a in v.tensors().items()})
        else:
            flat[name] = to_numpy(v).astype(np.float32)
    return flat


def quant_config(mode: str) -> dict:
    """quantization_config.json of a folder of `mode` ('int8' | 'nf4')."""
    return {"quant_method": "minipegx", "mode": mode, "block_size": NF4_BLOCK if mode == "nf4" else None,
            "format_version": FORMAT_VERSION,
            "not_quantized": "embeddings (tied LM head), global tokens, biases, layer norms"}


def read_quant_config(path):
    """The quantization mode of a directory written by save_quantized, or None for a plain checkpoint."""
    file = os.path.join(os.fspath(path), QUANT_CONFIG)
    if not os.path.isfile(file):
        return None
    qc = read_json(file, QUANT_CONFIG, CheckpointError)
    mode = qc.get("mode")
    if qc.get("quant_method") != "minipegx" or mode not in MODES or qc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{file} describes {qc.get('quant_method')!r} {mode!r} version "
                              f"{qc.get('format_version')!r}; minipegx reads its own int8/nf4 format, version "
                              f"{FORMAT_VERSION}")
    return mode


def load_quantized(path, config):
    """The params tree (NumPy arrays and containers) of a directory written by save_quantized."""
    mode = read_quant_config(path)
    flat = dict(read_state_dict(os.fspath(path)))
    shapes = expected_shapes(config)
    out, problems = {}, []
    for name, shape in shapes.items():
        parts = {k: flat.pop(f"{name}.{k}") for k in ("qweight", "scale", "absmax") if f"{name}.{k}" in flat}
        if parts:
            w = _container(mode, parts, shape)
            if w is None:
                problems.append(f"{name}: quantized tensors {sorted(parts)} do not fit {mode} of shape {list(shape)}")
            out[name] = w
        elif name in flat:
            x = flat.pop(name)
            if tuple(x.shape) != shape:
                problems.append(f"{name}: expected shape {list(shape)}, found {list(x.shape)}")
            elif not np.isfinite(x).all():
                problems.append(f"{name} holds NaN or inf")
            out[name] = x
        else:
            problems.append(f"missing {name}")
    problems += [f"unexpected {name}" for name in flat]
    if problems:
        raise CheckpointError(f"{path} is not a valid {mode} checkpoint for its config.json:\n  "
                              + "\n  ".join(problems[:10]))
    return unflatten_params(out)


__all__ = ["QUANT_CONFIG", "FORMAT_VERSION", "packed_tensors", "quant_config", "read_quant_config",
           "load_quantized"]
