"""Inference-time ablations of a trained PEGASUS-X (a tool, not the runtime): the same weights, one part of
the encoder's attention pattern taken away.

    stagger_off   every layer uses the same, unstaggered blocks (stagger_local_blocks=False)
    globals_cut   tokens no longer read the global tokens (each block attends to itself only), so nothing
                  crosses a block border through the globals
    full          every token attends to every token (one block as long as the document, no stagger)

minipegx has them as `minipegx.ablations.ablate(model, ablation, length)` (config changes; for globals_cut
the global-token embedding sliced to zero rows). This module does the same to a transformers
PegasusXForConditionalGeneration (the evaluation's model, tools/eval_demo.py), returning a changed copy:
globals_cut there is a subclass of transformers' attention whose local attention gets zero global keys
(global_len 0); the global tokens are still computed, but nothing reads them. tests/test_ablate.py checks
that the two agree.
"""

from __future__ import annotations

import copy
import dataclasses

from minipegx.ablations import ABLATIONS
from minipegx.errors import ConfigError


def _cut_globals_class():
    from transformers.models.pegasus_x import modeling_pegasus_x as hf

    class LocalOnlyAttention(hf.PegasusXGlobalLocalAttention):
        """PegasusXGlobalLocalAttention whose tokens attend to their own block only (no global keys)."""

        def compute_local_attention_representations(self, global_k, global_v, local_q, local_k, local_v, mask, dim):
            no_globals = dataclasses.replace(dim, global_len=0)
            return super().compute_local_attention_representations(
                global_k[:, :, :0], global_v[:, :, :0], local_q, local_k, local_v, mask, no_globals)

    return LocalOnlyAttention


def set_block_size(model, block_size: int) -> None:
    """Give every encoder layer (and the encoder's padding) blocks of `block_size` tokens, in place."""
    model.config.block_size = block_size
    for layer in model.model.encoder.layers:
        layer.block_size = block_size
        layer.self_attn.block_size = block_size


def ablated(model, ablation: str, length: int | None = None):
    """A copy of `model` with `ablation` (one of ABLATIONS) applied. "full" needs its one block to cover the
    input: give `length` (tokens), or call full_attention_for before each batch."""
    if ablation not in ABLATIONS:
        raise ConfigError(f"unknown ablation {ablation!r}; choose one of {', '.join(ABLATIONS)}")
    model = copy.deepcopy(model)
    if ablation in ("stagger_off", "full"):
        model.config.stagger_local_blocks = False
        for layer in model.model.encoder.layers:
            layer.stagger_blocks_this_layer = False
    if ablation == "globals_cut":
        cls = _cut_globals_class()
        for layer in model.model.encoder.layers:
            layer.self_attn.__class__ = cls
    if ablation == "full" and length is not None:
        full_attention_for(model, length)
    return model


def full_attention_for(model, length: int, block_size: int = 64) -> None:
    """Make the "full" ablation's single block cover `length` tokens (rounded up to `block_size`), in place."""
    set_block_size(model, -(-length // block_size) * block_size)

