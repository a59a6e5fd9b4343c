"""What the decoder needs from the encoder before its first step, prepared in one place for the forward
pass (model.forward) and for the search (generation): per decoder layer the cross-attention keys and
values, and the additive cross-attention mask.

The cross keys/values are computed once per input, [B, H, T, D], and shared by that input's R decoder
rows (beams or return sequences), which sit side by side in the decoder's [B*R, ...] arrays: the rows
never copy them (decoder.cross_attention stacks an input's R*S queries against its one set of keys).

Shape legend: B inputs, R rows per input, T encoder tokens, H heads, D head dim, M d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import decoder as D
from .backend import resolve_dtype
from .layers import additive_mask


@dataclass(frozen=True)
class Decoding:
    """kvs: per decoder layer (k, v), each [B, H, T, D]; cross_mask: additive [B, 1, 1, T] or None."""
    kvs: tuple
    cross_mask: object


def prepare_decoding(model, encoder_hidden, attention_mask=None, kvs=None) -> Decoding:
    """Cross keys/values for every decoder layer from the encoder's last hidden state [B, T, M] (or the
    given ones, e.g. from past_key_values) and the cross mask from the encoder's 1/0 attention mask [B, T],
    in the model's compute dtype."""
    xp = model.xp
    if kvs is None:
        H = model.config.decoder_attention_heads
        layers = model.params["model"]["decoder"]["layers"]
        kvs = tuple(D.cross_kv(encoder_hidden, p["encoder_attn"], H) for p in layers)  # each 2 x [B, H, T, D]
    cross_mask = None if attention_mask is None else \
        additive_mask(attention_mask, resolve_dtype(model.dtype, xp), xp)[:, None, None, :]  # [B, 1, 1, T]
    return Decoding(tuple(kvs), cross_mask)
