"""Every file minipegx saves is written here: model folders, tokenizer folders, quantized folders, weights.

    model.save_pretrained("my-model")          # -> save_model: what transformers' save_pretrained writes
    tok.save_pretrained("my-model")            # -> save_tokenizer: the tokenizer's four files
    save_quantized(model, "my-model-nf4")      # -> save_model(..., quantized="packed"): minipegx's own format
    save_params(params, "weights/")            # -> model.safetensors alone

A model folder holds config.json, generation_config.json, model.safetensors under transformers'
parameter names, and the tokenizer's spiece.model, tokenizer.json, tokenizer_config.json and
special_tokens_map.json, so ``minipegx.from_pretrained``, ``AutoModelForSeq2SeqLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` all load it. Each file is written to a temporary name and renamed
into place, so an interrupted save never leaves a half-written file under the real name.

Two decisions:

* A quantized model (loaded with quantize="int8" or "nf4") has no transformers form. Saving one asks
  which form you want, ``quantized="dequantize"`` (float32 weights that transformers loads; the
  rounding of the quantization stays in them) or ``quantized="packed"`` (the int8/NF4 tensors and
  quantization_config.json, 3-7x smaller, which only minipegx reads); with neither it raises
  CheckpointError naming both.
* Saving into the folder the model (or tokenizer) was loaded from raises CheckpointError unless
  ``overwrite=True``: the original checkpoint -- for a bundled demo model, the package's own data --
  would be replaced with no way back. Any other folder is created if needed and the files minipegx
  writes are replaced in it, as transformers does; other files in it are left alone.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np

from ..backend import to_numpy
from ..errors import CheckpointError, MiniPegxWarning
from ..limits import as_path, bounded_repr, bounded_str
from ..quantize import dequantize, is_quantized, quantization_mode
from ..tree import flatten_params
from .files import bfloat16
from .quantized import QUANT_CONFIG, packed_tensors, quant_config
from .tokenizer_files import load_spiece, read_folder, tokenizer_file_contents

QUANTIZED_FORMS = ("dequantize", "packed")


# ====================================================================== weights
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


# ====================================================================== model folders
def save_model(model, directory, tokenizer=None, *, quantized: str | None = None, overwrite: bool = False) -> str:
    """Write `model` (a PegasusX) as a Hugging Face folder; returns the directory.

    tokenizer: a minipegx Tokenizer whose files go along; None takes the tokenizer of the folder the model
    was loaded from (its spiece.model), and warns when there is none. quantized: for a quantized model,
    "dequantize" or "packed" (see the module docstring). overwrite: allow the model's own folder."""
    directory = _target(directory, model.path, overwrite, "the model")
    mode = quantization_mode(model.params)
    if quantized is not None and quantized not in QUANTIZED_FORMS:
        raise CheckpointError(f"quantized={bounded_repr(quantized)}: choose 'dequantize' or 'packed'")
    if mode is not None and quantized is None:
        raise CheckpointError(
            f"the model holds {mode}-quantized weights, which transformers cannot load; choose a form: "
            "save_pretrained(dir, quantized='dequantize') writes float32 weights that transformers loads (the "
            "quantization's rounding stays in them), quantized='packed' writes the packed tensors that only "
            "minipegx reads (docs/precision.md)")
    if quantized == "packed" and mode is None:
        raise CheckpointError("quantized='packed' but the model holds no quantized weights; load it with "
                              "quantize='int8' or 'nf4' first, or save it without quantized=")
    packed = quantized == "packed"
    if packed:
        flat = packed_tensors(model.params)
    else:  # float weights as they are (a bf16 model saves bf16); dequantized containers in float32
        flat = {k: to_numpy(dequantize(v) if is_quantized(v) else v) for k, v in flatten_params(model.params).items()}
    save_params(flat, directory, metadata={"quantization": mode} if packed else None)
    config = {"model_type": "pegasus_x", **model.config.to_dict()}
    config.setdefault("architectures", ["PegasusXForConditionalGeneration"])
    config["dtype"] = "float32" if packed else str(flat["model.shared.weight"].dtype)
    _write_json(directory, "config.json", config)
    _write_json(directory, "generation_config.json", model.generation_config or _generation_defaults(model.config))
    if packed:
        _write_json(directory, QUANT_CONFIG, quant_config(mode))
    elif os.path.isfile(os.path.join(directory, QUANT_CONFIG)):
        os.remove(os.path.join(directory, QUANT_CONFIG))  # else from_pretrained would read float weights as packed
    if tokenizer is None and model.path and os.path.isfile(os.path.join(model.path, "spiece.model")):
        _write_tokenizer_files(directory, *_folder_tokenizer(model.path))
    elif tokenizer is not None:
        _write_tokenizer_files(directory, *_tokenizer_parts(tokenizer))
    else:
        warnings.warn(f"{directory} holds no tokenizer: the model was not loaded from a folder with spiece.model; "
                      "pass tokenizer= (a minipegx Tokenizer) or call tok.save_pretrained(dir)", MiniPegxWarning,
                      stacklevel=3)
    return directory


def save_quantized(model, directory, overwrite: bool = False) -> str:
    """A quantized model in minipegx's packed form (save_model with quantized="packed"); returns the directory."""
    return save_model(model, directory, quantized="packed", overwrite=overwrite)


def _generation_defaults(config) -> dict:
    """generation_config.json for a model that had none: its special token ids, as transformers derives them."""
    return {"decoder_start_token_id": config.decoder_start_token_id, "eos_token_id": config.eos_token_id,
            "forced_eos_token_id": config.forced_eos_token_id, "pad_token_id": config.pad_token_id}


# ====================================================================== tokenizer folders
def save_tokenizer(tokenizer, directory, overwrite: bool = False) -> list[str]:
    """Write a minipegx Tokenizer's four files; returns their paths."""
    source = os.path.dirname(os.path.abspath(tokenizer.spiece_model_path))
    directory = _target(directory, source, overwrite, "the tokenizer")
    return _write_tokenizer_files(directory, *_tokenizer_parts(tokenizer))


def _tokenizer_parts(tokenizer) -> tuple:
    for name in ("sp", "spiece_model_path", "model_max_length", "clean_up_tokenization_spaces"):
        if not hasattr(tokenizer, name):
            raise CheckpointError(f"tokenizer= must be a minipegx Tokenizer (it has no {name}); load one with "
                                  "minipegx.Tokenizer.from_pretrained(dir)")
    return (tokenizer.sp, tokenizer.spiece_model_path, tokenizer.model_max_length,
            tokenizer.clean_up_tokenization_spaces)


def _folder_tokenizer(folder: str) -> tuple:
    spiece, max_len, cleanup = read_folder(folder)
    return load_spiece(spiece)[0], spiece, max_len, cleanup


def _write_tokenizer_files(directory, sp, spiece_path, model_max_length, cleanup) -> list[str]:
    contents = tokenizer_file_contents(sp, spiece_path, model_max_length, cleanup)
    return [_write_bytes(os.path.join(directory, name), data) for name, data in contents.items()]


# ====================================================================== files
def _target(directory, source, overwrite: bool, what: str) -> str:
    """The directory to write, created; the folder `what` was loaded from only with overwrite=True."""
    directory = as_path(directory, CheckpointError, "directory")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise CheckpointError(f"{directory} is a file; save_pretrained writes a folder: give a directory path")
    if (source and not overwrite and os.path.isdir(directory) and os.path.isdir(source)    # a source since removed
            and os.path.samefile(directory, source)):                                       # is no folder to keep
        raise CheckpointError(f"{directory} is the folder {what} was loaded from; saving there would replace the "
                              "original files for good: choose another folder, or pass overwrite=True")
    os.makedirs(directory, exist_ok=True)
    return directory


def _write_json(directory: str, name: str, obj) -> str:
    return _write_bytes(os.path.join(directory, name), (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def _write_bytes(path: str, data: bytes) -> str:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


__all__ = ["save_params", "save_model", "save_quantized", "save_tokenizer", "QUANTIZED_FORMS"]
