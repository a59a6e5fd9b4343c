"""Decoding with caches: encode once, prepare the cross keys/values once (decoding.prepare_decoding,
the same function the forward pass uses), then feed one token per row per step.

The self-attention cache is per decoder layer either the dynamic (k, v) value, grown by
concatenation, or, with static_cache=True, a decoder.StaticCache buffer [N, H, Smax, D] written in
place. Only the self-attention cache follows the beams (a gather on its rows); the cross keys/values
stay one per input.

Shape legend: B inputs, R rows per input, N = B*R decoder rows, S steps so far, Smax = max_length - 1,
T encoder tokens, H heads, D head dim, M d_model, V vocab.
"""

from __future__ import annotations

from .. import decoder as D
from ..backend import array_module, resolve_dtype, to_numpy
from ..decoding import Decoding, prepare_decoding
from ..inputs import as_ids, as_mask
from ..layers import linear
from ..precision import FiniteChecks


def prepare_inputs(model, input_ids, attention_mask):
    """Checked ids [B, T] and mask [B, T] (or None) on the model's backend."""
    ids = as_ids(model, input_ids, "input_ids")                                  # [B, T]
    mask = None if attention_mask is None else as_mask(model, attention_mask, ids.shape, "attention_mask")
    return ids, mask


def start_decoding(model, input_ids, attention_mask, rows, opts) -> tuple[Decoding, tuple | None]:
    """Encode once, prepare cross k/v and mask once, and make an empty self-attention cache for
    N = B*rows rows: None (dynamic) or, with static_cache, one StaticCache [N, H, Smax, D] per layer."""
    cfg, xp = model.config, model.xp
    enc = model.encode(input_ids, attention_mask).last_hidden_state        # [B, T, M]
    dec = prepare_decoding(model, enc, attention_mask)
    cache = None
    if opts.static_cache:
        H = cfg.decoder_attention_heads
        dtype = resolve_dtype(model.dtype, xp)                              # the compute dtype, as forward's
        cache = tuple(D.StaticCache.empty(enc.shape[0] * rows, H, opts.max_steps, cfg.d_model // H, dtype, xp)
                      for _ in range(cfg.decoder_layers))
    return dec, cache


def decode_step(model, dec, tokens, cache, checks=None):
    """Feed each row's last token: tokens [N] -> next-token logits [N, V] in float32, new cache.
    checks: a precision.FiniteChecks that collects the per-layer inf/NaN checks for the caller to settle
    (with the step's one transfer); None checks them here."""
    h, cache, *_ = D.decoder(model.params["model"], model.config, dec.kvs, dec.cross_mask, tokens[:, None],
                             caches=cache, check_finite=model.check_finite if checks is None else checks)
    logits = linear(h[:, -1], model.lm_head_weight)                              # [N, M] @ [M, V] -> [N, V]
    return logits.astype("float32"), cache


def step_checks(model):
    """A FiniteChecks for one decoding step (the model's check_finite rule, in its compute dtype)."""
    return FiniteChecks.of(model.check_finite, resolve_dtype(model.dtype, model.xp))


def fetch(checks, *scalars):
    """What the host decides a step on, in one device-to-host transfer: the integer scalars (0-d arrays)
    and the step's pending inf/NaN counts, which are settled here (NumericalError naming the layer).
    Returns the scalars as Python ints. This is a decoding step's one synchronisation on a GPU."""
    xp = array_module(scalars[0])
    parts = [xp.stack([s.astype("int64") for s in scalars])]
    counts = checks.counts()
    if counts is not None:
        parts.append(counts.reshape(-1))
    host = to_numpy(parts[0] if len(parts) == 1 else xp.concatenate(parts))    # [n + 2 * checks] int64
    n = len(scalars)
    if counts is not None:
        checks.settle(host[n:].reshape(-1, 2))
    return host[:n].tolist()


def reorder_cache(cache, index):
    """Beam search: row i of the new self-attention cache is row index[i] of the old, [N, H, S, D] gathers;
    a StaticCache is gathered in place over its filled steps."""
    if isinstance(cache[0], D.StaticCache):
        return tuple(c.reorder(index) for c in cache)
    return tuple((k[index], v[index]) for k, v in cache)
