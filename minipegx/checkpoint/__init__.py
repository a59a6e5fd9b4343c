"""Checkpoint files -> a nested tree of arrays with the Hugging Face names.

    params = load_params("pegasus-x-base/", config)
    params["model"]["encoder"]["layers"][3]["self_attn"]["q_proj"]["weight"]     # [M, M]

Three steps, each its own function:

1. ``read_state_dict`` reads the flat ``{name: array}`` dict a checkpoint stores, in whichever format
   the Hub uses: ``model.safetensors`` (safetensors.py), sharded safetensors or sharded .bin
   (``*.index.json``, here), or a pickled ``pytorch_model.bin`` (torch_pickle.py, after
   pickle_scan.py). Arrays keep their stored dtype (bf16 through ml_dtypes) and are read-only views of a
   memory map of the file, so a 2 GB checkpoint is not read into RAM twice. No reader runs code from
   the file, and each checks what the file claims against limits.py before it allocates anything.
2. ``load_params`` puts the names in canonical form and checks them (names.py: aliases, expected
   shapes, finite values), optionally casts, and nests the names (tree.py).
3. ``save_params`` writes a tree (or flat dict) back to ``model.safetensors`` that transformers loads.

No torch, no transformers: NumPy, safetensors and ml_dtypes only. docs/security.md states what loading
an untrusted checkpoint promises.
"""

from __future__ import annotations

import os

import numpy as np

from ..backend import resolve_dtype, to_numpy
from ..config import PegasusXConfig
from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError
from ..limits import as_path, bounded_repr, bounded_str, current, over_limit, read_json
from ..tree import flatten_params, unflatten_params
from .files import bfloat16, check_regular_file
from .names import EMBED_ALIASES, LM_HEAD, SHARED, canonicalize, expected_shapes, validate
from .safetensors import read_safetensors
from .torch_pickle import SafeUnpickler, read_torch

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



# ====================================================================== saving
def save_params(params_or_flat, path, metadata: dict | None = None) -> str:
    """Write a params tree (or flat dict) as model.safetensors with canonical names; returns the file.

    ``path`` is a directory (created if needed) or a file name ending in .safetensors. The metadata
    says format "pt", so transformers' from_pretrained accepts the file.
    """
    from safetensors.numpy import save_file

    path = as_path(path, CheckpointError)
    if not (metadata is None or isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                                   for k, v in metadata.items())):
        raise CheckpointError(f"metadata must be a dict of str to str (what safetensors stores), got "
                              f"{bounded_repr(metadata)}")
    if not path.endswith(".safetensors"):
        os.makedirs(path, exist_ok=True)
        path = os.path.join(path, "model.safetensors")
    flat = {k: np.ascontiguousarray(to_numpy(v)) for k, v in flatten_params(params_or_flat).items()}
    odd = [k for k, v in flat.items() if v.dtype.kind not in "biuf" and v.dtype != bfloat16()]
    if odd:
        raise CheckpointError(f"{bounded_str(odd[0])} is a {flat[odd[0]].dtype} array, not numbers; save_params "
                              "writes numeric arrays only")
    tmp = path + ".tmp"
    save_file(flat, tmp, metadata={"format": "pt", **(metadata or {})})
    os.replace(tmp, path)  # never leave a half-written model.safetensors behind
    return path



__all__ = ["read_state_dict", "expected_shapes", "load_params", "canonicalize", "validate", "save_params",
           "flatten_params", "unflatten_params", "SafeUnpickler", "WEIGHT_FILES", "SHARED", "EMBED_ALIASES",
           "LM_HEAD"]
