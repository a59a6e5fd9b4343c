"""Writing what training produces: a model directory that minipegx and transformers both load, and resumable
checkpoints (the model directory plus the optimizer's moments and the run's history).

    save_model_dir(model, "out/", tokenizer_dir="pegasus-x-base/")
    # out/config.json, generation_config.json, model.safetensors (float32), spiece.model, tokenizer_config.json

save_model_dir writes the files save_pretrained writes, through checkpoint.save_params. (When minipegx gains its
own save_pretrained, save_model_dir should become a call to it.)

A checkpoint is a folder CHECKPOINTS/step-000120/: a complete model directory, optimizer.safetensors (the AdamW
moments, "m.NAME" and "v.NAME") and trainer_state.json (step, optimizer step counts, the history of losses). It is
written under a temporary name and renamed into place, so a run killed at any moment leaves only complete
checkpoints behind, and a rerun resumes from the newest one.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np

from ..backend import to_numpy
from ..errors import CheckpointError
from ..tree import flatten_params

MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "spiece.model", "tokenizer_config.json")
STEP_DIR = re.compile(r"^step-(\d{6,})$")


def save_model_dir(model, out_dir, tokenizer_dir, dtype="float32") -> str:
    """config.json, generation_config.json, model.safetensors (in `dtype`; None: the parameters' own),
    spiece.model and tokenizer_config.json (both copied from tokenizer_dir) in out_dir, each file written whole
    then renamed into place."""
    from ..checkpoint import save_params

    os.makedirs(out_dir, exist_ok=True)
    flat = {k: to_numpy(v) for k, v in flatten_params(model.params).items()}
    if dtype is not None:
        flat = {k: v.astype(dtype, copy=False) for k, v in flat.items()}
    stored = str(next(iter(flat.values())).dtype)
    config = {**model.config.to_dict(), "architectures": ["PegasusXForConditionalGeneration"], "dtype": stored}
    _write_json(os.path.join(out_dir, "config.json"), config)
    cfg = model.config
    generation = model.generation_config or {
        "decoder_start_token_id": cfg.decoder_start_token_id, "eos_token_id": cfg.eos_token_id,
        "forced_eos_token_id": cfg.forced_eos_token_id, "pad_token_id": cfg.pad_token_id}
    _write_json(os.path.join(out_dir, "generation_config.json"), generation)
    save_params(flat, out_dir)
    same = os.path.realpath(tokenizer_dir) == os.path.realpath(out_dir)
    for name in ("spiece.model", "tokenizer_config.json"):
        src = os.path.join(tokenizer_dir, name)
        if os.path.isfile(src):
            if not same:
                shutil.copyfile(src, os.path.join(out_dir, name + ".tmp"))
                os.replace(os.path.join(out_dir, name + ".tmp"), os.path.join(out_dir, name))
        elif name == "spiece.model":
            raise CheckpointError(f"no spiece.model in {tokenizer_dir}: the fine-tuned model needs its tokenizer")
    return out_dir


def save_checkpoint(checkpoints_dir, step: int, model, optimizer, tokenizer_dir, state: dict, keep: int = 2) -> str:
    """CHECKPOINTS/step-NNNNNN/: the model directory, optimizer.safetensors, trainer_state.json; written under a
    temporary name and renamed (atomic), then all but the newest `keep` checkpoints are removed."""
    from safetensors.numpy import save_file

    final = os.path.join(checkpoints_dir, f"step-{step:06d}")
    tmp = os.path.join(checkpoints_dir, f".step-{step:06d}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_dir(model, tmp, tokenizer_dir, dtype=None)      # the training dtype: a resumed run goes on exactly
    opt = optimizer.state_dict()
    arrays = {k: np.ascontiguousarray(v) for k, v in opt.pop("arrays").items()}
    save_file(arrays, os.path.join(tmp, "optimizer.safetensors"), metadata={"format": "np"})
    _write_json(os.path.join(tmp, "trainer_state.json"), {**state, "step": step, "optimizer": opt},
                compact=True)                      # the history grows by a row a step: ~120 bytes each
    shutil.rmtree(final, ignore_errors=True)       # a checkpoint of this step from a run that was cut short
    os.replace(tmp, final)
    for old in list_checkpoints(checkpoints_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(os.path.join(checkpoints_dir, old), ignore_errors=True)
    return final


def list_checkpoints(checkpoints_dir) -> list[str]:
    """The complete checkpoints' folder names, oldest first."""
    if not os.path.isdir(checkpoints_dir):
        return []
    names = [n for n in os.listdir(checkpoints_dir) if STEP_DIR.match(n)
             and os.path.isfile(os.path.join(checkpoints_dir, n, "trainer_state.json"))]
    return sorted(names, key=lambda n: int(STEP_DIR.match(n).group(1)))


def load_checkpoint(path) -> tuple[dict, dict]:
    """(trainer_state, optimizer state for AdamW.load_state_dict) of a checkpoint folder."""
    from safetensors.numpy import load_file

    from ..limits import read_json

    state = read_json(os.path.join(path, "trainer_state.json"), "trainer_state.json", CheckpointError)
    opt = dict(state.pop("optimizer"))
    opt["arrays"] = load_file(os.path.join(path, "optimizer.safetensors"))
    return state, opt


def _write_json(path, obj, compact=False) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":")) if compact else json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)


__all__ = ["save_model_dir", "save_checkpoint", "list_checkpoints", "load_checkpoint", "MODEL_FILES"]
