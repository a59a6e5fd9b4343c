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
3. writer.py writes every file minipegx saves: ``save_params`` (model.safetensors alone),
   ``save_model`` (what ``PegasusX.save_pretrained`` writes: a folder transformers and minipegx load,
   tokenizer.json included), ``save_tokenizer`` and ``save_quantized``. The tokenizer's files are read
   and built in tokenizer_files.py, a quantized folder's in quantized.py.

Modules: read.py (files -> flat dict -> params), safetensors.py and torch_pickle.py (+ pickle_scan.py)
the formats, files.py what they share, names.py the names and shapes, writer.py the saves.

No torch, no transformers: NumPy, safetensors and ml_dtypes (and sentencepiece, plus the `tokenizers`
library to write tokenizer.json). docs/security.md states what loading
an untrusted checkpoint promises.
"""

from __future__ import annotations

from ..tree import flatten_params, unflatten_params
from .names import EMBED_ALIASES, LM_HEAD, SHARED, canonicalize, expected_shapes, validate
from .quantized import load_quantized, read_quant_config
from .read import WEIGHT_FILES, load_params, read_state_dict
from .torch_pickle import SafeUnpickler
from .writer import save_model, save_params, save_quantized, save_tokenizer

__all__ = ["read_state_dict", "expected_shapes", "load_params", "canonicalize", "validate", "save_params",
           "save_model", "save_tokenizer", "save_quantized", "load_quantized", "read_quant_config",
           "flatten_params", "unflatten_params", "SafeUnpickler", "WEIGHT_FILES", "SHARED", "EMBED_ALIASES",
           "LM_HEAD"]
