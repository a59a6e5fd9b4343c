"""Checkpoint files -> the flat {name: array} dict they store, and -> the checked, nested params tree.

``read_state_dict`` reads whichever format the Hub uses; ``load_params`` canonicalizes, validates, casts
and nests (see the package docstring).
"""

from __future__ import annotations

import os

import numpy as np

from ..backend import resolve_dtype
from ..config import PegasusXConfig
from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError
from ..limits import as_path, bounded_repr, bounded_str, current, over_limit, read_json
from ..tree import unflatten_params
from .files import check_regular_file
from .names import canonicalize, expected_shapes, validate
from .safetensors import read_safetensors
from .torch_pickle import read_torch

# Weight files looked for in a checkpoint directory, most preferred first.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


# ====================================================================== reading
def read_state_dict(path) -> dict[str, np.ndarray]:
    """The flat {name: array} dict stored at ``path`` (a checkpoint directory or one weights file)."""
    path = as_path(path, CheckpointError)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"no checkpoint at {path}: the path does not exist")
    if os.path.isdir(path):
        for name in WEIGHT_FILES:
            if os.path.isfile(os.path.join(path, name)):
                return read_state_dict(os.path.join(path, name))
        raise CheckpointNotFoundError(f"no weights in checkpoint directory {path}: looked for "
                                      f"{', '.join(WEIGHT_FILES)}")
    check_regular_file(path)
    if path.endswith(".index.json"):
        return _read_sharded(path)
    return _read_weights_file(path)


def _read_weights_file(path: str) -> dict[str, np.ndarray]:
    return read_safetensors(path) if path.endswith(".safetensors") else read_torch(path)


def _read_sharded(index_path: str) -> dict[str, np.ndarray]:
    """Merge the shards an index's weight_map names (every name must be found in its shard).

    A shard is a weights file in the index's own folder: never another index (an index naming itself
    would recurse forever), never a path elsewhere."""
    index = read_json(index_path, "the shard index", CheckpointError)
    weight_map = index.get("weight_map")
    if not (isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values())):
        raise CheckpointError(f"{index_path} is not a valid shard index (its weight_map must be an object of "
                              "tensor name -> shard file name); re-download it")
    shards = list(dict.fromkeys(weight_map.values()))  # unique, in order
    if len(shards) > current().max_shards:
        raise CheckpointError(f"{index_path}: " + over_limit("the shard count", len(shards), "max_shards"))
    folder = os.path.dirname(index_path)
    out: dict[str, np.ndarray] = {}
    for shard in shards:
        if os.path.basename(shard) != shard or shard in ("", ".", "..") or \
                not shard.endswith((".safetensors", ".bin")):
            raise CheckpointError(f"{index_path} names the shard {bounded_repr(shard)}; a shard must be a "
                                  ".safetensors or .bin file name in the index's own folder")
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            raise CheckpointNotFoundError(f"shard {bounded_str(shard)} named by {index_path} does not exist; the "
                                          "download is incomplete: re-download the checkpoint")
        check_regular_file(shard_path)
        for name, x in _read_weights_file(shard_path).items():
            if name in out:
                raise CheckpointError(f"tensor {bounded_str(name)} is stored in two shards of {index_path}; "
                                      "re-download it")
            out[name] = x
    lost = [n for n in weight_map if n not in out]
    if lost:
        raise CheckpointError(f"{index_path} lists {len(lost)} tensor(s) its shards do not hold, e.g. "
                              f"{bounded_str(lost[0])} (in {bounded_str(weight_map[lost[0]])}); the shard looks "
                              "truncated: re-download it")
    return out


# ====================================================================== loading
def load_params(path, config=None, dtype=None) -> dict:
    """Read, canonicalize, validate (names, shapes, finite values), cast, and nest a checkpoint.

    config: a minipegx PegasusXConfig (None: read config.json beside the weights).
    dtype: None keeps the stored dtype (arrays stay read-only views of the file); else a float dtype
    ('float32', 'float16', 'bfloat16' or a NumPy dtype) to cast to, one copy per tensor.
    """
    path = as_path(path, CheckpointError)
    if config is None:
        config = PegasusXConfig.from_json_file(path if os.path.isdir(path) else os.path.dirname(path))
    elif not isinstance(config, PegasusXConfig):
        raise ConfigError(f"config must be a PegasusXConfig (PegasusXConfig.from_dict(d) builds one from a dict), "
                          f"not a {type(config).__name__}")
    target = _float_dtype(dtype) if dtype is not None else None
    flat = canonicalize(read_state_dict(path), config, source=path)
    validate(flat, config, source=path)
    order = {name: i for i, name in enumerate(expected_shapes(config))}
    flat = {k: flat[k] for k in sorted(flat, key=lambda k: order.get(k, len(order)))}  # the model's order
    if target is not None:
        flat = {k: v if v.dtype == target else v.astype(target) for k, v in flat.items()}
    return unflatten_params(flat)


def _float_dtype(dtype) -> np.dtype:
    """'float32' | 'float16' | 'bfloat16' | 'float64', as a name or a NumPy dtype."""
    try:
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except (TypeError, ValueError):
        name = bounded_repr(dtype)
    if name in ("float64", "fp64", "double"):
        return np.dtype("<f8")
    return resolve_dtype(name)  # BackendError for anything else


__all__ = ["WEIGHT_FILES", "read_state_dict", "load_params"]
