"""What a difference most likely means: known bugs recognised by their output, and per-function advice.

A "variant" is the reference run with one classic mistake made on purpose (usually by changing an
input, so the reference code itself computes the mistaken value); when the student's output equals a
variant's, the hint names that mistake. Otherwise the hint comes from where the outputs differ (only
the padded row, only the last block, a constant factor, NaN) and from the function's usual pitfalls.
Shape legend as in cases.py.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .. import layers as _L
from .cases import REFERENCE, D
from .harvest import fresh


def _split_wrong(x, num_heads):
    """[B, T, M] -> [B, H, T, D] by a plain reshape, no transpose: each 'head' mixes tokens and features."""
    B, T, M = x.shape
    return x.reshape(B, num_heads, T, M // num_heads)


def _merge_wrong(x):
    B, H, T, Dh = x.shape
    return x.reshape(B, T, H * Dh)


def _softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _attention(x, g, mask, p, num_heads, block_size, output_attentions=True, *, scale=True, mask_on="keys",
               global_keys=True, wrong_heads=False):
    """A plain global-local attention with one mistake switched on, for recognising a student's output."""
    split = _split_wrong if wrong_heads else _L.split_heads
    merge = _merge_wrong if wrong_heads == "both" else _L.merge_heads
    B, P, M = x.shape
    G, H, K = g.shape[1], num_heads, block_size
    N, Dh = P // K, M // H
    both = np.concatenate([g, x], axis=1)                                              # [B, G+P, M]
    q = split(both @ p["q_proj"]["weight"].T, H) * np.float32(Dh ** -0.5 if scale else 1.0)  # [B, H, G+P, D]
    k, v = split(both @ p["k_proj"]["weight"].T, H), split(both @ p["v_proj"]["weight"].T, H)
    gmask = np.concatenate([np.zeros((B, G), mask.dtype), mask], axis=1)              # [B, G+P]
    gprobs = _softmax(q[:, :, :G] @ k.swapaxes(-1, -2) + gmask[:, None, None, :])         # [B, H, G, G+P]
    qb = q[:, :, G:].reshape(B, H, N, K, Dh)                                          # [B, H, N, K, D]
    kb, vb = k[:, :, G:].reshape(B, H, N, K, Dh), v[:, :, G:].reshape(B, H, N, K, Dh)
    lmask = mask.reshape(B, 1, N, K)
    if global_keys:
        kb = np.concatenate([np.broadcast_to(k[:, :, None, :G], (B, H, N, G, Dh)), kb], axis=3)  # [B, H, N, G+K, D]
        vb = np.concatenate([np.broadcast_to(v[:, :, None, :G], (B, H, N, G, Dh)), vb], axis=3)
        keymask = np.concatenate([np.zeros((B, 1, N, G), mask.dtype), lmask], axis=-1)    # [B, 1, N, G+K]
    else:
        keymask = lmask
    s = qb @ kb.swapaxes(-1, -2)                                                       # [B, H, N, K, G+K or K]
    s = s + (lmask[..., :, None] if mask_on == "queries" else keymask[..., None, :])
    lprobs = _softmax(s)
    tout = (lprobs @ vb).reshape(B, H, P, Dh)
    out = merge(np.concatenate([gprobs @ v, tout], axis=2)) @ p["out_proj"]["weight"].T  # [B, G+P, M]
    return out[:, G:], out[:, :G], {"local": lprobs, "global": gprobs}


def _self_attention(x, p, num_heads, mask, cache=None, *, wrong_heads=False, cache_out="grown"):
    """A plain decoder self-attention with one mistake switched on."""
    split = _split_wrong if wrong_heads else _L.split_heads
    merge = _merge_wrong if wrong_heads == "both" else _L.merge_heads
    Dh = x.shape[-1] // num_heads
    q, k, v = (split(x @ p[n]["weight"].T, num_heads) for n in ("q_proj", "k_proj", "v_proj"))  # [B, H, S, D]
    new_k, new_v = k, v
    if cache is not None:
        k, v = np.concatenate([cache[0], k], axis=2), np.concatenate([cache[1], v], axis=2)  # [B, H, L, D]
    probs = _softmax(q @ k.swapaxes(-1, -2) * np.float32(Dh ** -0.5) + mask)              # [B, H, S, L]
    out = merge(probs @ v) @ p["out_proj"]["weight"].T
    returned = {"grown": (k, v), "new only": (new_k, new_v),
                "past only": cache if cache is not None else (k[:, :, :0], v[:, :, :0]),
                "one step short": (k[:, :, :-1], v[:, :, :-1])}[cache_out]
    return out, probs, returned


def _cross_kv_wrong_heads(encoder_hidden, p, num_heads):
    return (_split_wrong(encoder_hidden @ p["k_proj"]["weight"].T, num_heads),
            _split_wrong(encoder_hidden @ p["v_proj"]["weight"].T, num_heads))


def _beam_with(**changes):
    def variant(state, log_probs, opts, rng=None):
        return REFERENCE["beam_step"](state, log_probs, replace(opts, **changes), rng)
    return variant


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


def _layer_norm_backward(dy, cache, *, means=("g", "xhat"), ddof=0, gamma=True, dweight="xhat"):
    """layer_norm_backward with one mistake switched on: a mean term left out, means over M - ddof, the
    weight's factor dropped, the weight's gradient without x̂."""
    xhat, rstd, w = cache
    M = dy.shape[-1]
    rows = tuple(range(dy.ndim - 1))
    g = dy * w if gamma else dy                                                   # [..., M]
    dx = g.copy()
    if "g" in means:
        dx -= g.sum(axis=-1, keepdims=True) / (M - ddof)
    if "xhat" in means:
        dx -= xhat * (g * xhat).sum(axis=-1, keepdims=True) / (M - ddof)
    grads = {"weight": (dy * xhat if dweight == "xhat" else dy).sum(axis=rows), "bias": dy.sum(axis=rows)}
    return rstd * dx, grads


def _softmax_backward(dp, probs, *, term="p", axis=-1):
    """softmax_backward with one mistake: the sum term left out or without p, or summed over another axis."""
    if term is None:
        return probs * dp
    inner = dp * probs if term == "p" else dp
    return probs * (dp - inner.sum(axis=axis, keepdims=True))


def _attention_backward(dx_out, dg_out, cache, *, global_keys="sum", global_queries=True, scale=True,
                        query_mask=False):
    """global_local_attention_backward written plainly, with one mistake switched on: the global keys' and
    values' gradient from one block only or averaged over blocks, the global queries' attention left out of
    the keys' and values' gradient, the queries' D^-1/2 dropped, padded queries' gradient zeroed (the mask
    applied on the query axis)."""
    q, k, v, gp, lp = cache.q, cache.k, cache.v, cache.global_probs, cache.local_probs
    B, H, N, K, GK = lp.shape
    G, Dh, P = GK - K, q.shape[-1], N * K
    dout = np.concatenate([dg_out, dx_out], axis=1)                                # [B, G+P, M]
    g_out = {"weight": dout.reshape(-1, dout.shape[-1]).T @ cache.out.x.reshape(-1, dout.shape[-1])}
    dheads = _L.split_heads(dout @ cache.out.w, H)                                 # [B, H, G+P, D]
    dlocal = dheads[:, :, G:].reshape(B, H, N, K, Dh)
    kb, vb = _block(k, G, K), _block(v, G, K)                                      # [B, H, N, G+K, D]
    dvb = lp.swapaxes(-1, -2) @ dlocal
    dp = dlocal @ vb.swapaxes(-1, -2)
    ds = lp * (dp - (dp * lp).sum(-1, keepdims=True))                              # [B, H, N, K, G+K]
    if query_mask:                                                                 # padded keys' columns are 0
        kept = (gp[:, :1, :1, G:] > 0).reshape(B, 1, N, K, 1)
        ds = ds * kept
    dqb, dkb = ds @ kb, ds.swapaxes(-1, -2) @ q[:, :, G:].reshape(B, H, N, K, Dh)
    pick = {"sum": lambda a: a.sum(axis=2), "mean": lambda a: a.mean(axis=2), "first": lambda a: a[:, :, 0]}
    dq = np.concatenate([np.zeros_like(q[:, :, :G]), dqb.reshape(B, H, P, Dh)], axis=2)
    dk = np.concatenate([pick[global_keys](dkb[:, :, :, :G]), dkb[:, :, :, G:].reshape(B, H, P, Dh)], axis=2)
    dv = np.concatenate([pick[global_keys](dvb[:, :, :, :G]), dvb[:, :, :, G:].reshape(B, H, P, Dh)], axis=2)
    dglobal = dheads[:, :, :G]
    dp = dglobal @ v.swapaxes(-1, -2)
    ds = gp * (dp - (dp * gp).sum(-1, keepdims=True))                              # [B, H, G, G+P]
    dq[:, :, :G] += ds @ k
    if global_queries:
        dv = dv + gp.swapaxes(-1, -2) @ dglobal
        dk = dk + ds.swapaxes(-1, -2) @ q[:, :, :G]
    dq = dq * (Dh ** -0.5 if scale else 1.0)
    dboth, grads = 0.0, {"out_proj": g_out}
    for name, d, c in (("q_proj", dq, cache.proj[0]), ("k_proj", dk, cache.proj[1]), ("v_proj", dv, cache.proj[2])):
        d2 = _L.merge_heads(d)                                                     # [B, G+P, M]
        grads[name] = {"weight": d2.reshape(-1, d2.shape[-1]).T @ c.x.reshape(-1, c.x.shape[-1])}
        dboth = dboth + d2 @ c.w
    return dboth[:, G:], dboth[:, :G], grads


def _unstaggered_here(dx_out, dg_out, cache):
    """The reference's gradients with K/2 positions cut from both ends of dx, as if this function undid the stagger."""
    dx, dg, grads = REFERENCE["global_local_attention_backward"](dx_out, dg_out, cache)
    h = cache.local_probs.shape[3] // 2
    return dx[:, h:-h], dg, grads


def _block(k, G, K):
    B, H, GP, Dh = k.shape
    N = (GP - G) // K
    return np.concatenate([np.broadcast_to(k[:, :, None, :G], (B, H, N, G, Dh)),
                           k[:, :, G:].reshape(B, H, N, K, Dh)], axis=3)


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
        ("queries not scaled by D^-1/2 (multiply the queries by D ** -0.5 before the product)",
         lambda *a: _attention(*a, scale=False)),
        ("the mask applied on the query axis; it hides padded *keys*: add it as [B, 1, N, 1, G+K] (and "
         "[B, 1, 1, G+P] for the global rows), so it broadcasts over the queries",
         lambda *a: _attention(*a, mask_on="queries")),
        ("the global keys left out of the blocks: each token attends the G global tokens *and* its block, "
         "G+K keys, global keys first", lambda *a: _attention(*a, global_keys=False)),
        ("the heads split by a plain reshape to [B, H, T, D]; split [B, T, M] as [B, T, H, D], then move the "
         "heads forward (transpose(0, 2, 1, 3), or L.split_heads), and undo it the same way",
         lambda *a: _attention(*a, wrong_heads="split")),
        ("the heads split and merged by plain reshapes; split [B, T, M] as [B, T, H, D] and move the heads "
         "forward (L.split_heads), merge by the inverse (L.merge_heads)",
         lambda *a: _attention(*a, wrong_heads="both"))],
    "self_attention": [
        ("scores not scaled by D^-1/2", lambda *a: REFERENCE["self_attention"](*_scaled_queries(a, 1))),
        ("the heads split by a plain reshape to [B, H, S, D]; split [B, S, M] as [B, S, H, D], then move the "
         "heads forward (L.split_heads)", lambda *a: _self_attention(*a, wrong_heads="split")),
        ("the heads split and merged by plain reshapes; split [B, S, M] as [B, S, H, D] and move the heads "
         "forward (L.split_heads), merge by the inverse (L.merge_heads)",
         lambda *a: _self_attention(*a, wrong_heads="both")),
        ("the returned cache holds only the new step's keys/values; return the past ones with the new ones "
         "appended on the step axis, [B, H, L, D]", lambda *a: _self_attention(*a, cache_out="new only")),
        ("the returned cache holds only the past steps; append the new step's keys/values before returning it",
         lambda *a: _self_attention(*a, cache_out="past only")),
        ("the returned cache is one step short (its last step dropped); it must hold all L = past + S steps",
         lambda *a: _self_attention(*a, cache_out="one step short"))],
    "cross_kv": [
        ("the heads split by a plain reshape to [B, H, T, D]; split [B, T, M] as [B, T, H, D], then move the "
         "heads forward (L.split_heads)", _cross_kv_wrong_heads)],
    "cross_attention": [
        ("scores not scaled by D^-1/2", lambda *a: REFERENCE["cross_attention"](*_scaled_queries(a, 2)))],
    "beam_step": [
        ("the length penalty applied as a plain average (length ** 1); a finished hypothesis scores "
         "sum / length ** length_penalty, with opts.length_penalty", _beam_with(length_penalty=1.0)),
        ("the length penalty left out (the raw sum); a finished hypothesis scores "
         "sum / length ** length_penalty", _beam_with(length_penalty=0.0))],
    "layer_norm_backward": [
        ("the two mean terms left out (dx = rstd * g): x̂ depends on every feature of its row through the mean "
         "and the variance, so dx = rstd * (g - mean(g) - x̂ * mean(g * x̂)), with g = dy * weight",
         lambda *a: _layer_norm_backward(*a, means=())),
        ("the mean of the gradient, mean(g), left out: the mean subtracted in the forward takes it back out, "
         "dx = rstd * (g - mean(g) - x̂ * mean(g * x̂))", lambda *a: _layer_norm_backward(*a, means=("xhat",))),
        ("the variance's term, x̂ * mean(g * x̂), left out: the forward divides by the std, which depends on x too",
         lambda *a: _layer_norm_backward(*a, means=("g",))),
        ("the means taken over M - 1 (the unbiased variance, as torch.var's default); LayerNorm's variance "
         "divides by M, and so do both means of its gradient", lambda *a: _layer_norm_backward(*a, ddof=1)),
        ("the weight (gamma) dropped: the gradient reaching x̂ is g = dy * weight, not dy",
         lambda *a: _layer_norm_backward(*a, gamma=False)),
        ("the weight's gradient summed without x̂: y = x̂ * weight + bias, so d weight = Σ_rows dy * x̂",
         lambda *a: _layer_norm_backward(*a, dweight="dy"))],
    "softmax_backward": [
        ("the sum term left out (ds = p * dp): every probability depends on every score of its row through the "
         "normalization, ds = p * (dp - Σ_C dp * p)", lambda *a: _softmax_backward(*a, term=None)),
        ("the sum taken over dp alone: it is Σ_C dp * p, each upstream gradient weighted by its probability",
         lambda *a: _softmax_backward(*a, term="dp")),
        ("the sum over the wrong axis: softmax normalizes over the last axis (the keys, C), so sum over "
         "axis=-1 with keepdims=True", lambda *a: _softmax_backward(*a, axis=-2))],
    "global_local_attention_backward": [
        ("the global keys' and values' gradient from one block only: every block's keys include the G global "
         "keys, so their gradient is the sum over the N blocks (axis 2 of [B, H, N, G+K, D]), plus the global "
         "queries' share", lambda *a: _attention_backward(*a, global_keys="first")),
        ("the global keys' and values' gradient averaged over the blocks: a value used N times gets the sum "
         "of the N gradients, not their mean", lambda *a: _attention_backward(*a, global_keys="mean")),
        ("the global queries' share left out of the keys' and values' gradient: the G global tokens attend "
         "all G+P keys, so dk and dv also get global_probs' part (ds^T q_global, global_probs^T d global_out)",
         lambda *a: _attention_backward(*a, global_queries=False)),
        ("the queries' D^-1/2 factor dropped: the queries were scaled after q_proj, so the gradient reaching "
         "q_proj's output is dq * D ** -0.5", lambda *a: _attention_backward(*a, scale=False)),
        ("the mask applied to the gradient on the query axis (padded tokens' gradient zeroed): a padded "
         "token's query still has an output and so a gradient; the mask hides padded *keys*, whose gradient "
         "is already 0 because their probabilities are 0", lambda *a: _attention_backward(*a, query_mask=True)),
        ("the stagger's padding removed here: this function returns the gradient of its own input, all P tokens "
         "it was given (a staggered layer's P+K); the encoder layer removes the K/2 padded positions at each end "
         "afterwards (E.stagger_backward)", _unstaggered_here)],
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
    "stagger": "pad K/2 positions at both ends of the token axis (what they hold does not matter: they are "
               "masked) and K/2 masked entries (finfo.min) at both ends of the mask.",
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
    "layer_norm_backward": "with g = dy * weight: dx = rstd * (g - mean(g) - x̂ * mean(g * x̂)), the means over "
                           "the M features of each row; d weight = Σ_rows dy * x̂, d bias = Σ_rows dy.",
    "softmax_backward": "ds = p * (dp - Σ_C dp * p), the sum over the last axis with keepdims=True.",
    "global_local_attention_backward": "go back through out_proj, then each attention as "
                                       "probs -> scores -> q, k, v; a global key or value gets the sum of every "
                                       "block's share and the global queries'; dq * D ** -0.5 before q_proj; "
                                       "tokens and global tokens share the projections (one product over the "
                                       "joint [B, G+P, M] rows).",
    "beam_step": "the 2W best continuations of all beams together (log-prob + beam score, top over W*V); the W "
                 "best that do not end in EOS become the beams, in score order.",
}


def matching_variant(name, args, got, same):
    """The description of a known mistake whose outputs equal `got` (same(got, want) decides), or None."""
    for what, variant in VARIANTS.get(name, ()):
        try:
            with np.errstate(all="ignore"):
                out = variant(*fresh(args))
            if same(got, out):
                return what
        except Exception:  # a variant that does not apply to this case
            continue
    return None


def where_hint(index, axes, bad, got, want):
    """A hint from where and how the outputs differ: NaN/inf, a constant factor, one batch row, a block."""
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not np.isfinite(got64).all() and np.isfinite(want64).all():
        return ("your output holds NaN or inf where the reference is finite: exp of a large score overflows float32 "
                "(exp(89) is inf) unless each row's max is subtracted before exp, as L.softmax does; or -inf in a "
                "mask?")
    ratio = got64[bad] / np.where(want64[bad] == 0, np.nan, want64[bad])
    if ratio.size > 1 and np.isfinite(ratio).all() and np.ptp(ratio) < 1e-4 * abs(ratio.mean()) \
            and abs(ratio.mean() - 1) > 1e-3:
        r = ratio.mean()
        known = {math.sqrt(D): "sqrt(D)", 1 / math.sqrt(D): "1 / sqrt(D)"}
        name = next((f" = {v}" for k, v in known.items() if abs(r - k) < 1e-3 * k), "")
        return f"every differing entry is the expected one multiplied by the same factor, {r:.6g}{name}: " \
               f"a scale factor missing, doubled or misplaced?"
    tokens_or_steps = axes[:1] == "b" and any(a in axes for a in "tsqgn")   # not beam search's inputs
    rows = set(np.nonzero(bad)[0].tolist()) if tokens_or_steps else set()
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
