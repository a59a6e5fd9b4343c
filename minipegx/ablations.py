"""Inference-time ablations of PEGASUS-X's encoder: the same weights, one part of its attention taken away.

    stagger_off   every layer uses the same, unstaggered blocks (stagger_local_blocks=False)
    globals_cut   tokens no longer read the global tokens: each block attends to itself only, so nothing
                  crosses a block border (without staggering) or crosses it only K/2 tokens per layer
    full          every token attends to every token: one block as long as the (padded) input, no stagger

Each is a change of config, and for globals_cut of the parameters too: the encoder takes G from the rows
of the global-token embedding, so with zero rows each block's softmax runs over its own tokens only.
The original model is untouched (a new PegasusX shares its arrays). tools/ablate.py does the same to a
transformers model; tests/test_ablate.py checks that the two agree.
"""

from __future__ import annotations

import dataclasses

from .blocks import padded_length
from .errors import ConfigError

ABLATIONS = ("none", "stagger_off", "globals_cut", "full")


def ablate(model, ablation: str, length: int | None = None):
    """A PegasusX like `model` with `ablation` (one of ABLATIONS); "full" needs `length`, the longest input
    in tokens, since its one block must cover it."""
    if ablation not in ABLATIONS:
        raise ConfigError(f"unknown ablation {ablation!r}; choose one of {', '.join(ABLATIONS)}")
    config, params = model.config, model.params
    if ablation == "stagger_off":
        config = config.replace(stagger_local_blocks=False)
    elif ablation == "full":
        if length is None:
            raise ConfigError("the full-attention ablation needs length= (its one block covers the whole input)")
        config = config.replace(stagger_local_blocks=False, block_size=padded_length(length, config.block_size))
    elif ablation == "globals_cut":
        encoder = params["model"]["encoder"]
        no_globals = {**encoder, "embed_global": {"weight": encoder["embed_global"]["weight"][:0]}}
        params = {**params, "model": {**params["model"], "encoder": no_globals}}
        config = config.replace(num_global_tokens=0)
    return dataclasses.replace(model, config=config, params=params)
