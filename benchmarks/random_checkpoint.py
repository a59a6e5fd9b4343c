"""One writer of random checkpoints for the benchmarks: config.json + model.safetensors at any shape,
made with NumPy alone (no torch model), initialized as transformers initializes PegasusX: every linear
and embedding weight normal(0, init_std), biases 0, layer norms weight 1 and bias 0."""

from __future__ import annotations

import json
import os

import numpy as np

from minipegx.checkpoint import expected_shapes, save_params
from minipegx.config import PegasusXConfig


def write_random_checkpoint(directory, config: dict, seed=0) -> str:
    """Write config.json (the dict as given, with model_type) and random weights into directory -> directory."""
    os.makedirs(directory, exist_ok=True)
    config = {"model_type": "pegasus_x", **config}
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    cfg = PegasusXConfig.from_dict(config)
    rng = np.random.default_rng(seed)
    flat = {}
    for name, dims in expected_shapes(cfg).items():   # a fixed order, so a seed gives the same weights
        if name.endswith("layer_norm.weight"):
            flat[name] = np.ones(dims, np.float32)
        elif name.endswith(".bias"):
            flat[name] = np.zeros(dims, np.float32)
        else:
            flat[name] = rng.standard_normal(dims, dtype=np.float32) * np.float32(cfg.init_std)
    save_params(flat, directory)
    return directory
