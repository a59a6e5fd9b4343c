# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Build PEGASUS-X bottom-up: exercises
#
# You will write, one function at a time, the pieces of PEGASUS-X (Phang, Zhao & Liu 2022,
# [arXiv:2208.04347](https://arxiv.org/abs/2208.04347)): layer norm and the FFN, the sinusoidal positions,
# block-local attention with global tokens, staggered blocks and the encoder layer, the decoder's
# attention with its caches, one step of beam search and, for training, three backward passes (layer
# norm, softmax, block-local attention).
#
# Every exercise is a function with minipegx's own name and signature. Replace each
# `raise NotImplementedError` with your code, then run the **check cell** below it:
# `check_function(name, your_function)` compares your function with minipegx's on inputs chosen to catch
# the usual bugs (a batch of 2 whose second row is padded, 3 blocks with a partial last one, a staggered
# layer, global tokens, beams), then puts it **in place** in the first (short) bundled demo model and compares the
# model's logits. When it fails it says where your output first differs, by how much, and the likely cause.
# Your grade is the same check (see the points in each heading): the grader runs your notebook's cells (not
# the check cells), then checks each function. The function must be your own `def`: importing minipegx's
# function of the same name, or calling it from yours, scores 0 (the other minipegx functions each exercise
# names are yours to use). No torch needed; if transformers is installed, the check cells also compare with it.
#
# Each exercise uses minipegx's versions of the earlier ones (`L.layer_norm`, `E.stagger`...), so a bug
# in one exercise costs only that exercise's points.
#
# **Shape legend**: B batch, T tokens, P tokens padded to whole blocks, S decoder steps, L cached + new
# steps, N blocks, K block size, G global tokens, H heads, D head dim (M / H), F FFN width, M d_model,
# V vocabulary; R rows (beams) per input; W beams.

# %%
import math  # noqa: F401  (math, np, E, Gen, L: for your code)

import numpy as np

from minipegx import encoder as E  # noqa: F401
from minipegx import generate as Gen  # noqa: F401
from minipegx import layers as L  # noqa: F401
from minipegx.parity import check_function

# %% [markdown]
# ## Exercise 1 · Layer norm and the feed-forward network (2 + 2 points)
#
# PEGASUS-X is a *pre-LayerNorm* Transformer (Vaswani et al. 2017, §3.1 and §3.3; PEGASUS-X keeps
# PEGASUS's layers): every sub-block reads `layer_norm(x)` and adds its output to `x`. LayerNorm uses the
# **biased** variance (divide by M) and eps = 1e-5 inside the square root. The FFN is
# `fc2(act(fc1(x)))`; the weights are stored `[out, in]`, as in the checkpoint (use `L.linear(x, w, b)`
# and `L.activation(h, act)`).

# %%
def layer_norm(x, p, eps=1e-5):
    """LayerNorm over the last axis. x [..., M]; p = {"weight": [M], "bias": [M]}. Returns [..., M]."""
    ### BEGIN SOLUTION
    mean = x.mean(axis=-1, keepdims=True)                     # [..., 1]
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)      # [..., 1] biased: divide by M
    return (x - mean) / np.sqrt(var + eps) * p["weight"] + p["bias"]   # [..., M]
    ### END SOLUTION


def ffn(x, p, act):
    """fc2(act(fc1(x))). x [..., M]; p["fc1"] = {"weight": [F, M], "bias": [F]}, p["fc2"] likewise [M, F], [M];
    act a transformers activation name ("relu", "gelu"). Returns [..., M]."""
    ### BEGIN SOLUTION
    h = L.linear(x, p["fc1"]["weight"], p["fc1"]["bias"])     # [..., F]
    h = L.activation(h, act)                                   # [..., F]
    return L.linear(h, p["fc2"]["weight"], p["fc2"]["bias"])  # [..., M]
    ### END SOLUTION


# %% tags=["grader_skip"]
check_function("layer_norm", layer_norm)

# %% tags=["grader_skip"]
check_function("ffn", ffn)

# %% [markdown]
# <details><summary>Hint</summary>
#
# `np.var` is biased by default (`ddof=0`), `torch.var` is not. GELU here is the exact one,
# `0.5 x (1 + erf(x / sqrt 2))`: `L.activation` has it; the tanh approximation is ~5e-4 off.
# </details>
#
# ## Exercise 2 · The sinusoid (2 points)
#
# PEGASUS-X adds fixed sinusoidal positions to the token embeddings (the Transformer's §3.5 encoding,
# which PEGASUS-X keeps; the paper's ablations compare it with other position encodings). Careful: the
# frequencies are `exp(-ln(10000) * i / (M/2 - 1))` for i = 0 .. M/2-1 — **M/2 - 1**, not M/2 — and all
# sines come first, then all cosines. Decoding steps after a cache start at `start > 0`.

# %%
def sinusoidal_positions(start, length, dim, xp, dtype="float32"):
    """Positions start .. start+length-1 as a [length, dim] array (xp is numpy or cupy)."""
    ### BEGIN SOLUTION
    half = dim // 2
    freq = xp.exp(xp.arange(half, dtype=xp.float32) * xp.float32(-math.log(10000.0) / (half - 1)))  # [M/2]
    angle = xp.arange(start, start + length, dtype=xp.float32)[:, None] * freq                       # [T, M/2]
    return xp.concatenate([xp.sin(angle), xp.cos(angle)], axis=-1).astype(dtype)                     # [T, M]
    ### END SOLUTION


# %% tags=["grader_skip"]
check_function("sinusoidal_positions", sinusoidal_positions)

# %% [markdown]
# <details><summary>Hint</summary>
#
# Compute in float32 as the reference does: at the demo model's positions (up to ~150) float64 angles
# are also within tolerance, but at 16k tokens they are not.
# </details>
#
# ## Exercise 3 · Block-local attention with global tokens (4 points)
#
# The heart of the paper's Global-Local encoder (§3): the P tokens (padded to whole blocks of K) are cut
# into N = P / K blocks; a token attends **the G global tokens and the tokens of its own block**; a global
# token attends **everything** (all G + P keys). Tokens and global tokens share the projections
# (no biases). Queries are scaled by D^-1/2 before the product. The mask is additive: 0 for real tokens,
# `finfo.min` for padding, per batch row, applied to the **keys**. Return the probabilities in the
# reference's layout: `{"local": [B, H, N, K, G+K], "global": [B, H, G, G+P]}`, global keys first.
# Useful: `L.linear`, `L.split_heads` ([B, L, M] -> [B, H, L, D]), `L.merge_heads`, `L.softmax`.

# %%
def global_local_attention(x, g, mask, p, num_heads, block_size, output_attentions=True):
    """x [B, P, M] tokens (P a multiple of K), g [B, G, M] global tokens, mask [B, P] additive,
    p {q_proj, k_proj, v_proj, out_proj} each {"weight": [M, M]}.
    Returns tokens out [B, P, M], global out [B, G, M], probs (dict above; None if not output_attentions)."""
    ### BEGIN SOLUTION
    B, P, M = x.shape
    G, H, K = g.shape[1], num_heads, block_size
    N, D = P // K, M // H
    both = np.concatenate([g, x], axis=1)                                          # [B, G+P, M]
    q = L.split_heads(L.linear(both, p["q_proj"]["weight"]), H) * D ** -0.5       # [B, H, G+P, D]
    k = L.split_heads(L.linear(both, p["k_proj"]["weight"]), H)                   # [B, H, G+P, D]
    v = L.split_heads(L.linear(both, p["v_proj"]["weight"]), H)                   # [B, H, G+P, D]

    # global tokens: every key, padding masked
    gmask = np.concatenate([np.zeros((B, G), mask.dtype), mask], axis=1)          # [B, G+P]
    gprobs = L.softmax(q[:, :, :G] @ k.swapaxes(-1, -2) + gmask[:, None, None, :])  # [B, H, G, G+P]
    gout = gprobs @ v                                                             # [B, H, G, D]

    # tokens: per block, the G global keys then the block's own K keys
    qb = q[:, :, G:].reshape(B, H, N, K, D)                                       # [B, H, N, K, D]
    kb = np.concatenate([np.broadcast_to(k[:, :, None, :G], (B, H, N, G, D)),
                         k[:, :, G:].reshape(B, H, N, K, D)], axis=3)             # [B, H, N, G+K, D]
    vb = np.concatenate([np.broadcast_to(v[:, :, None, :G], (B, H, N, G, D)),
                         v[:, :, G:].reshape(B, H, N, K, D)], axis=3)             # [B, H, N, G+K, D]
    lmask = np.concatenate([np.zeros((B, N, G), mask.dtype), mask.reshape(B, N, K)], axis=-1)  # [B, N, G+K]
    lprobs = L.softmax(qb @ kb.swapaxes(-1, -2) + lmask[:, None, :, None, :])    # [B, H, N, K, G+K]
    tout = (lprobs @ vb).reshape(B, H, P, D)                                      # [B, H, P, D]

    out = L.linear(L.merge_heads(np.concatenate([gout, tout], axis=2)), p["out_proj"]["weight"])  # [B, G+P, M]
    probs = {"local": lprobs, "global": gprobs} if output_attentions else None
    return out[:, G:], out[:, :G], probs
    ### END SOLUTION


# %% tags=["grader_skip"]
check_function("global_local_attention", global_local_attention)

# %% [markdown]
# <details><summary>Hint</summary>
#
# Build the block keys with `concatenate` of the (broadcast) global keys and the reshaped block keys; the
# local mask is `[B, N, G+K]` (zeros for the globals), broadcast to `[B, 1, N, 1, G+K]` — the `1`s are the
# heads and the queries. If only batch row 1 differs, your mask is not per row.
# </details>
#
# ## Exercise 4 · Staggered blocks and the encoder layer (2 + 3 points)
#
# With fixed blocks, information never crosses a block border. PEGASUS-X **staggers** every other layer
# (the paper's Figure 2): it pads K/2 positions at both ends (masked), so its N + 1 blocks are shifted by
# half a block; after the attention the K/2 positions are cut off again. Then write the whole pre-LayerNorm
# encoder layer: tokens and global tokens have their own attention layer norms
# (`self_attn_layer_norm`, `global_self_attn_layer_norm`) but share the attention weights, the FFN and
# its `final_layer_norm`. Use `E.global_local_attention`, `L.layer_norm`, `L.ffn` (minipegx's versions).

# %%
def stagger(x, mask, block_size):
    """x [B, P, M], mask [B, P] additive -> x [B, P+K, M] and mask [B, P+K], K/2 masked positions at each end."""
    ### BEGIN SOLUTION
    h = block_size // 2
    x = np.pad(x, ((0, 0), (h, h), (0, 0)))                                       # [B, P+K, M]
    mask = np.pad(mask, ((0, 0), (h, h)), constant_values=np.finfo(mask.dtype).min)  # [B, P+K]
    return x, mask
    ### END SOLUTION


def encoder_layer(x, g, mask, p, config, staggered, trace=None, name="", output_attentions=True):
    """x [B, P, M], g [B, G, M], mask [B, P] additive, p the layer's parameters, config a PegasusXConfig
    (block_size, encoder_attention_heads, activation_function). Returns x [B, P, M], g [B, G, M], probs.
    (trace and name let minipegx record intermediates; you may ignore them.)"""
    ### BEGIN SOLUTION
    K = config.block_size
    h = L.layer_norm(x, p["self_attn_layer_norm"])                                # [B, P, M]
    hg = L.layer_norm(g, p["global_self_attn_layer_norm"])                        # [B, G, M]
    if staggered:
        h, mask = E.stagger(h, mask, K)                                           # [B, P+K, M]
    h, hg, probs = E.global_local_attention(h, hg, mask, p["self_attn"], config.encoder_attention_heads, K,
                                            output_attentions=output_attentions)
    if staggered:
        h = h[:, K // 2:-(K // 2)]                                                # [B, P, M]
    x, g = x + h, g + hg
    x = x + L.ffn(L.layer_norm(x, p["final_layer_norm"]), p, config.activation_function)
    g = g + L.ffn(L.layer_norm(g, p["final_layer_norm"]), p, config.activation_function)
    return x, g, probs
    ### END SOLUTION


# %% tags=["grader_skip"]
check_function("stagger", stagger)

# %% tags=["grader_skip"]
check_function("encoder_layer", encoder_layer)

# %% [markdown]
# <details><summary>Hint</summary>
#
# The padding of a staggered layer is masked like any other padding: `np.finfo(mask.dtype).min`, not 0.
# In the layer, stagger *after* the layer norm and cut `K // 2` from both ends of the attention output.
# </details>
#
# ## Exercise 5 · The decoder's attention and its caches (3 + 1 + 3 points)
#
# The decoder is PEGASUS's: causal self-attention, then cross-attention over the encoder's tokens (not the
# global tokens). Both keep work between decoding steps:
# * **self-attention** keeps the keys/values of past steps, `cache = (k, v)` each `[B, H, L-S, D]`; a new
#   step appends its own along the step axis and returns the grown cache;
# * **cross-attention**'s keys/values depend only on the encoder output, so `cross_kv` computes them once
#   per input, `[B, H, T, D]`, and every step (and every beam of that input) reuses them. Rows are `B*R`:
#   rows `b*R .. b*R+R-1` are input b's beams.
# The decoder scales the scores *after* the product by D^-1/2.

# %%
def self_attention(x, p, num_heads, mask, cache=None):
    """x [B, S, M] new steps, mask additive [.., S, L], cache None or (k, v) each [B, H, L-S, D].
    Returns out [B, S, M], probs [B, H, S, L], cache (k, v) each [B, H, L, D]."""
    ### BEGIN SOLUTION
    D = x.shape[-1] // num_heads
    q = L.split_heads(L.linear(x, p["q_proj"]["weight"]), num_heads)             # [B, H, S, D]
    k = L.split_heads(L.linear(x, p["k_proj"]["weight"]), num_heads)             # [B, H, S, D]
    v = L.split_heads(L.linear(x, p["v_proj"]["weight"]), num_heads)             # [B, H, S, D]
    if cache is not None:
        k = np.concatenate([cache[0], k], axis=2)                                 # [B, H, L, D]
        v = np.concatenate([cache[1], v], axis=2)
    probs = L.softmax(q @ k.swapaxes(-1, -2) * D ** -0.5 + mask)                  # [B, H, S, L]
    out = L.linear(L.merge_heads(probs @ v), p["out_proj"]["weight"])             # [B, S, M]
    return out, probs, (k, v)
    ### END SOLUTION


def cross_kv(encoder_hidden, p, num_heads):
    """encoder_hidden [B, T, M] -> (k, v) each [B, H, T, D]: the cross-attention cache of one layer."""
    ### BEGIN SOLUTION
    return (L.split_heads(L.linear(encoder_hidden, p["k_proj"]["weight"]), num_heads),
            L.split_heads(L.linear(encoder_hidden, p["v_proj"]["weight"]), num_heads))
    ### END SOLUTION


def cross_attention(x, kv, p, num_heads, mask):
    """x [B*R, S, M] (R rows per input), kv (k, v) each [B, H, T, D], mask additive [B, 1, 1, T] or None.
    Returns out [B*R, S, M] and probs [B, H, R*S, T] (an input's rows stacked: row r's steps at r*S..)."""
    ### BEGIN SOLUTION
    k, v = kv
    B, H, T, D = k.shape
    BR, S, M = x.shape
    R = BR // B
    q = L.linear(x, p["q_proj"]["weight"]).reshape(B, R * S, H, D).transpose(0, 2, 1, 3)  # [B, H, R*S, D]
    s = q @ k.swapaxes(-1, -2) * D ** -0.5                                        # [B, H, R*S, T]
    probs = L.softmax(s if mask is None else s + mask)
    out = (probs @ v).reshape(B, H, R, S, D).transpose(0, 2, 3, 1, 4).reshape(BR, S, M)  # [B*R, S, M]
    return L.linear(out, p["out_proj"]["weight"]), probs
    ### END SOLUTION


# %% tags=["grader_skip"]
check_function("self_attention", self_attention)

# %% tags=["grader_skip"]
check_function("cross_kv", cross_kv)

# %% tags=["grader_skip"]
check_function("cross_attention", cross_attention)

# %% [markdown]
# <details><summary>Hint</summary>
#
# Cross-attention: reshape the queries `[B*R, S, M]` to `[B, H, R*S, D]` so each input's R*S queries meet
# their own input's keys in one product; undo it the same way. Self-attention: concatenate the cache on
# axis 2 (the steps) and return `(k, v)` including the new step.
# </details>
#
# ## Exercise 6 · One step of beam search (4 points)
#
# Beam search keeps W beams per input, best first, with their cumulative log-probs. One step:
# 1. add each beam's score to its next-token log-probs: `[B, W, V]`, and take the **2W best of all W*V**
#    continuations together (`Gen.top_k(x, k)` returns values and indices, best first); a flat index i is
#    beam `i // V`, token `i % V`;
# 2. the **W best that do not end in EOS** become the new beams (EOS continuations get -1e9 added,
#    `Gen.flag(hits)`); the ones that end in EOS may enter the finished hypotheses — that bookkeeping is
#    written for you (`finish_step`, below).
# `state.running [B, W, L]` are the beams' tokens, `state.running_scores [B, W]` their scores,
# `Gen.gather(x, idx)` picks `x[b, idx[b, i]]`.

# %%
def finish_step(state, opts, cand, cand_parents, cand_scores, tokens, parents, hits, nxt,
                running, running_scores, running_parents):
    """Given: the bookkeeping after your part. The candidates that stop here among the top W enter the
    finished hypotheses if they beat the worst one, scored sum / generated_length ** length_penalty; then
    the early-stopping test. Returns what beam_step returns."""
    xp = np
    B, K, L_ = state.running.shape                                               # K = W beams here
    C = cand.shape[1]
    just = hits & (xp.arange(C) < K)[None]                                       # [B, C]
    fin_scores = cand_scores / xp.float32(L_ ** opts.length_penalty)
    fin_scores = fin_scores + Gen.flag(state.pool_done.all(axis=-1, keepdims=True) & (opts.early_stopping is True))
    fin_scores = fin_scores + Gen.flag(~state.improvable) + Gen.flag(~just)
    merged = xp.concatenate([Gen.pad_last(state.pool, Gen.fill_value(opts)), cand], axis=1)   # [B, W+C, L+1]
    merged_scores = xp.concatenate([state.pool_scores, fin_scores], axis=1)                  # [B, W+C]
    merged_parents = xp.concatenate([Gen.pad_last(state.pool_parents, -1), cand_parents], axis=1)
    merged_done = xp.concatenate([state.pool_done, just], axis=1)
    pool_scores, keep = Gen.top_k(merged_scores, K)                              # [B, W]
    best_len = opts.max_length - 1 if opts.early_stopping == "never" and opts.length_penalty > 0 else L_
    best_possible = running_scores[:, :1] / xp.float32(best_len ** opts.length_penalty)  # [B, 1]
    pool_done = Gen.gather(merged_done, keep)
    worst = xp.where(pool_done, pool_scores.min(axis=1, keepdims=True), xp.float32(Gen.NEG))
    improvable = state.improvable & (best_possible > worst).any(axis=-1, keepdims=True)
    new = Gen.BeamState(running, running_scores, running_parents, Gen.gather(merged, keep), pool_scores,
                        Gen.gather(merged_parents, keep), pool_done, improvable, hits)
    kept = xp.zeros((B, C), dtype=bool)
    kept[xp.arange(B)[:, None], nxt] = True
    entered = xp.zeros((B, K + C), dtype=bool)
    entered[xp.arange(B)[:, None], keep] = True
    return new, (tokens, parents, cand_scores, kept & ~hits, entered[:, K:K + C] & just)


def beam_step(state, log_probs, opts, rng=None):
    """One step of transformers' beam search on the processed log-probs [B*W, V] of the alive beams.
    state.running [B, W, L] the beams' tokens, state.running_scores [B, W] their scores,
    state.running_parents [B, W, L-1] the row each token came from. Compute, for C = 2W candidates [B, C]:
    cand_scores, tokens, parents (beam 0..W-1), cand [B, C, L+1] (the parent's tokens + the token),
    cand_parents [B, C, L] (the parent's running_parents + its flat row b*W + parent), hits (the token is an
    EOS id or the length reaches opts.max_length), nxt [B, W] (the W best candidates that are not hits) and
    running, running_scores, running_parents (those candidates); then return finish_step(...)."""
    ### BEGIN SOLUTION
    xp = np
    B, K, L_ = state.running.shape                                               # K = W beams here
    V = log_probs.shape[-1]
    total = (log_probs.reshape(B, K, V) + state.running_scores[:, :, None]).reshape(B, K * V)  # [B, W*V]
    cand_scores, idx = Gen.top_k(total, 2 * K)                                   # [B, C] best first
    parents, tokens = idx // V, idx % V                                          # [B, C]
    flat_parents = parents + (xp.arange(B) * K)[:, None]                         # row in [B*W]
    cand = xp.concatenate([Gen.gather(state.running, parents), tokens[..., None]], axis=-1)   # [B, C, L+1]
    cand_parents = xp.concatenate([Gen.gather(state.running_parents, parents), flat_parents[..., None]], axis=-1)
    hits = Gen.is_eos(tokens, opts) | (L_ + 1 >= opts.max_length)                # [B, C]
    alive_scores = cand_scores + Gen.flag(hits)
    _, nxt = Gen.top_k(alive_scores, K)                                          # [B, W]
    running, running_scores = Gen.gather(cand, nxt), Gen.gather(alive_scores, nxt)
    running_parents = Gen.gather(cand_parents, nxt)
    return finish_step(state, opts, cand, cand_parents, cand_scores, tokens, parents, hits, nxt,
                       running, running_scores, running_parents)
    ### END SOLUTION


# %% tags=["grader_skip"]
check_function("beam_step", beam_step)

# %% [markdown]
# <details><summary>Hint</summary>
#
# `total.reshape(B, W * V)` then `Gen.top_k(total, 2 * W)`; `parents, tokens = idx // V, idx % V`. The new
# beams are the candidates' sequences `Gen.gather(state.running, parents)` with the token appended.
# </details>
#
# ## Exercise 7 · Backward passes: layer norm, softmax and block-local attention (2 + 2 + 4 points)
#
# Training needs the gradient of the loss with respect to every parameter. minipegx writes each backward
# pass by hand beside its forward (no autograd engine, as in CS231n and llm.c; docs/backward.md): a
# `x_forward(...)` returns its output and a **cache** of what the backward needs, and `x_backward(dy, cache)`
# takes the gradient of the loss with respect to the output, `dy`, and returns the gradient with respect to
# the input and the parameters' gradients, keyed by the checkpoint's names. You write three of them, with
# minipegx's own signatures, so they can replace minipegx's inside a real training step:
#
# * `layer_norm_backward(dy, cache)`: `cache` is what `L.layer_norm_forward(x, p)` keeps, `(xhat, rstd, w)`:
#   the normalized input x̂ = (x - mean) * rstd `[..., M]`, `rstd = 1 / sqrt(var + eps)` `[..., 1]` and the
#   weight `[M]`. Return `dx [..., M]` and `{"weight": [M], "bias": [M]}` (summed over every row).
# * `softmax_backward(dp, probs)`: `probs = softmax(s)` over the last axis; return `ds`, same shape. (minipegx's
#   own writes into `dp` to save memory; yours may return a new array.)
# * `global_local_attention_backward(dx_out, dg_out, cache)`: the gradients of exercise 3's two outputs,
#   tokens `[B, P, M]` and global tokens `[B, G, M]`, and what `E.global_local_attention_forward` keeps:
#   `cache.proj`, the q/k/v projections' `(x, w)` (`x` the joint input `[B, G+P, M]`, **globals first**,
#   `w` the weight `[M, M]`); `cache.q, cache.k, cache.v` `[B, H, G+P, D]` (q already multiplied by D^-1/2);
#   `cache.global_probs [B, H, G, G+P]`, `cache.local_probs [B, H, N, K, G+K]`; `cache.out`, out_proj's
#   `(x, w)` (the merged heads `[B, G+P, M]`). Return `dx [B, P, M]`, `dg [B, G, M]` and
#   `{"q_proj": {"weight": [M, M]}, "k_proj": ..., "v_proj": ..., "out_proj": ...}`.
#   Useful: `L.linear_backward(dy, cache.out, bias=False)` (returns dx and `{"weight"}`), `L.split_heads`,
#   `L.merge_heads`, `E.block_keys(k, G, K)` (each block's keys: `[B, H, N, G+K, D]`) and `L.softmax_backward`.
#
# The checks run in **float64**, as gradient checks are: on their own against minipegx's gradients (the
# upstream gradient is random at every position, padded ones included: your function must be the whole
# gradient of the forward), then in place in a training step of the demo model
# (`minipegx.training.loss_and_grads`), where every parameter's gradient must not change. A staggered layer
# calls the same attention on its padded `[B, P+K, M]` tokens; removing the K/2 padded positions at each end
# from the gradient is the encoder layer's job (`E.stagger_backward`), not yours here.

# %%
def layer_norm_backward(dy, cache):
    """dy [..., M]; cache (xhat [..., M], rstd [..., 1], w [M]) from L.layer_norm_forward.
    Returns dx [..., M] and {"weight": [M], "bias": [M]}."""
    ### BEGIN SOLUTION
    xhat, rstd, w = cache
    rows = tuple(range(dy.ndim - 1))                                              # every axis but M
    g = dy * w                                                                    # [..., M] d xhat
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, {"weight": (dy * xhat).sum(axis=rows), "bias": dy.sum(axis=rows)}
    ### END SOLUTION


def softmax_backward(dp, probs):
    """dp, probs [..., C], probs = softmax(s) over the last axis. Returns ds [..., C]."""
    ### BEGIN SOLUTION
    return probs * (dp - (dp * probs).sum(axis=-1, keepdims=True))               # [..., C] - [..., 1]
    ### END SOLUTION


def global_local_attention_backward(dx_out, dg_out, cache):
    """dx_out [B, P, M], dg_out [B, G, M]: the gradients of global_local_attention's two outputs; cache from
    E.global_local_attention_forward. Returns dx [B, P, M], dg [B, G, M] and
    {"q_proj": {"weight": [M, M]}, "k_proj": ..., "v_proj": ..., "out_proj": ...}."""
    ### BEGIN SOLUTION
    q, k, v = cache.q, cache.k, cache.v                                           # [B, H, G+P, D]
    B, H, N, K, GK = cache.local_probs.shape
    G, D, P = GK - K, q.shape[-1], N * K
    dout = np.concatenate([dg_out, dx_out], axis=1)                               # [B, G+P, M] globals first
    dmerged, g_out = L.linear_backward(dout, cache.out, bias=False)               # [B, G+P, M]
    dheads = L.split_heads(dmerged, H)                                            # [B, H, G+P, D]

    # tokens: out = local_probs @ block values, probs = softmax(q k^T + mask) per block
    dlocal = dheads[:, :, G:].reshape(B, H, N, K, D)                              # [B, H, N, K, D]
    kb, vb = E.block_keys(k, G, K), E.block_keys(v, G, K)                         # [B, H, N, G+K, D]
    dvb = cache.local_probs.swapaxes(-1, -2) @ dlocal                             # [B, H, N, G+K, D]
    ds = L.softmax_backward(dlocal @ vb.swapaxes(-1, -2), cache.local_probs)      # [B, H, N, K, G+K]
    dqb = ds @ kb                                                                 # [B, H, N, K, D]
    dkb = ds.swapaxes(-1, -2) @ q[:, :, G:].reshape(B, H, N, K, D)                # [B, H, N, G+K, D]
    # a global key/value is in every block: its gradient is the sum over the N blocks
    dq = np.concatenate([np.zeros_like(q[:, :, :G]), dqb.reshape(B, H, P, D)], axis=2)           # [B, H, G+P, D]
    dk = np.concatenate([dkb[:, :, :, :G].sum(axis=2), dkb[:, :, :, G:].reshape(B, H, P, D)], axis=2)
    dv = np.concatenate([dvb[:, :, :, :G].sum(axis=2), dvb[:, :, :, G:].reshape(B, H, P, D)], axis=2)

    # global tokens: out = global_probs @ v over all G+P keys
    dglobal = dheads[:, :, :G]                                                    # [B, H, G, D]
    dv = dv + cache.global_probs.swapaxes(-1, -2) @ dglobal                       # [B, H, G+P, D]
    ds = L.softmax_backward(dglobal @ v.swapaxes(-1, -2), cache.global_probs)     # [B, H, G, G+P]
    dq[:, :, :G] += ds @ k                                                        # [B, H, G, D]
    dk = dk + ds.swapaxes(-1, -2) @ q[:, :, :G]                                   # [B, H, G+P, D]

    # the shared projections of the joint rows; q was scaled by D^-1/2 after q_proj
    grads, dboth = {"out_proj": g_out}, 0.0
    for name, d, lin in (("q_proj", dq * D ** -0.5, cache.proj[0]), ("k_proj", dk, cache.proj[1]),
                         ("v_proj", dv, cache.proj[2])):
        dx, grads[name] = L.linear_backward(L.merge_heads(d), lin, bias=False)   # [B, G+P, M]
        dboth = dboth + dx
    return dboth[:, G:], dboth[:, :G], grads
    ### END SOLUTION


# %% tags=["grader_skip"]
check_function("layer_norm_backward", layer_norm_backward)

# %% tags=["grader_skip"]
check_function("softmax_backward", softmax_backward)

# %% tags=["grader_skip"]
check_function("global_local_attention_backward", global_local_attention_backward)

# %% [markdown]
# <details><summary>Hint</summary>
#
# Layer norm: with g = dy * weight, `dx = rstd * (g - mean(g) - x̂ * mean(g * x̂))`, both means over the M
# features (M, not M - 1: the variance is the biased one). Softmax: `ds = p * (dp - Σ dp * p)` over the last
# axis. Attention: the G global keys appear in all N blocks' keys, so their gradient is a **sum** over the
# blocks (axis 2), plus the global queries' part; the queries were scaled after `q_proj`, so multiply their
# gradient by `D ** -0.5` before `L.linear_backward`. A padded key's gradient is already 0 (its probability is
# 0): do not mask the gradient yourself.
# </details>
