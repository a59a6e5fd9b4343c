"""Resumable checkpoints of a training run: the model folder plus the optimizer's moments and the run's history.

    save_checkpoint("out/checkpoints", 120, model, optimizer, tokenizer, {"history": [...]})
    # out/checkpoints/step-000120/: model.safetensors, config.json, ..., optimizer.safetensors, trainer_state.json

Every model folder is written by the model's own ``save_pretrained`` (minipegx.checkpoint.writer, the one
writer for every save): a checkpoint's weights in the training dtype, so a resumed run goes on exactly.

A checkpoint is a folder CHECKPOINTS/step-000120/: a complete model folder (config.json,
generation_config.json, model.safetensors and the tokenizer's files), optimizer.safetensors (the AdamW moments,
"m.NAME" and "v.NAME") and trainer_state.json (step, optimizer step counts, the history of losses). It is written
under a temporary name and renamed into place, so a run killed at any moment leaves only complete checkpoints
behind, and a rerun resumes from the newest one.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np

from ..errors import CheckpointError

STEP_DIR = re.compile(r"^step-(\d{6,})$")


def save_checkpoint(checkpoints_dir, step: int, model, optimizer, tokenizer, state: dict, keep: int = 2) -> str:
    """CHECKPOINTS/step-NNNNNN/: the model folder (model.save_pretrained, with `tokenizer`, a minipegx
    Tokenizer), optimizer.safetensors, trainer_state.json; written under a temporary name and renamed (atomic),
    then all but the newest `keep` checkpoints are removed."""
    from safetensors.numpy import save_file

    final = os.path.join(checkpoints_dir, f"step-{step:06d}")
    tmp = os.path.join(checkpoints_dir, f".step-{step:06d}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, tokenizer=tokenizer)     # the training dtype: a resumed run goes on exactly
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


__all__ = ["save_checkpoint", "list_checkpoints", "load_checkpoint"]
