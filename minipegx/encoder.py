"""The PEGASUS-X encoder: block-local attention, staggered on odd layers, plus global tokens.

Phang, Zhao & Liu (2022), §3: tokens attend only within their block of K tokens (and to the G global
tokens); every other layer shifts the blocks by K/2 ("staggered blocks") so information crosses block
borders; G learned global tokens attend to everything and are attended by everything.
Shape legend: B batch, T tokens, P padded tokens, N blocks, K block size, G global tokens,
H heads, D head dim, M d_model; Q queries and C keys of one attention.
"""

from __future__ import annotations

from .backend import array_module, finfo
from .blocks import padded_length, stagger_shift
from .heap import reuse_freed_memory
from .layers import (additive_mask, embed_tokens, ffn, layer_norm, linear, record,
                     sinusoidal_positions, softmax, split_heads)
from .parallel import by_rows, for_slices, one_blas_thread
from .precision import FiniteChecks, matmul, residual, scores

FFN_ROWS = 512   # rows per piece of the FFN, projections and layer norms on NumPy: BLAS is as fast on [512, M] as on all


def linear_rows(x, w):
    """linear(x, w), x [B, R, I] @ W^T [I, O] -> [B, R, O], the rows in pieces of at most FFN_ROWS through the
    parallel seam (parallel.by_rows), so the projections share the cores as the FFN does."""
    return by_rows(lambda rows: linear(rows, w), x, w.shape[0], x.dtype, FFN_ROWS)


def layer_norm_rows(x, p):
    """layer_norm(x, p), x [B, R, M] -> [B, R, M] in the weights' dtype (as layer_norm rounds), the rows in
    pieces of at most FFN_ROWS through the parallel seam (parallel.by_rows)."""
    return by_rows(lambda rows: layer_norm(rows, p), x, x.shape[-1], p["weight"].dtype, FFN_ROWS)


def attend(q, k, v, mask):
    """softmax(q k^T + mask) v for queries already scaled by D^-1/2 (the encoder scales its queries, as the
    reference does). q [..., Q, D] (Q queries), k and v [..., C, D] (C keys), mask additive, broadcastable
    to [..., Q, C]. Returns the output [..., Q, D] and the probabilities [..., Q, C]."""
    s = scores(q, k.swapaxes(-1, -2))                            # [..., Q, D] @ [..., D, C] -> [..., Q, C]
    s += mask
    probs = softmax(s)                                           # [..., Q, C]
    return matmul(probs, v), probs                               # [..., Q, C] @ [..., C, D] -> [..., Q, D]


def global_local_attention(x, g, mask, p, num_heads, block_size, output_attentions=True):
    """Block-local attention for tokens, full attention for global tokens (PegasusXGlobalLocalAttention).

    x    [B, P, M] tokens, P a multiple of K      g [B, G, M] global tokens
    mask [B, P] additive (0 or finfo.min)         p {q_proj, k_proj, v_proj, out_proj} (no biases)
    Returns token output [B, P, M], global output [B, G, M] and probs
    {"local": [B, H, N, K, G+K], "global": [B, H, G, G+P]} (the reference's layout: globals first),
    or None when output_attentions is False: the local probabilities are 0.5 GB at 16k tokens, and
    writing them out costs ~10% of the encoder's time, so they are kept only when asked for.
    """
    xp = array_module(x)
    B, P, M = x.shape
    G, H, K = g.shape[1], num_heads, block_size
    N, D = P // K, M // H
    w = {name: p[name]["weight"] for name in ("q_proj", "k_proj", "v_proj", "out_proj")}

    # Tokens and global tokens share the projections: project them together, globals first (the order of
    # the global tokens' keys), as one [G+P, M] @ [M, M] product each (cut into row pieces for the parallel
    # seam by linear_rows). Queries are pre-scaled by D^-1/2, as the reference does (q_proj(x) * scaling).
    both = xp.concatenate([g, x], axis=1)                        # [B, G+P, M]
    q = split_heads(linear_rows(both, w["q_proj"]), H)           # [B, H, G+P, D]
    q *= D ** -0.5                                               # in place: q is our own
    k = split_heads(linear_rows(both, w["k_proj"]), H)           # [B, H, G+P, D]
    v = split_heads(linear_rows(both, w["v_proj"]), H)           # [B, H, G+P, D]
    # The attention outputs, globals first, stored as [B, G+P, H, D] (merged heads' layout, so merging them
    # for out_proj is free) and written through the per-head view [B, H, G+P, D].
    out = xp.empty((B, G + P, H, D), q.dtype)                    # [B, G+P, H, D]
    heads_out = out.transpose(0, 2, 1, 3)                        # [B, H, G+P, D] view

    # The attention's independent pieces -- the global tokens head by head, the tokens head by head and
    # block by block -- are written once, for slices of heads and blocks, and handed out through the
    # parallel seam (parallel.for_slices): on NumPy one head (of one block) per piece, to a pool of threads,
    # so the softmax and small products share the cores and a piece's scores ([K, G+K], 1.3 MB at K = 512)
    # stay in cache from the product to the values; on CuPy all of them in one batched product. Each piece
    # writes its output into its own part of `out`.

    # Global tokens see every global token and every (unmasked) token.
    global_mask = xp.concatenate([xp.zeros((B, G), mask.dtype), mask], axis=1)[:, None, None, :]  # [B, 1, 1, G+P]
    global_probs = xp.empty((B, H, G, G + P), q.dtype) if output_attentions else None  # [B, H, G, G+P]

    def global_heads(heads):                                     # a slice of the H heads, h of them
        heads_out[:, heads, :G], probs = attend(q[:, heads, :G], k[:, heads], v[:, heads],
                                                global_mask)     # [B, h, G, D], [B, h, G, G+P]
        if output_attentions:
            global_probs[:, heads] = probs

    for_slices(global_heads, H, xp)

    # Each block of K tokens sees the G global tokens and its own block: its keys are the G global keys
    # followed by its own K keys, so a block's scores are one [K, D] @ [D, G+K] product per head.
    qb = q[:, :, G:].reshape(B, H, N, K, D)                      # [B, H, N, K, D] views
    kb = k[:, :, G:].reshape(B, H, N, K, D)
    vb = v[:, :, G:].reshape(B, H, N, K, D)
    ob = heads_out[:, :, G:].reshape(B, H, N, K, D)              # a view: blocks write their outputs into out
    kg, vg = k[:, :, None, :G], v[:, :, None, :G]                # [B, H, 1, G, D] the global keys and values
    local_mask = xp.concatenate([xp.zeros((B, N, G), mask.dtype),
                                 mask.reshape(B, N, K)], axis=-1)[:, None, :, None, :]  # [B, 1, N, 1, G+K]
    local_probs = xp.empty((B, H, N, K, G + K), q.dtype) if output_attentions else None  # [B, H, N, K, G+K]

    def local_blocks(heads, blocks):                             # slices of the H heads and of the N blocks
        h, n = len(range(H)[heads]), len(range(N)[blocks])
        block_keys = xp.concatenate([xp.broadcast_to(kg[:, heads], (B, h, n, G, D)), kb[:, heads, blocks]], axis=3)
        block_values = xp.concatenate([xp.broadcast_to(vg[:, heads], (B, h, n, G, D)), vb[:, heads, blocks]], axis=3)
        ob[:, heads, blocks], probs = attend(qb[:, heads, blocks], block_keys, block_values,   # keys [B, h, n, G+K, D]
                                             local_mask[:, :, blocks])  # [B, h, n, K, D], [B, h, n, K, G+K]
        if output_attentions:
            local_probs[:, heads, blocks] = probs

    for_slices(local_blocks, (H, N), xp)                         # on NumPy a piece is one head of one block

    out = linear_rows(out.reshape(B, G + P, M), w["out_proj"])   # [B, G+P, H, D] -> [B, G+P, M] -> [B, G+P, M]
    g_out, t_out = out[:, :G], out[:, G:]                        # [B, G, M], [B, P, M]
    return t_out, g_out, {"local": local_probs, "global": global_probs} if output_attentions else None


def stagger(x, mask, block_size):
    """Shift blocks by half a block: pad K/2 tokens (masked) on both sides, so the padded sequence has
    one block more and every block straddles two of the unstaggered ones (pad_local_tokens).
    x [B, P, M] -> [B, P+K, M]; mask [B, P] -> [B, P+K] (K = block_size)."""
    xp = array_module(x)
    h = stagger_shift(block_size, staggered=True)                             # K/2
    x = xp.pad(x, ((0, 0), (h, h), (0, 0)))                                   # [B, P+K, M]
    mask = xp.pad(mask, ((0, 0), (h, h)), constant_values=finfo(mask.dtype).min)  # [B, P+K]
    return x, mask


def encoder_layer(x, g, mask, p, config, staggered, trace=None, name="", output_attentions=True):
    """One pre-LayerNorm encoder layer. Tokens and global tokens have separate attention layer norms
    but share the attention weights, the FFN and its layer norm (PegasusXEncoderLayer).
    Returns tokens [B, P, M], global tokens [B, G, M] and the attention probabilities (None unless
    output_attentions)."""
    h = layer_norm_rows(x, p["self_attn_layer_norm"])            # [B, P, M]
    hg = layer_norm(g, p["global_self_attn_layer_norm"])         # [B, G, M]
    record(trace, f"{name}.self_attn_layer_norm", h)
    record(trace, f"{name}.global_self_attn_layer_norm", hg)
    K = config.block_size
    if staggered:
        h, mask = stagger(h, mask, K)                            # [B, P+K, M]
    h, hg, probs = global_local_attention(h, hg, mask, p["self_attn"], config.encoder_attention_heads, K,
                                          output_attentions=output_attentions)
    record(trace, f"{name}.self_attn", h)
    record(trace, f"{name}.self_attn.global", hg)
    if staggered:
        shift = stagger_shift(K, staggered)
        h = h[:, shift:-shift]                                   # [B, P, M] undo the half-block shift

    # The residual stream after attention, global tokens and tokens side by side in one array (globals first):
    # the FFN and its layer norm, which both share, see each position alone, so slices of FFN_ROWS rows of
    # both are handed out through the parallel seam, each adding its FFN output into its rows.
    xp = array_module(x)
    G = g.shape[1]
    both = xp.empty((x.shape[0], G + x.shape[1], x.shape[2]), x.dtype)  # [B, G+P, M]
    xp.add(g, hg, out=both[:, :G])                               # [B, G, M] residual, global tokens
    xp.add(x, h, out=both[:, G:])                                # [B, P, M] residual, tokens

    def feed_forward(rows):                                      # rows: a slice of the G+P positions
        both[:, rows] += ffn(layer_norm(both[:, rows], p["final_layer_norm"]), p, config.activation_function)

    for_slices(feed_forward, both.shape[1], xp, step=FFN_ROWS)
    x, g = both[:, G:], both[:, :G]                              # [B, P, M], [B, G, M] views
    record(trace, name, x)
    record(trace, f"{name}.global", g)
    return x, g, probs


def encoder(params, config, input_ids=None, attention_mask=None, inputs_embeds=None,
            output_attentions=False, output_hidden_states=False, trace=None, check_finite=None):
    """Embed, pad to a multiple of the block size, run the layers, drop the padding, final layer norm.

    params is the tree under "model" (shared, encoder). Returns (last_hidden_state [B, T, M],
    hidden_states, attentions), the latter two None unless asked. hidden_states follows the reference
    exactly: the (padded) input of every layer, then the pair (final tokens, final global tokens).
    The final layer norm applies to tokens only; global tokens are returned un-normalized.
    check_finite: raise NumericalError naming the first layer whose output holds inf/NaN (None: only
    under float16/bfloat16, where the compute dtype is low precision; see precision.py)."""
    p = params["encoder"]
    if inputs_embeds is None:
        scale = config.d_model ** 0.5 if config.scale_embedding else 1.0
        table = p.get("embed_tokens", params["shared"])["weight"]  # tied to shared unless the checkpoint unties it
        inputs_embeds = embed_tokens(input_ids, table, scale)   # [B, T, M]
        record(trace, "model.encoder.embed_tokens", inputs_embeds)
    xp = array_module(inputs_embeds)
    dtype = inputs_embeds.dtype
    B, T, M = inputs_embeds.shape
    pos = sinusoidal_positions(0, T, M, xp, dtype)               # [T, M]
    record(trace, "model.encoder.embed_positions", pos)
    x = residual(inputs_embeds) + pos                            # [B, T, M], float32 under fp16/bf16

    if attention_mask is None:
        attention_mask = xp.ones((B, T), dtype=dtype)
    mask = additive_mask(attention_mask, dtype, xp)              # [B, T]
    K = config.block_size
    pad = padded_length(T, K) - T
    if pad:  # pad tokens to whole blocks; the padding is masked with finfo.min
        x = xp.pad(x, ((0, 0), (0, pad), (0, 0)))                # [B, P, M]
        mask = xp.pad(mask, ((0, 0), (0, pad)), constant_values=finfo(dtype).min)  # [B, P]

    # Global tokens: learned embeddings, no sqrt(d_model) scaling and no positions.
    g = residual(xp.broadcast_to(p["embed_global"]["weight"], (B,) + p["embed_global"]["weight"].shape))  # [B, G, M]

    checks = FiniteChecks.of(check_finite, dtype)  # default: on under fp16/bf16; one sync per pass on a GPU
    hidden_states, attentions = [], []
    # NumPy: the layers' products all go through the parallel seam (parallel.py), and each layer reuses the
    # memory the one before freed (heap.py)
    with one_blas_thread(xp), reuse_freed_memory(xp):
        for i, layer_p in enumerate(p["layers"]):
            if output_hidden_states:
                hidden_states.append(x)
            x, g, probs = encoder_layer(x, g, mask, layer_p, config, config.is_staggered(i), trace,
                                        f"model.encoder.layers.{i}", output_attentions)
            checks.check(x, f"model.encoder.layers.{i} (tokens)")  # inf/NaN reported with its layer (precision.py)
            checks.check(g, f"model.encoder.layers.{i} (global tokens)")
            if output_attentions:
                attentions.append(probs)
    if checks is not check_finite:  # our own checks (a caller's FiniteChecks is settled by the caller)
        checks.settle()

    x = layer_norm(x[:, :T], p["layer_norm"])                    # [B, T, M] tokens only
    record(trace, "model.encoder.layer_norm", x)
    if output_hidden_states:
        hidden_states.append((x, g))
    return (x, tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None)


# ================================================================================= backward passes (training)
# x_forward(...) -> (outputs, cache) and x_backward(d outputs, cache) -> (d inputs, grads), beside the inference
# functions above, which stay as they are (layers.py explains the convention; minipegx.training runs them).
# The training forward computes all blocks at once, as the reference does: its caches keep every block's
# probabilities anyway, so the block-by-block loop above would save nothing here.
from typing import NamedTuple  # noqa: E402  (the training section's own imports, kept beside it)

from .layers import (EmbedCache, FfnCache, LayerNormCache, LinearCache, add_grads,  # noqa: E402
                     embed_tokens_backward, embed_tokens_forward, ffn_backward, ffn_forward, layer_norm_backward,
                     layer_norm_forward, linear_backward, linear_forward, merge_heads, softmax_backward)

class GlobalLocalCache(NamedTuple):
    """What global_local_attention_backward reads: the projections' inputs (tokens [B, P, M], global tokens
    [B, G, M]), queries, keys and values per head and the probabilities ([B, H, N, K, G+K] and [B, H, G, G+P])."""
    proj: tuple                                # (q, k, v) LinearCaches of the joint [B, G+P, M] input
    q: object                                  # [B, H, G+P, D] queries, pre-scaled by D^-1/2
    k: object                                  # [B, H, G+P, D]
    v: object                                  # [B, H, G+P, D]
    global_probs: object                       # [B, H, G, G+P]
    local_probs: object                        # [B, H, N, K, G+K]
    out: LinearCache                           # out_proj's input [B, G+P, M] (heads merged)


def block_keys(k, G, K):
    """Each block's keys: the G global ones, then the block's own K. k [B, H, G+P, D] -> [B, H, N, G+K, D]."""
    xp = array_module(k)
    B, H, GP, D = k.shape
    N = (GP - G) // K
    kg = xp.broadcast_to(k[:, :, None, :G], (B, H, N, G, D))               # [B, H, N, G, D] (a view)
    return xp.concatenate([kg, k[:, :, G:].reshape(B, H, N, K, D)], axis=3)  # [B, H, N, G+K, D]


def global_local_attention_forward(x, g, mask, p, num_heads, block_size):
    """global_local_attention with its cache. x [B, P, M] tokens, g [B, G, M] global tokens, mask [B, P]
    additive. Returns (token output [B, P, M], global output [B, G, M]), cache."""
    xp = array_module(x)
    B, P, M = x.shape
    G, H, K = g.shape[1], num_heads, block_size
    N, D = P // K, M // H
    both = xp.concatenate([g, x], axis=1)                                  # [B, G+P, M] globals first
    q, cq = linear_forward(both, p["q_proj"]["weight"])                    # [B, G+P, M]
    k, ck = linear_forward(both, p["k_proj"]["weight"])
    v, cv = linear_forward(both, p["v_proj"]["weight"])
    q = split_heads(q, H) * D ** -0.5                                      # [B, H, G+P, D] pre-scaled
    k, v = split_heads(k, H), split_heads(v, H)                            # [B, H, G+P, D]

    # Global tokens: every global token and every unmasked token.
    global_mask = xp.concatenate([xp.zeros((B, G), mask.dtype), mask], axis=1)  # [B, G+P]
    s = q[:, :, :G] @ k.swapaxes(-1, -2)                                   # [B, H, G, D] @ [B, H, D, G+P]
    s += global_mask[:, None, None, :]
    global_probs = softmax(s)                                              # [B, H, G, G+P] (in place on s)
    global_out = global_probs @ v                                          # [B, H, G, G+P] @ [B, H, G+P, D]

    # Tokens: each block of K queries, against the G global keys and then its own block's K keys.
    qb = q[:, :, G:].reshape(B, H, N, K, D)                                # [B, H, N, K, D]
    local_mask = xp.concatenate([xp.zeros((B, N, G), mask.dtype), mask.reshape(B, N, K)], axis=-1)  # [B, N, G+K]
    s = qb @ block_keys(k, G, K).swapaxes(-1, -2)                          # [B, H, N, K, D] @ [B, H, N, D, G+K]
    s += local_mask[:, None, :, None, :]
    local_probs = softmax(s)                                               # [B, H, N, K, G+K] (in place on s)
    local_out = local_probs @ block_keys(v, G, K)                          # [B, H, N, K, G+K] @ [B, H, N, G+K, D]

    heads = xp.concatenate([global_out, local_out.reshape(B, H, P, D)], axis=2)  # [B, H, G+P, D]
    out, co = linear_forward(merge_heads(heads), p["out_proj"]["weight"])  # [B, G+P, M]
    cache = GlobalLocalCache((cq, ck, cv), q, k, v, global_probs, local_probs, co)
    return (out[:, G:], out[:, :G]), cache


def global_local_attention_backward(dx_out, dg_out, cache):
    """d token output [B, P, M], d global output [B, G, M] -> dx [B, P, M], dg [B, G, M] and
    {q_proj, k_proj, v_proj, out_proj: {"weight"}}. A global key or value serves every block and the
    global queries: its gradient sums all their shares. Tokens and global tokens share the projections,
    so their gradients are one product over the joint [B, G+P] rows."""
    xp = array_module(dx_out)
    q, k, v, global_probs, local_probs = cache.q, cache.k, cache.v, cache.global_probs, cache.local_probs
    B, H, N, K, GK = local_probs.shape
    G, D, P = GK - K, q.shape[-1], N * K
    dout = xp.concatenate([dg_out, dx_out], axis=1)                        # [B, G+P, M]
    dmerged, g_out = linear_backward(dout, cache.out, bias=False)          # [B, G+P, M]
    dheads = split_heads(dmerged, H)                                       # [B, H, G+P, D]

    # Tokens' blocks: local_out = local_probs @ block values.
    dlocal = dheads[:, :, G:].reshape(B, H, N, K, D)                       # [B, H, N, K, D]
    dprobs = dlocal @ block_keys(v, G, K).swapaxes(-1, -2)                 # [B, H, N, K, D] @ [B, H, N, D, G+K]
    dvb = local_probs.swapaxes(-1, -2) @ dlocal                            # [B, H, N, G+K, K] @ [B, H, N, K, D]
    ds = softmax_backward(dprobs, local_probs)                             # [B, H, N, K, G+K]
    dqb = ds @ block_keys(k, G, K)                                         # [B, H, N, K, G+K] @ [B, H, N, G+K, D]
    dkb = ds.swapaxes(-1, -2) @ q[:, :, G:].reshape(B, H, N, K, D)         # [B, H, N, G+K, K] @ [B, H, N, K, D]
    dq = xp.concatenate([xp.zeros_like(q[:, :, :G]), dqb.reshape(B, H, P, D)], axis=2)  # [B, H, G+P, D]
    dk = xp.concatenate([dkb[:, :, :, :G].sum(axis=2),                     # [B, H, G, D] every block's share
                         dkb[:, :, :, G:].reshape(B, H, P, D)], axis=2)    # [B, H, G+P, D]
    dv = xp.concatenate([dvb[:, :, :, :G].sum(axis=2), dvb[:, :, :, G:].reshape(B, H, P, D)], axis=2)

    # Global tokens: global_out = global_probs @ v over all G+P keys.
    dglobal = dheads[:, :, :G]                                             # [B, H, G, D]
    dv += global_probs.swapaxes(-1, -2) @ dglobal                          # [B, H, G+P, G] @ [B, H, G, D]
    ds = softmax_backward(dglobal @ v.swapaxes(-1, -2), global_probs)      # [B, H, G, D] @ [B, H, D, G+P]
    dq[:, :, :G] += ds @ k                                                 # [B, H, G, G+P] @ [B, H, G+P, D]
    dk += ds.swapaxes(-1, -2) @ q[:, :, :G]                                # [B, H, G+P, G] @ [B, H, G, D]

    # The projections of the joint rows (q was pre-scaled: d(q_proj output) = dq * D^-1/2).
    dboth, g_q = linear_backward(merge_heads(dq * D ** -0.5), cache.proj[0], bias=False)  # [B, G+P, M]
    dboth_k, g_k = linear_backward(merge_heads(dk), cache.proj[1], bias=False)
    dboth_v, g_v = linear_backward(merge_heads(dv), cache.proj[2], bias=False)
    dboth += dboth_k
    dboth += dboth_v
    grads = {"q_proj": g_q, "k_proj": g_k, "v_proj": g_v, "out_proj": g_out}
    return dboth[:, G:], dboth[:, :G], grads


def stagger_backward(dh, block_size):
    """Through stagger's padding of K/2 positions at both ends: [B, P+K, M] -> [B, P, M]."""
    h = stagger_shift(block_size, staggered=True)
    return dh[:, h:-h]


def unstagger_backward(dh, block_size):
    """Through the un-padding after a staggered attention (h[:, K/2:-K/2]): [B, P, M] -> [B, P+K, M], zeros
    at the padded ends (their outputs are dropped)."""
    xp = array_module(dh)
    h = stagger_shift(block_size, staggered=True)
    return xp.pad(dh, ((0, 0), (h, h), (0, 0)))


class EncoderLayerCache(NamedTuple):
    """What encoder_layer_backward reads: each sub-block's cache (inputs [B, P, M] and [B, G, M]) and the
    layer's layout."""
    norm: LayerNormCache                       # self_attn_layer_norm, tokens
    global_norm: LayerNormCache                # global_self_attn_layer_norm
    attention: GlobalLocalCache
    final_norm: LayerNormCache                 # final_layer_norm, tokens
    ffn: FfnCache
    global_final_norm: LayerNormCache          # the same final_layer_norm, global tokens
    global_ffn: FfnCache
    staggered: bool
    block_size: int


def encoder_layer_forward(x, g, mask, p, config, staggered):
    """encoder_layer with its cache: x [B, P, M], g [B, G, M], mask [B, P] -> (x, g), cache."""
    K = config.block_size
    h, c_norm = layer_norm_forward(x, p["self_attn_layer_norm"])           # [B, P, M]
    hg, c_gnorm = layer_norm_forward(g, p["global_self_attn_layer_norm"])  # [B, G, M]
    if staggered:
        h, mask = stagger(h, mask, K)                                      # [B, P+K, M]
    (h, hg), c_att = global_local_attention_forward(h, hg, mask, p["self_attn"], config.encoder_attention_heads, K)
    if staggered:
        shift = stagger_shift(K, staggered)
        h = h[:, shift:-shift]                                             # [B, P, M]
    x = x + h
    g = g + hg
    h, c_fnorm = layer_norm_forward(x, p["final_layer_norm"])
    h, c_ffn = ffn_forward(h, p, config.activation_function)
    hg, c_gfnorm = layer_norm_forward(g, p["final_layer_norm"])
    hg, c_gffn = ffn_forward(hg, p, config.activation_function)
    cache = EncoderLayerCache(c_norm, c_gnorm, c_att, c_fnorm, c_ffn, c_gfnorm, c_gffn, staggered, K)
    return (x + h, g + hg), cache


def encoder_layer_backward(dx, dg, cache):
    """dx [B, P, M], dg [B, G, M] (gradients of the layer's outputs) -> dx, dg of its inputs and the layer's
    gradients under its checkpoint names. The FFN and final_layer_norm serve tokens and global tokens:
    their gradients accumulate."""
    dh, grads = ffn_backward(dx, cache.ffn)                                # [B, P, M]
    dh, grads["final_layer_norm"] = layer_norm_backward(dh, cache.final_norm)
    dx = dx + dh                                                           # residual
    dh, g_ffn = ffn_backward(dg, cache.global_ffn)                         # [B, G, M]
    dh, g_norm = layer_norm_backward(dh, cache.global_final_norm)
    add_grads(grads, {**g_ffn, "final_layer_norm": g_norm})
    dg = dg + dh
    dh = unstagger_backward(dx, cache.block_size) if cache.staggered else dx  # [B, P(+K), M]
    dh, dhg, grads["self_attn"] = global_local_attention_backward(dh, dg, cache.attention)
    if cache.staggered:
        dh = stagger_backward(dh, cache.block_size)                        # [B, P, M]
    dh, grads["self_attn_layer_norm"] = layer_norm_backward(dh, cache.norm)
    dhg, grads["global_self_attn_layer_norm"] = layer_norm_backward(dhg, cache.global_norm)
    return dx + dh, dg + dhg, grads


class EncoderCache(NamedTuple):
    """What encoder_backward reads: each layer's cache (or only its inputs [B, P, M], [B, G, M] under
    recomputation) and the final layer norm's."""
    embed: EmbedCache
    layers: list                               # per layer its EncoderLayerCache, or its inputs (x, g) to recompute it
    mask: object                               # [B, P] additive
    final_norm: LayerNormCache
    params: dict                               # the tree under "model" (read again when recomputing)
    config: object


def encoder_forward(params, config, input_ids, attention_mask, recompute=False):
    """encoder() for training: ids [B, T], 1/0 mask [B, T] -> last hidden state [B, T, M], cache.
    recompute=True keeps only each layer's inputs, [B, P, M] and [B, G, M], and runs the layer's forward
    again inside the backward (activation recomputation: one layer's intermediates alive at a time)."""
    p = params["encoder"]
    scale = config.d_model ** 0.5 if config.scale_embedding else 1.0
    table = p.get("embed_tokens", params["shared"])["weight"]             # [V, M] tied unless untied
    x, c_embed = embed_tokens_forward(input_ids, table, scale)             # [B, T, M]
    xp, dtype = array_module(x), x.dtype
    B, T, M = x.shape
    x = x + sinusoidal_positions(0, T, M, xp, dtype)                       # [B, T, M]
    mask = additive_mask(attention_mask, dtype, xp)                        # [B, T]
    pad = padded_length(T, config.block_size) - T
    x = xp.pad(x, ((0, 0), (0, pad), (0, 0)))                              # [B, P, M]
    mask = xp.pad(mask, ((0, 0), (0, pad)), constant_values=finfo(dtype).min)  # [B, P]
    g = xp.broadcast_to(p["embed_global"]["weight"], (B,) + p["embed_global"]["weight"].shape)  # [B, G, M]
    caches = []
    for i, layer_p in enumerate(p["layers"]):
        inputs = (x, g)
        (x, g), c = encoder_layer_forward(x, g, mask, layer_p, config, config.is_staggered(i))
        caches.append(inputs if recompute else c)
        del c                                                              # recompute: this layer's cache dies here
    h, c_norm = layer_norm_forward(x[:, :T], p["layer_norm"])              # [B, T, M] tokens only
    return h, EncoderCache(c_embed, caches, mask, c_norm, params, config)


def encoder_backward(dh, cache):
    """dh [B, T, M] -> (the encoder's gradients under its checkpoint names, the token table's gradient
    [V, M]: the caller adds it to the tied table's)."""
    xp = array_module(dh)
    config, p = cache.config, cache.params["encoder"]
    B, T, M = dh.shape
    dx, g_norm = layer_norm_backward(dh, cache.final_norm)                 # [B, T, M]
    P = cache.mask.shape[1]
    dx = xp.pad(dx, ((0, 0), (0, P - T), (0, 0)))                          # [B, P, M] the padding's is 0
    dg = xp.zeros((B,) + p["embed_global"]["weight"].shape, dh.dtype)      # [B, G, M]
    layers = [None] * len(cache.layers)
    for i in reversed(range(len(cache.layers))):
        c = cache.layers[i]
        if not isinstance(c, EncoderLayerCache):                           # recompute the layer's forward
            _, c = encoder_layer_forward(*c, cache.mask, p["layers"][i], config, config.is_staggered(i))
        dx, dg, layers[i] = encoder_layer_backward(dx, dg, c)
    grads = {"layers": layers, "layer_norm": g_norm, "embed_global": {"weight": dg.sum(axis=0)}}  # [G, M]
    dtable = embed_tokens_backward(dx[:, :T], cache.embed, config.pad_token_id)  # positions are constants
    return grads, dtable
