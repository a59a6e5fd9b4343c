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
from .layers import (additive_mask, embed_tokens, ffn, layer_norm, linear, record,
                     sinusoidal_positions, softmax, split_heads)
from .parallel import for_slices
from .precision import assert_finite, checks_on, matmul, residual, scores

FFN_ROWS = 512   # positions per piece of the FFN on NumPy: BLAS is as fast on [512, M] as on all rows


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
    # the global tokens' keys), as one [G+P, M] @ [M, M] product each. Queries are pre-scaled by D^-1/2,
    # as the reference does (q_proj(x) * scaling).
    both = xp.concatenate([g, x], axis=1)                        # [B, G+P, M]
    q = split_heads(linear(both, w["q_proj"]), H)                # [B, H, G+P, D]
    q *= D ** -0.5                                               # in place: q is our own
    k = split_heads(linear(both, w["k_proj"]), H)                # [B, H, G+P, D]
    v = split_heads(linear(both, w["v_proj"]), H)                # [B, H, G+P, D]
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

    out = linear(out.reshape(B, G + P, M), w["out_proj"])        # [B, G+P, H, D] -> [B, G+P, M] -> [B, G+P, M]
    g_out, t_out = out[:, :G], out[:, G:]                        # [B, G, M], [B, P, M]
    return t_out, g_out, {"local": local_probs, "global": global_probs} if output_attentions else None


def stagger(x, mask, block_size):
    """Shift blocks by half a block: pad K/2 tokens (masked) on both sides, so the padded sequence has
    one block more and every block straddles two of the unstaggered ones (pad_local_tokens)."""
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
    h = layer_norm(x, p["self_attn_layer_norm"])                 # [B, P, M]
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
    x = x + h                                                    # [B, P, M] our own array: the FFN adds into it
    g = g + hg
    g = g + ffn(layer_norm(g, p["final_layer_norm"]), p, config.activation_function)

    # The FFN sees each position alone: slices of FFN_ROWS positions are handed out through the parallel
    # seam, each adding its FFN output into its rows of x (one slice's [rows, F] hidden stays small).
    def feed_forward(rows):                                      # rows: a slice of the P positions
        x[:, rows] += ffn(layer_norm(x[:, rows], p["final_layer_norm"]), p, config.activation_function)

    for_slices(feed_forward, x.shape[1], array_module(x), step=FFN_ROWS)
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

    checks = checks_on(check_finite, dtype)      # default: on under fp16/bf16
    hidden_states, attentions = [], []
    for i, layer_p in enumerate(p["layers"]):
        if output_hidden_states:
            hidden_states.append(x)
        x, g, probs = encoder_layer(x, g, mask, layer_p, config, config.is_staggered(i), trace,
                                    f"model.encoder.layers.{i}", output_attentions)
        if checks:  # inf/NaN is reported with the layer where it appeared (precision.py)
            assert_finite(x, f"model.encoder.layers.{i} (tokens)", dtype)
            assert_finite(g, f"model.encoder.layers.{i} (global tokens)", dtype)
        if output_attentions:
            attentions.append(probs)

    x = layer_norm(x[:, :T], p["layer_norm"])                    # [B, T, M] tokens only
    record(trace, "model.encoder.layer_norm", x)
    if output_hidden_states:
        hidden_states.append((x, g))
    return (x, tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None)
