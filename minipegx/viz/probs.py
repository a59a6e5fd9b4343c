"""What the model actually attends: real attention probabilities as arrays, without a T x T matrix
unless asked for one.

    densify              one layer's blocked probabilities stitched into the full picture  [H, G+T, G+T]
    attention_tiles      the same, pooled into tiles (max or mean), from the blocked form  [m, m]
    cross_attention_map  a summary's cross-attention over the source, pooled or top-k      [S, C]
    to_bertviz           short inputs as bertviz's model_view wants them                   [1, H, L, L]

Only NumPy here; draw.py turns these into pictures. Axis convention: the G global tokens first, then the
T tokens (index G + t is token t); rows are queries, columns keys.
"""

from __future__ import annotations

import numpy as np

from ..blocks import key_positions, num_blocks, query_positions, stagger_shift
from ..errors import InputError
from .patterns import as_numpy, check_length, display_axis, layer_index, tile_side


def layer_probs(attentions_layer, config, layer, length, batch_index):
    """One layer's {"local": [B, H, N, K, G+K], "global": [B, H, G, G+P]} (minipegx's or transformers'
    output_attentions) -> NumPy local [H, N, K, G+K], global [H, G, G+P] of one sequence, shapes checked."""
    if not (isinstance(attentions_layer, dict) and "local" in attentions_layer and "global" in attentions_layer):
        raise InputError("expected one encoder layer's attentions, a dict with 'local' and 'global' arrays "
                         "(output.encoder_attentions[layer] of a forward pass with output_attentions=True), "
                         f"got {type(attentions_layer).__name__}")
    local, glob = as_numpy(attentions_layer["local"]), as_numpy(attentions_layer["global"])
    if local.dtype not in (np.float32, np.float64):  # float16, bfloat16 (ml_dtypes): widen once
        local, glob = local.astype(np.float32), glob.astype(np.float32)
    if local.ndim == 5 and glob.ndim == 4:
        if not -local.shape[0] <= batch_index < local.shape[0]:
            raise InputError(f"batch_index {batch_index} is outside the batch of {local.shape[0]}")
        local, glob = local[batch_index], glob[batch_index]
    G, K, T = config.num_global_tokens, config.block_size, length
    staggered = config.is_staggered(layer)
    N = num_blocks(T, K, staggered)                               # a staggered layer has one block more
    P = N * K
    if local.shape[1:] != (N, K, G + K) or glob.shape[1:] != (G, G + P) or local.shape[0] != glob.shape[0]:
        raise InputError(
            f"encoder layer {layer} is {'' if staggered else 'not '}staggered, so for length {T} its attentions "
            f"should be local [B, H, {N}, {K}, {G + K}] and global [B, H, {G}, {G + P}], got local "
            f"{tuple(attentions_layer['local'].shape)} and global {tuple(attentions_layer['global'].shape)}. "
            "Is `length` the number of input tokens (attention_mask.shape[1]) and `layer` the index of these "
            "attentions in output.encoder_attentions?")
    return local, glob


def entries(local, glob, config, layer, length, queries=None, global_rows=True):
    """Where every blocked probability lands in the [G+T, G+T] picture.

    local [..., N, K, G+K], glob [..., G, G+P] -> rows [E], cols [E], values [..., E]. Only entries on
    real positions (< T) are kept: the padding's probabilities are exactly 0. queries=(start, stop)
    keeps only the blocks holding those token queries (cheaper for a region of a long input)."""
    G, K, T = config.num_global_tokens, config.block_size, length
    staggered = config.is_staggered(layer)
    shift = stagger_shift(K, staggered)                           # padded position = token position + shift
    n0, n1 = 0, local.shape[-3]
    if queries is not None:
        n0, n1 = (queries[0] + shift) // K, -(-(queries[1] + shift) // K)
    blocks = np.arange(n0, n1)
    q = query_positions(blocks, K, staggered)                     # [N', K] query token of (block, row)
    key = key_positions(blocks, K, G, staggered)                  # [N', G+K] key token (negative: global)
    slot = np.arange(G + K)                                       # [G+K]: G globals, then the block
    ok = ((q >= 0) & (q < T))[:, :, None] & \
        ((slot < G) | ((key >= 0) & (key < T)))[:, None, :]      # [N', K, G+K]: real query, real key
    rows = np.broadcast_to((G + q)[:, :, None], ok.shape)[ok]
    cols = np.broadcast_to((G + key)[:, None, :], ok.shape)[ok]
    vals = local[..., n0:n1, :, :][..., ok]                       # [..., E_local]
    if global_rows:
        c = np.arange(glob.shape[-1])                             # [G+P] key slot of the global rows
        key = np.where(c < G, c - G, c - G - shift)
        okc = (c < G) | ((key >= 0) & (key < T))
        rows = np.concatenate([rows, np.repeat(np.arange(G), okc.sum())])
        cols = np.concatenate([cols, np.tile(G + key[okc], G)])
        vals = np.concatenate([vals, glob[..., okc].reshape(*glob.shape[:-2], -1)], axis=-1)
    return rows, cols, vals


def densify(attentions_layer, config, layer, length, batch_index=0):
    """One encoder layer's blocked attention probabilities, stitched into the full picture.

    attentions_layer: output.encoder_attentions[layer] of a forward pass with output_attentions=True,
    {"local": [B, H, N, K, G+K], "global": [B, H, G, G+P]} (minipegx's or transformers' tensors).
    Returns [H, G+T, G+T], rows queries and columns keys, globals first: zero where attention is
    impossible (see attention_pattern), and every row sums to 1. Memory is H (G+T)^2 floats, so for long
    inputs use attention_tiles, which pools from the blocked form without building this."""
    layer = layer_index(config, layer)
    T = check_length(length)
    local, glob = layer_probs(attentions_layer, config, layer, T, batch_index)
    rows, cols, vals = entries(local, glob, config, layer, T)
    G = config.num_global_tokens
    dense = np.zeros((local.shape[0], G + T, G + T), dtype=np.result_type(vals.dtype, np.float32))
    dense[:, rows, cols] = vals                                   # each (query, key) pair occurs once
    return dense


def encoder_attentions(obj):
    """Per-layer encoder attentions from a model output (minipegx's or transformers'), a tuple of layer
    dicts, or one layer dict (returned as a 1-tuple with single=True)."""
    if isinstance(obj, dict) and "local" in obj:
        return (obj,), True
    for name in ("encoder_attentions", "attentions"):
        att = getattr(obj, name, None)
        if att is not None:
            return tuple(att), False
    if isinstance(obj, (tuple, list)) and obj and isinstance(obj[0], dict):
        return tuple(obj), False
    raise InputError("no encoder attentions here: pass the output of model(..., output_attentions=True) "
                     "(or model.encode(..., output_attentions=True)), its encoder_attentions, or one layer's dict")


def output_length(obj, fallback):
    for name in ("encoder_last_hidden_state", "last_hidden_state"):
        h = getattr(obj, name, None)
        if h is not None:
            return int(h.shape[1])
    return fallback


def attention_tiles(attentions, config, layer, head=None, region=None, max_pixels=1000, length=None,
                    batch_index=0, pool="max", tokens=None, include_globals=True):
    """One encoder layer's probabilities (a head, or the mean over heads) pooled into tiles, from the
    blocked tensors (never the dense matrix): pool="max" (the strongest attention in a tile, so sparse
    structure shows) or "mean". Arguments as viz.plot_attention.
    Returns (tiles [m, m] float64, shown indices [n], globals shown, cells per tile side s, layer, T)."""
    layers, single = encoder_attentions(attentions)
    layer_i = layer_index(config, layer)
    att = layers[0] if single else layers[layer_i] if len(layers) == config.encoder_layers else None
    if att is None:
        raise InputError(f"got attentions of {len(layers)} layers but the config has {config.encoder_layers}")
    if length is None:  # the output knows it; else the tokens; else the padded length (padding shows blank)
        padded = (att["local"].shape[-3] - config.is_staggered(layer_i)) * config.block_size
        length = output_length(attentions, len(tokens) if tokens is not None else padded)
    T = check_length(length)
    local, glob = layer_probs(att, config, layer_i, T, batch_index)
    H = local.shape[0]
    if head is None:
        local, glob = local.mean(axis=0), glob.mean(axis=0)      # mean over heads (linear, so blocked is fine)
    elif isinstance(head, (int, np.integer)) and -H <= head < H:
        local, glob = local[head], glob[head]
    else:
        raise InputError(f"head must be None (mean over heads) or a head index in [0, {H}), got {head!r}")
    if pool not in ("max", "mean"):
        raise InputError(f"pool must be 'max' or 'mean', got {pool!r}")
    if tokens is not None and len(tokens) != T:
        raise InputError(f"got {len(tokens)} tokens for an input of length {T}")

    idx, g, start = display_axis(config, T, region, include_globals)
    stop = idx[-1] - config.num_global_tokens + 1
    rows, cols, vals = entries(local, glob, config, layer_i, T, queries=(start, stop), global_rows=g > 0)
    n = len(idx)
    where = np.full(config.num_global_tokens + T, -1)
    where[idx] = np.arange(n)                                     # [G+T] -> position on screen, or -1
    r, c = where[rows], where[cols]
    shown = (r >= 0) & (c >= 0)
    s = tile_side(n, max_pixels)
    m = -(-n // s)
    flat = (r[shown] // s) * m + c[shown] // s
    v = vals[shown].astype(np.float64)
    if pool == "max":
        img = np.zeros(m * m)
        np.maximum.at(img, flat, v)
    else:
        size = np.bincount(np.arange(n) // s, minlength=m)        # cells per tile side (the last may be short)
        img = np.bincount(flat, weights=v, minlength=m * m) / np.outer(size, size).ravel()
    return img.reshape(m, m), idx, g, s, layer_i, T


# ============================================================================== cross-attention
def cross_attention_map(cross_attentions, source_tokens, summary_tokens, layer=-1, head=None,
                        top_k_sources=None, max_sources=80, batch_index=0):
    """Cross-attention of the summary (rows) over the source tokens (columns), ready to draw.

    cross_attentions: output of model(..., decoder_input_ids=..., output_attentions=True), its
    cross_attentions (per decoder layer, [B, H, S, T]), or one [B, H, S, T] / [H, S, T] / [S, T] array.
    head None: mean over heads. Long sources: top_k_sources keeps the k source tokens with the most
    attention mass (in source order); otherwise more than max_sources tokens are summed into equal
    spans labelled by position. Returns (map [S, C] float64, column labels [C], what the columns are, layer)."""
    att = getattr(cross_attentions, "cross_attentions", cross_attentions)
    if att is None:
        raise InputError("this output holds no cross_attentions: call the model with output_attentions=True")
    if isinstance(att, (tuple, list)):
        if not -len(att) <= layer < len(att):
            raise InputError(f"layer {layer} is outside the {len(att)} decoder layers")
        layer, att = layer % len(att), att[layer]
    a = as_numpy(att).astype(np.float64)
    if a.ndim == 4:
        a = a[batch_index]
    if a.ndim == 3:
        if head is None:
            a = a.mean(axis=0)
        elif isinstance(head, (int, np.integer)) and -a.shape[0] <= head < a.shape[0]:
            a = a[head]
        else:
            raise InputError(f"head must be None (mean over heads) or a head index in [0, {a.shape[0]}), got {head!r}")
    if a.ndim != 2:
        raise InputError(f"cross-attention must be [B, H, S, T], [H, S, T] or [S, T], got shape {as_numpy(att).shape}")
    S, T = a.shape
    if len(summary_tokens) != S or len(source_tokens) != T:
        raise InputError(f"the cross-attention is {S} summary steps x {T} source tokens, but got "
                         f"{len(summary_tokens)} summary_tokens and {len(source_tokens)} source_tokens "
                         "(rows are the decoder inputs: the start token, then the summary shifted right)")
    if top_k_sources is not None:
        k = min(int(top_k_sources), T)
        cols = np.sort(np.argsort(a.sum(axis=0), kind="stable")[::-1][:k])
        return a[:, cols], [f"{source_tokens[c]} ·{c}" for c in cols], \
            f"the {k} source tokens with the most attention", layer
    if T > max_sources:
        w = -(-T // max_sources)                                  # tokens per span
        starts = np.arange(0, T, w)
        return np.add.reduceat(a, starts, axis=1), [f"{b}-{min(b + w, T) - 1}" for b in starts], \
            f"source tokens summed over spans of {w}", layer     # attention mass per span
    return a, [str(t) for t in source_tokens], "source tokens", layer


# ============================================================================== bertviz
def encoder_token_labels(config, tokens, include_globals=True):
    """The encoder token labels matching to_bertviz's matrices: <global 0>.. first, then the tokens."""
    return ([f"<global {k}>" for k in range(config.num_global_tokens)] if include_globals else []) + \
        [str(t) for t in tokens]


def to_bertviz(output, config, tokens, summary_tokens=None, include_globals=True, max_length=512,
               batch_index=0):
    """Attentions of a short input as bertviz's model_view wants them, as NumPy arrays:
    (encoder_attention, decoder_attention, cross_attention), tuples with one [1, H, L, L] array per
    layer (cross: [1, H, S, L]); the decoder ones are None when the output has none.

    The encoder's matrices come from densify; with include_globals the global tokens come first (use
    encoder_token_labels for the labels) and rows sum to 1, and cross-attention gets zero columns for
    them (the decoder does not read global tokens). bertviz wants torch tensors; convert at the call:

        enc, dec, cross = viz.to_bertviz(out, model.config, src_tokens)
        t = lambda layers: [torch.from_numpy(a) for a in layers]
        model_view(encoder_attention=t(enc), decoder_attention=t(dec), cross_attention=t(cross),
                   encoder_tokens=viz.encoder_token_labels(model.config, src_tokens), decoder_tokens=dec_tokens)
    """
    T = len(tokens)
    if T > max_length or (summary_tokens is not None and len(summary_tokens) > max_length):
        raise InputError(f"to_bertviz draws every token pair, which is unreadable and heavy beyond {max_length} "
                         f"tokens (got {T}); for long inputs use viz.plot_attention(..., region=(start, stop), "
                         "max_pixels=...), which pools the attention into a legible picture")
    layers, single = encoder_attentions(output)
    if single or len(layers) != config.encoder_layers:
        raise InputError(f"to_bertviz needs every encoder layer's attentions ({config.encoder_layers}); pass the "
                         "output of a forward pass with output_attentions=True")
    T = check_length(T)
    G = config.num_global_tokens if include_globals else 0
    off = config.num_global_tokens - G
    enc = tuple(densify(a, config, i, T, batch_index)[None, :, off:, off:] for i, a in enumerate(layers))
    dec = getattr(output, "decoder_attentions", None)
    cross = getattr(output, "cross_attentions", None)
    if dec is not None:
        dec = tuple(as_numpy(a)[batch_index][None] for a in dec)
        if summary_tokens is not None and dec[0].shape[-1] != len(summary_tokens):
            raise InputError(f"the decoder attentions cover {dec[0].shape[-1]} steps but got "
                             f"{len(summary_tokens)} summary_tokens")
    if cross is not None:
        cross = tuple(np.pad(as_numpy(a)[batch_index][None], ((0, 0), (0, 0), (0, 0), (G, 0))) for a in cross)
        if cross[0].shape[-1] != G + T:
            raise InputError(f"the cross-attentions cover {cross[0].shape[-1] - G} source tokens, not {T}")
    return enc, dec, cross
