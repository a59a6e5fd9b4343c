"""What a difference most likely means: known bugs recognised by their output, and per-function advice.

A "variant" is the reference run with one classic mistake made on purpose (usually by changing an
input, so the reference code itself computes the mistaken value); when the student's output equals a
variant's, the hint names that mistake. Otherwise the hint comes from where the outputs differ (only
the padded row, only the last block, a constant factor, NaN) and from the function's usual pitfalls.
Shape legend as in cases.py.
"""

from __future__ import annotations

import math

import numpy as np

from .cases import REFERENCE, D


def _scaled_queries(args, at):
    """The same call with q_proj scaled by sqrt(D): what an attention that forgets the D^-1/2 scaling gives."""
    args = list(args)
    p = dict(args[at])
    p["q_proj"] = {"weight": p["q_proj"]["weight"] * np.float32(math.sqrt(D))}
    args[at] = p
    return tuple(args)


def _unbiased_layer_norm(x, p, eps=1e-5):
    y = x - x.mean(axis=-1, keepdims=True)
    return y / np.sqrt(y.var(axis=-1, ddof=1, keepdims=True) + eps) * p["weight"] + p["bias"]


def _eps_outside(x, p, eps=1e-5):
    y = x - x.mean(axis=-1, keepdims=True)
    return y / (np.sqrt((y * y).mean(axis=-1, keepdims=True)) + eps) * p["weight"] + p["bias"]


def _half_dim_sinusoid(start, length, dim, xp, dtype="float32"):
    half = dim // 2
    freq = np.exp(-math.log(10000.0) * np.arange(half) / half)
    angle = np.arange(start, start + length)[:, None] * freq
    return np.concatenate([np.sin(angle), np.cos(angle)], -1).astype(dtype)


def _interleaved_sinusoid(start, length, dim, xp, dtype="float32"):
    out = REFERENCE["sinusoidal_positions"](start, length, dim, xp, dtype)
    half = dim // 2
    mixed = np.empty_like(out)
    mixed[:, 0::2], mixed[:, 1::2] = out[:, :half], out[:, half:]
    return mixed


def _stagger_unmasked(x, mask, block_size):
    h = block_size // 2
    return np.pad(x, ((0, 0), (h, h), (0, 0))), np.pad(mask, ((0, 0), (h, h)))


def _stagger_full_block(x, mask, block_size):
    return REFERENCE["stagger"](x, mask, 2 * block_size)


# name -> [(what the mistake is, function computing the mistaken outputs from the case's args)]
VARIANTS = {
    "layer_norm": [
        ("the unbiased variance (ddof=1, as torch.var's default); LayerNorm divides by M, not M - 1",
         _unbiased_layer_norm),
        ("eps added outside the square root; LayerNorm computes sqrt(var + eps)", _eps_outside)],
    "sinusoidal_positions": [
        ("frequencies exp(-ln(10000) i / (M/2)); PEGASUS-X divides by M/2 - 1", _half_dim_sinusoid),
        ("sin and cos interleaved (even/odd features); PEGASUS-X puts all sines first, then all cosines",
         _interleaved_sinusoid)],
    "stagger": [
        ("the padding left unmasked (0 in the additive mask); it must be finfo(dtype).min", _stagger_unmasked),
        ("a shift of a whole block; a staggered layer shifts by half a block, K/2", _stagger_full_block)],
    "ffn": [("the tanh approximation of GELU; ACT2FN['gelu'] is the exact one, with erf",
             lambda x, p, act: REFERENCE["ffn"](x, p, "gelu_new" if act == "gelu" else act))],
    "global_local_attention": [
        ("queries not scaled by D^-1/2", lambda *a: REFERENCE["global_local_attention"](*_scaled_queries(a, 3)))],
    "self_attention": [
        ("scores not scaled by D^-1/2", lambda *a: REFERENCE["self_attention"](*_scaled_queries(a, 1)))],
    "cross_attention": [
        ("scores not scaled by D^-1/2", lambda *a: REFERENCE["cross_attention"](*_scaled_queries(a, 2)))],
    "encoder_layer": [
        ("the staggered layer's blocks not shifted (no stagger, or the shift not undone)",
         lambda x, g, mask, p, config, staggered, *rest: REFERENCE["encoder_layer"](x, g, mask, p, config, False))],
}

ADVICE = {
    "layer_norm": "normalize over the last axis only: (x - mean) / sqrt(biased var + eps) * weight + bias.",
    "softmax": "subtract each row's max before exp (scores of 100 overflow float32's exp) and normalize over "
               "the last axis; masked scores are finfo.min, so their exp is 0.",
    "ffn": "fc2(act(fc1(x))) with both biases; W is [out, in] as stored, so x @ W.T.",
    "sinusoidal_positions": "angle = position * exp(-ln(10000) i / (M/2 - 1)), sines in the first M/2 features, "
                            "cosines in the second; positions start at `start`.",
    "stagger": "pad K/2 zero tokens at both ends of the token axis and K/2 masked (finfo.min) entries at both ends "
               "of the mask.",
    "global_local_attention": "each block's keys are the G global keys then its own K keys; the global tokens "
                              "see all G+P keys; the token mask applies to keys, per batch row; queries are "
                              "scaled by D^-1/2; globals come first in the probabilities.",
    "encoder_layer": "pre-LayerNorm: the tokens and the global tokens each get their own attention layer norm, "
                     "share the attention weights, the FFN and its layer norm; stagger before the attention, "
                     "cut K/2 from both ends after it.",
    "self_attention": "a cache (k, v) holds the past steps: concatenate the new keys/values after them on the "
                      "step axis (axis 2) and return the grown cache; scale the scores by D^-1/2.",
    "cross_kv": "project the encoder output with k_proj and v_proj (no biases) and split the heads: [B, H, T, D].",
    "cross_attention": "rows b*R .. b*R+R-1 are input b's beams: each attends its own input's keys and mask "
                       "(x has B*R rows, the keys B).",
    "decoder_layer": "pre-LayerNorm: self-attention, then cross-attention, then the FFN, each on its own layer "
                     "norm and added to the residual; return the self-attention cache.",
    "beam_step": "the 2W best continuations of all beams together (log-prob + beam score, top over W*V); the W "
                 "best that do not end in EOS become the beams, in score order.",
}


def matching_variant(name, args, got, same):
    """The description of a known mistake whose outputs equal `got` (same(got, want) decides), or None."""
    for what, variant in VARIANTS.get(name, ()):
        try:
            if same(got, variant(*args)):
                return what
        except Exception:  # a variant that does not apply to this case
            continue
    return None


def where_hint(index, axes, bad, got, want):
    """A hint from where and how the outputs differ: NaN/inf, a constant factor, one batch row, a block."""
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not np.isfinite(got64).all() and np.isfinite(want64).all():
        return "your output holds NaN or inf where the reference is finite (exp of a large score? -inf in a mask?)."
    ratio = got64[bad] / np.where(want64[bad] == 0, np.nan, want64[bad])
    if ratio.size and np.isfinite(ratio).all() and np.ptp(ratio) < 1e-3 * abs(ratio.mean()):
        return f"your output is the expected one times {ratio.mean():.4g}: a missing or extra scale factor?"
    rows = set(np.nonzero(bad)[0].tolist()) if axes[:1] == "b" else set()
    if got64.shape[0] == 2 and rows == {1}:
        return ("only batch row 1, the padded row, differs: is the mask applied per row, to the keys, and does "
                "each row use its own keys?")
    if got64.shape[0] == 4 and rows and rows <= {2, 3}:
        return "only rows 2-3 (input 1's beams) differ: does each row attend its own input's keys and mask?"
    if "t" in axes and got64.shape[axes.index("t")] == 12:                    # 3 blocks of K=4
        tokens = np.nonzero(bad)[axes.index("t")]
        if tokens.min() >= 8:
            return "only the last block (tokens 8-11, the partial one) differs: is it attended like the others?"
    return None
