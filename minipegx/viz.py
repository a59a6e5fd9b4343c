"""Pictures of PEGASUS-X's attention: who may attend whom, what the model actually attends, how far
information travels per layer, and what the encoder costs against full attention.

The computational half needs only NumPy:
    attention_pattern  which query may attend which key, per layer or over all layers   [G+T, G+T] bool
    densify            blocked probabilities of one layer stitched into the full picture [H, G+T, G+T]
    influence_hops     after how many layers token j can reach token i                   [T, T] int
    encoder_cost       FLOPs and bytes of the encoder (PEGASUS-X or full attention)      dict
    to_bertviz         short inputs as bertviz's model_view wants them                   NumPy [1, H, L, L]
The plot_* functions draw them with matplotlib (imported when first called; `pip install
'minipegx[viz]'`). They return a matplotlib Figure, take an `ax=` to draw into a figure of your own,
and never call plt.show(): the figures are built without pyplot, so no global figure state piles up.
In a notebook, run `%matplotlib inline` (or import pyplot) once and a returned figure shows as the
cell's value; in a script, fig.savefig("x.png").

One axis convention everywhere, the reference's: the G global tokens first, then the T tokens, so
index G + t is token t. Rows are queries, columns keys. Shape legend: B batch, H heads, T tokens,
P tokens padded to whole blocks, N blocks, K block size, G global tokens, S decoder steps,
L encoder layers, M d_model, F FFN width.

What the encoder computes (encoder.py), in the terms used here:
  * a token attends the G global tokens and the tokens of its own block of K;
  * a staggered layer (odd layers, when config.stagger_local_blocks) first pads K/2 masked tokens in
    front, so its blocks are shifted by half a block (N + 1 blocks: the first and last are half empty);
  * a global token attends every global token and every token;
  * padding -- to a whole number of blocks, the half blocks of a staggered layer, and tokens that the
    attention_mask marks 0 -- is never attended (its probability is exactly 0). Padding queries are
    still computed (and then ignored), so their rows are part of the pattern.
"""

from __future__ import annotations

import math

import numpy as np

from .backend import to_numpy
from .errors import BackendError, InputError

# Bits of one (query, key) cell. The first three say why attention is allowed there; PADDING marks a
# cell that the structure allows but the attention_mask hides (masked key) or discards (masked query).
GLOBAL, LOCAL, STAGGERED, PADDING = 1, 2, 4, 8
ALLOWED = GLOBAL | LOCAL | STAGGERED

# Colours of the pattern plot, one per category (white: attention impossible).
CATEGORIES = (("impossible", "#ffffff"), ("padding", "#c7c7c7"), ("local block", "#1f77b4"),
              ("staggered block", "#ff7f0e"), ("local and staggered", "#9467bd"), ("global", "#d62728"))


# ============================================================================== checks at the boundary
def _layer_index(config, layer):
    L = config.encoder_layers
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -L <= layer < L:
        raise InputError(f"layer must be an encoder layer index in [-{L}, {L}) (the model has {L} encoder "
                         f"layers), got {layer!r}")
    return int(layer) % L


def _layers(config, layer):
    """layer None -> every encoder layer; an int -> that one."""
    return list(range(config.encoder_layers)) if layer is None else [_layer_index(config, layer)]


def _length(length):
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise InputError(f"length must be the number of input tokens (a positive integer), got {length!r}")
    return int(length)


def _keep(attention_mask, length):
    """1/0 attention mask of one sequence -> bool [T] (True: a real token). None: every token is real."""
    if attention_mask is None:
        return np.ones(length, dtype=bool)
    m = _as_numpy(attention_mask)
    if m.ndim == 2 and m.shape[0] == 1:
        m = m[0]
    if m.shape != (length,):
        raise InputError(f"attention_mask must be one sequence's 1/0 mask of shape ({length},) (or (1, {length})), "
                         f"got shape {m.shape}")
    return m == 1


def _as_numpy(x):
    """NumPy, CuPy or torch (CPU or GPU, any float dtype) -> NumPy, without importing torch."""
    if hasattr(x, "detach"):  # a torch tensor, e.g. from transformers' output_attentions
        x = x.detach()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.cpu().numpy()
    return to_numpy(x)


def _mpl():
    """matplotlib, imported on first use (so the computations above need only NumPy), or a
    BackendError that says how to install it."""
    try:
        import matplotlib
        import matplotlib.colors
        import matplotlib.figure
        import matplotlib.patches
        import matplotlib.ticker
    except ImportError as e:
        raise BackendError("minipegx.viz plots need matplotlib, which is not installed: "
                           "pip install 'minipegx[viz]'") from e
    return matplotlib


def _figure(figsize, ax=None, ncols=1):
    """A new matplotlib Figure (not registered with pyplot) and its axes -- or ax and its own figure."""
    if ax is not None:
        return ax.figure, ax
    fig = _mpl().figure.Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(1, ncols)


# ============================================================================== the attention pattern
def _cell_bits(config, keep, layers, rows, cols):
    """Bits (GLOBAL, LOCAL, STAGGERED, PADDING) of the cells rows x cols of the [G+T, G+T] picture, for
    the union over `layers`. rows [R], cols [C] index the globals-then-tokens axis -> uint8 [R, C]."""
    G, K = config.num_global_tokens, config.block_size
    r, c = rows[:, None], cols[None, :]                           # [R, 1], [1, C]
    rt, ct = r - G, c - G                                         # token positions (negative: a global)
    real_key = (c < G) | keep[np.maximum(ct, 0)]                  # globals are never masked
    real_query = (r < G) | keep[np.maximum(rt, 0)]
    structural = (r < G) | (c < G)                                # a global query or a global key
    bits = np.where(structural & real_key, GLOBAL, 0).astype(np.uint8)
    tokens = (r >= G) & (c >= G)
    for staggered, bit in ((False, LOCAL), (True, STAGGERED)):
        if any(config.is_staggered(layer) == staggered for layer in layers):
            shift = K // 2 if staggered else 0                    # staggered blocks start K/2 earlier
            same = tokens & ((rt + shift) // K == (ct + shift) // K)  # both in one block
            bits |= np.where(same & real_key, bit, 0).astype(np.uint8)
            structural = structural | same
    bits |= np.where(structural & ~(real_key & real_query), PADDING, 0).astype(np.uint8)
    return bits


def attention_pattern(config, length, layer=0, attention_mask=None):
    """Which query may attend which key in encoder `layer` (None: in any layer) -> bool [G+T, G+T].

    Rows are queries, columns keys, the G global tokens first. attention_mask (one sequence's 1/0
    mask, [T]) removes padded keys; padded queries keep their rows, which the model computes and
    then ignores. Memory is (G+T)^2 bytes: for long inputs plot_attention_pattern pools instead."""
    T = _length(length)
    idx = np.arange(config.num_global_tokens + T)
    return (_cell_bits(config, _keep(attention_mask, T), _layers(config, layer), idx, idx) & ALLOWED) > 0


def _category(bits):
    """Bits -> index into CATEGORIES, the strongest reason first (global > both > local/staggered > padding)."""
    cat = np.where(bits & PADDING, 1, 0)
    cat = np.where(bits & STAGGERED, 3, cat)
    cat = np.where(bits & LOCAL, 2, cat)
    cat = np.where(((bits & LOCAL) > 0) & ((bits & STAGGERED) > 0), 4, cat)
    return np.where(bits & GLOBAL, 5, cat)


def _display_axis(config, length, region, include_globals=True):
    """The indices (into the [G+T] axis) shown on each side of a picture: the globals, then tokens
    region[0]..region[1]-1 -> (indices, number of globals shown, start)."""
    G, T = config.num_global_tokens, length
    start, stop = (0, T) if region is None else region
    if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer)) and 0 <= start < stop <= T):
        raise InputError(f"region must be (start, stop) token positions with 0 <= start < stop <= {T}, got {region!r}")
    g = G if include_globals else 0
    return np.concatenate([np.arange(g), G + np.arange(start, stop)]), g, int(start)


def _tile(n, max_pixels):
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise InputError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    return -(-n // int(max_pixels))                               # cells per pixel side, >= 1


def plot_attention_pattern(config, length, layer=None, attention_mask=None, region=None, max_pixels=1000,
                           legend=True, ax=None):
    """Draw attention_pattern: one layer (int) or the union over layers (None), coloured by why a cell
    is allowed -- global token, local block, staggered block, both -- and grey where padding hides it.

    Inputs longer than max_pixels are pooled: a pixel is the OR over its tile of cells, so thin
    structures (the global rows and columns) stay visible; the pattern is computed tile row by tile
    row, so memory stays small even for 16k tokens."""
    mpl = _mpl()
    T = _length(length)
    layers = _layers(config, layer)
    keep = _keep(attention_mask, T)
    idx, g, start = _display_axis(config, T, region)
    n = len(idx)
    s = _tile(n, max_pixels)
    m = -(-n // s)                                                # pixels per side
    pad = m * s - n
    pooled = np.zeros((m, m), dtype=np.uint8)
    rows_per_step = s * max(1, (1 << 22) // (n * s))              # about 4M cells per step
    for a in range(0, n, rows_per_step):
        rows = idx[a:a + rows_per_step]
        bits = _cell_bits(config, keep, layers, rows, idx)
        bits = np.where(bits & PADDING, PADDING, bits).astype(np.uint8)  # padding shows as padding
        bits = np.pad(bits, ((0, (-len(rows)) % s), (0, pad)))
        bits = np.bitwise_or.reduce(bits.reshape(-1, s, m, s), axis=(1, 3))
        pooled[a // s:a // s + len(bits)] = bits

    fig, ax = _figure((6.4, 6), ax)
    cat = _category(pooled)
    ax.imshow(cat, cmap=mpl.colors.ListedColormap([c for _, c in CATEGORIES]), vmin=0, vmax=len(CATEGORIES) - 1,
              interpolation="nearest", extent=(0, m * s, m * s, 0))
    _position_axes(ax, idx, g, config.num_global_tokens, s, None, config.block_size)
    which = "all layers" if layer is None else \
        f"layer {layers[0]} ({'staggered' if config.is_staggered(layers[0]) else 'local'} blocks)"
    ax.set_title(f"who may attend whom, {which}\nK={config.block_size}, G={config.num_global_tokens}, T={T}"
                 + (f", {s}x{s} tokens per pixel" if s > 1 else ""), fontsize=10)
    if legend:
        present = sorted(set(np.unique(cat)) - {0})
        ax.legend(handles=[mpl.patches.Patch(facecolor=CATEGORIES[i][1], label=CATEGORIES[i][0]) for i in present],
                  loc="lower left", bbox_to_anchor=(g / n + 0.02, 0.02), fontsize=8, framealpha=0.9)
    return fig


def _position_axes(ax, idx, g, G, s, tokens, block_size=None):
    """Label both axes of a [G+T]-indexed picture (tile s): the token positions, g0 for the globals.
    Ticks sit on cell edges at multiples of the block size when that gives a handful, so block
    borders are readable, else at multiples of a round step."""
    n = len(idx)
    if tokens is not None and s == 1 and n <= 80:
        labels = [f"<g{i}>" if i < G else str(tokens[i - G]) for i in idx]
        ticks = np.arange(n) + 0.5
        ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
        ax.set_yticks(ticks, labels, fontsize=7)
    else:
        start, stop = idx[g] - G, idx[-1] - G + 1                 # the token range shown
        span = stop - start
        if block_size and 2 <= span / block_size <= 10:
            step = block_size
        else:
            step = min(m * 10 ** e for e in range(int(math.log10(max(span, 1))) + 2) for m in (1, 2, 5)
                       if m * 10 ** e >= span / 8)
        pos = np.arange(-(-start // step) * step, stop, step)     # token positions, multiples of step
        ticks = list(g + pos - start) + ([0] if g else [])
        labels = [str(p) for p in pos] + (["g0"] if g else [])
        if g and ticks[0] - g < 0.04 * n:                         # g0 and the first token would collide
            ticks, labels = ticks[1:], labels[1:]
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.set_yticks(ticks, labels, fontsize=8)
    if 0 < g < n:  # a thin line between the global tokens and the tokens
        ax.axhline(g, color="k", lw=0.6)
        ax.axvline(g, color="k", lw=0.6)
    ax.set_xlabel("key (globals first, then token position)")
    ax.set_ylabel("query")


# ============================================================================== real probabilities
def _layer_probs(attentions_layer, config, layer, length, batch_index):
    """One layer's {"local": [B, H, N, K, G+K], "global": [B, H, G, G+P]} (minipegx's or transformers'
    output_attentions) -> NumPy local [H, N, K, G+K], global [H, G, G+P] of one sequence, shapes checked."""
    if not (isinstance(attentions_layer, dict) and "local" in attentions_layer and "global" in attentions_layer):
        raise InputError("expected one encoder layer's attentions, a dict with 'local' and 'global' arrays "
                         "(output.encoder_attentions[layer] of a forward pass with output_attentions=True), "
                         f"got {type(attentions_layer).__name__}")
    local, glob = _as_numpy(attentions_layer["local"]), _as_numpy(attentions_layer["global"])
    if local.dtype not in (np.float32, np.float64):  # float16, bfloat16 (ml_dtypes): widen once
        local, glob = local.astype(np.float32), glob.astype(np.float32)
    if local.ndim == 5 and glob.ndim == 4:
        if not -local.shape[0] <= batch_index < local.shape[0]:
            raise InputError(f"batch_index {batch_index} is outside the batch of {local.shape[0]}")
        local, glob = local[batch_index], glob[batch_index]
    G, K, T = config.num_global_tokens, config.block_size, length
    staggered = config.is_staggered(layer)
    N = -(-T // K) + staggered                                    # a staggered layer has one block more
    P = N * K
    if local.shape[1:] != (N, K, G + K) or glob.shape[1:] != (G, G + P) or local.shape[0] != glob.shape[0]:
        raise InputError(
            f"encoder layer {layer} is {'' if staggered else 'not '}staggered, so for length {T} its attentions "
            f"should be local [B, H, {N}, {K}, {G + K}] and global [B, H, {G}, {G + P}], got local "
            f"{tuple(attentions_layer['local'].shape)} and global {tuple(attentions_layer['global'].shape)}. "
            "Is `length` the number of input tokens (attention_mask.shape[1]) and `layer` the index of these "
            "attentions in output.encoder_attentions?")
    return local, glob


def _entries(local, glob, config, layer, length, queries=None, global_rows=True):
    """Where every blocked probability lands in the [G+T, G+T] picture.

    local [..., N, K, G+K], glob [..., G, G+P] -> rows [E], cols [E], values [..., E]. Only entries on
    real positions (< T) are kept: the padding's probabilities are exactly 0. queries=(start, stop)
    keeps only the blocks holding those token queries (cheaper for a region of a long input)."""
    G, K, T = config.num_global_tokens, config.block_size, length
    shift = K // 2 if config.is_staggered(layer) else 0           # padded position = token position + shift
    N = local.shape[-3]
    n0, n1 = 0, N
    if queries is not None:
        n0, n1 = (queries[0] + shift) // K, -(-(queries[1] + shift) // K)
    n = np.arange(n0, n1)[:, None]                                # [N', 1]
    q = n * K + np.arange(K) - shift                              # [N', K] query token of (block, row)
    j = np.arange(G + K)                                          # key slot: G globals, then the block
    key = np.where(j < G, j - G, n * K + (j - G) - shift)         # [N', G+K] key token (negative: global)
    ok = ((q >= 0) & (q < T))[:, :, None] & ((j < G) | ((key >= 0) & (key < T)))[:, None, :]  # [N', K, G+K]
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
    inputs use plot_attention, which pools from the blocked form without building this."""
    layer = _layer_index(config, layer)
    T = _length(length)
    local, glob = _layer_probs(attentions_layer, config, layer, T, batch_index)
    rows, cols, vals = _entries(local, glob, config, layer, T)
    G = config.num_global_tokens
    dense = np.zeros((local.shape[0], G + T, G + T), dtype=np.result_type(vals.dtype, np.float32))
    dense[:, rows, cols] = vals                                   # each (query, key) pair occurs once
    return dense


def _encoder_attentions(obj):
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


def _output_length(obj, fallback):
    for name in ("encoder_last_hidden_state", "last_hidden_state"):
        h = getattr(obj, name, None)
        if h is not None:
            return int(h.shape[1])
    return fallback


def plot_attention(attentions, config, layer, head=None, region=None, max_pixels=1000, length=None,
                   batch_index=0, pool="max", tokens=None, include_globals=True, log=False, ax=None):
    """Draw one encoder layer's real attention probabilities (a head, or the mean over heads).

    attentions: output of model(..., output_attentions=True) (or model.encode), its encoder_attentions,
    or one layer's dict (then `layer` says which layer it is, which decides the stagger).
    region=(start, stop): only those tokens (queries and keys; the global rows and columns stay unless
    include_globals=False). length: the number of input tokens; read from the output when it has
    one, else the padded length. Long inputs stay legible and small in memory: when more than
    max_pixels positions are shown, each pixel pools a tile of cells -- pool="max" (the strongest
    attention in the tile, so sparse structure shows) or "mean" (the tile's average) -- computed from
    the blocked tensors without building the dense matrix. tokens: labels when few enough to print.
    log=True: logarithmic colours (zeros blank), to see the small probabilities too."""
    mpl = _mpl()
    layers, single = _encoder_attentions(attentions)
    layer_i = _layer_index(config, layer)
    att = layers[0] if single else layers[layer_i] if len(layers) == config.encoder_layers else None
    if att is None:
        raise InputError(f"got attentions of {len(layers)} layers but the config has {config.encoder_layers}")
    if length is None:  # the output knows it; else the tokens; else the padded length (padding shows blank)
        padded = (att["local"].shape[-3] - config.is_staggered(layer_i)) * config.block_size
        length = _output_length(attentions, len(tokens) if tokens is not None else padded)
    T = _length(length)
    local, glob = _layer_probs(att, config, layer_i, T, batch_index)
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

    idx, g, start = _display_axis(config, T, region, include_globals)
    stop = idx[-1] - config.num_global_tokens + 1
    rows, cols, vals = _entries(local, glob, config, layer_i, T, queries=(start, stop), global_rows=g > 0)
    n = len(idx)
    where = np.full(config.num_global_tokens + T, -1)
    where[idx] = np.arange(n)                                     # [G+T] -> position on screen, or -1
    r, c = where[rows], where[cols]
    shown = (r >= 0) & (c >= 0)
    s = _tile(n, max_pixels)
    m = -(-n // s)
    flat = (r[shown] // s) * m + c[shown] // s
    v = vals[shown].astype(np.float64)
    if pool == "max":
        img = np.zeros(m * m)
        np.maximum.at(img, flat, v)
    else:
        size = np.bincount(np.arange(n) // s, minlength=m)        # cells per tile side (the last may be short)
        img = np.bincount(flat, weights=v, minlength=m * m) / np.outer(size, size).ravel()
    img = img.reshape(m, m)

    fig, ax = _figure((7, 6), ax)
    norm = mpl.colors.LogNorm(vmin=max(img[img > 0].min(initial=1.0), 1e-6), vmax=max(img.max(), 1e-6)) if log \
        else mpl.colors.Normalize(vmin=0, vmax=max(img.max(), 1e-6))
    cmap = mpl.colormaps["viridis" if log else "magma_r"].with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_equal(img, 0), cmap=cmap, norm=norm, interpolation="nearest",
                   extent=(0, m * s, m * s, 0))                   # white: attention impossible (exactly 0)
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"attention probability ({pool} over {s}x{s} tile)" if s > 1
                 else "attention probability")
    _position_axes(ax, idx, g, config.num_global_tokens, s, tokens, config.block_size)
    ax.set_title(f"encoder layer {layer_i} ({'staggered' if config.is_staggered(layer_i) else 'local'} blocks), "
                 f"{'mean over heads' if head is None else f'head {head}'}", fontsize=10)
    return fig


# ============================================================================== cross-attention
def plot_cross_attention(cross_attentions, source_tokens, summary_tokens, layer=-1, head=None,
                         top_k_sources=None, max_sources=80, batch_index=0, ax=None):
    """Cross-attention of the summary (rows) over the source tokens (columns), tokens as labels.

    cross_attentions: output of model(..., decoder_input_ids=..., output_attentions=True), its
    cross_attentions (per decoder layer, [B, H, S, T]), or one [B, H, S, T] / [H, S, T] / [S, T] array.
    Row s is the decoder input at step s: the start token, then the summary shifted right, so pass
    those tokens as summary_tokens. head None: mean over heads. Long sources: top_k_sources keeps the
    k source tokens with the most attention mass (in source order); otherwise more than max_sources
    tokens are summed into equal spans labelled by position."""
    _mpl()
    att = getattr(cross_attentions, "cross_attentions", cross_attentions)
    if att is None:
        raise InputError("this output holds no cross_attentions: call the model with output_attentions=True")
    if isinstance(att, (tuple, list)):
        if not -len(att) <= layer < len(att):
            raise InputError(f"layer {layer} is outside the {len(att)} decoder layers")
        layer, att = layer % len(att), att[layer]
    a = _as_numpy(att).astype(np.float64)
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
        raise InputError(f"cross-attention must be [B, H, S, T], [H, S, T] or [S, T], got shape {_as_numpy(att).shape}")
    S, T = a.shape
    if len(summary_tokens) != S or len(source_tokens) != T:
        raise InputError(f"the cross-attention is {S} summary steps x {T} source tokens, but got "
                         f"{len(summary_tokens)} summary_tokens and {len(source_tokens)} source_tokens "
                         "(rows are the decoder inputs: the start token, then the summary shifted right)")
    if top_k_sources is not None:
        k = min(int(top_k_sources), T)
        cols = np.sort(np.argsort(a.sum(axis=0), kind="stable")[::-1][:k])
        a = a[:, cols]
        labels = [f"{source_tokens[c]} ·{c}" for c in cols]
        what = f"the {k} source tokens with the most attention"
    elif T > max_sources:
        w = -(-T // max_sources)                                  # tokens per span
        starts = np.arange(0, T, w)
        a = np.add.reduceat(a, starts, axis=1)                    # attention mass per span
        labels = [f"{b}-{min(b + w, T) - 1}" for b in starts]
        what = f"source tokens summed over spans of {w}"
    else:
        labels = [str(t) for t in source_tokens]
        what = "source tokens"

    C = a.shape[1]
    fig, ax = _figure((min(3 + 0.16 * C, 24), min(2 + 0.22 * S, 16)), ax)
    im = ax.imshow(a, cmap="magma_r", vmin=0, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="attention mass")
    ax.set_xticks(np.arange(C), labels, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(S), [str(t) for t in summary_tokens], fontsize=7)
    ax.set_xlabel(what)
    ax.set_ylabel("summary (decoder input)")
    ax.set_title(f"cross-attention, decoder layer {layer}, {'mean over heads' if head is None else f'head {head}'}",
                 fontsize=10)
    return fig


# ============================================================================== information flow
def influence_hops(config, length, use_global=True, stagger=None, num_layers=None):
    """After how many encoder layers can token j influence token i -> int [T, T], [i, j] = that number.

    0 on the diagonal, -1 where j never reaches i within num_layers (default: the model's layers).
    Reachability through each layer's pattern, with the layer's inputs on both sides: in layer l a
    token reads its block's tokens and the global tokens as they were *before* layer l, and a global
    token reads every token as it was before layer l. So token -> global -> token takes two layers,
    and with global tokens every pair is within 2 layers. use_global=False drops the global tokens;
    stagger True/False overrides config.stagger_local_blocks. Memory is about 6 T^2 bytes."""
    T = _length(length)
    cfg = config if stagger is None else config.replace(stagger_local_blocks=bool(stagger))
    L = cfg.encoder_layers if num_layers is None else int(num_layers)
    K = cfg.block_size
    pos = np.arange(T)
    reach = np.eye(T, dtype=bool)                                 # [i, j]: token i's state depends on token j
    globals_ = np.zeros(T, dtype=bool)                            # [j]: the global tokens' states depend on j
    hops = np.where(reach, 0, -1).astype(np.int32)
    for layer in range(L):
        block = (pos + (K // 2 if cfg.is_staggered(layer) else 0)) // K  # [T] block of each token in this layer
        starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
        new = np.logical_or.reduceat(reach, starts, axis=0)[block - block[0]]  # OR over each token's block
        if use_global:
            new |= globals_[None, :]                              # tokens read the globals' previous state
            globals_ = globals_ | reach.any(axis=0)               # globals read every token's previous state
        hops[new & (hops < 0)] = layer + 1
        reach = new
    return hops


def plot_influence(config, length, use_global=True, stagger=None, num_layers=None, max_pixels=1000, ax=None):
    """Draw influence_hops: for each (token i, token j), after how many layers j can influence i.
    Long inputs are pooled by the minimum over each tile (the fastest route in it)."""
    mpl = _mpl()
    hops = influence_hops(config, length, use_global, stagger, num_layers)
    T = hops.shape[0]
    L = config.encoder_layers if num_layers is None else int(num_layers)
    top = max(int(hops.max()), 1)                                 # colours span the hop counts present
    s = _tile(T, max_pixels)
    m = -(-T // s)
    h = np.where(hops < 0, top + 1, hops)                         # never -> one past the largest
    h = np.pad(h, ((0, m * s - T),) * 2, constant_values=top + 1).reshape(m, s, m, s).min(axis=(1, 3))
    colours = mpl.colormaps["viridis"](np.linspace(0, 1, top + 1))
    cmap = mpl.colors.ListedColormap(list(colours) + [(0.85, 0.85, 0.85, 1.0)])  # grey: never
    fig, ax = _figure((6.4, 5.6), ax)
    im = ax.imshow(h, cmap=cmap, norm=mpl.colors.BoundaryNorm(np.arange(top + 3) - 0.5, top + 2), interpolation="nearest",
                   extent=(0, m * s, m * s, 0))
    bar = fig.colorbar(im, ax=ax, shrink=0.8, ticks=np.arange(top + 2))
    bar.set_ticklabels([str(i) for i in range(top + 1)] + [f"never in {L}"])
    bar.set_label("layers until j can influence i")
    ax.set_xlabel("source token j")
    ax.set_ylabel("influenced token i")
    st = config.stagger_local_blocks if stagger is None else bool(stagger)
    ax.set_title(f"{'with' if use_global else 'without'} global tokens, {'staggered' if st else 'unstaggered'} "
                 f"blocks\nK={config.block_size}, {L} layers, T={T}" + (f", {s}x{s} per pixel" if s > 1 else ""),
                 fontsize=10)
    return fig


# ============================================================================== cost
def encoder_cost(config, length, attention="pegasus_x", batch=1, bytes_per_element=4):
    """Matmul FLOPs and memory of the encoder on `length` tokens (2 FLOPs per multiply-add; layer
    norms, softmax and activations are O(T M) and left out).

    attention="pegasus_x": minipegx's computation exactly -- tokens padded to whole blocks (P), G
      global tokens, staggered layers running on P + K positions (the half blocks at both ends);
    attention="full": a standard encoder of the same shape (M, F, H, layers), every token attending
      every token, no global tokens.
    Returns flops (whole encoder), attention_flops (the part in q k^T and probs v), score_bytes (the
    largest layer's attention probabilities; output_attentions keeps one such per layer) and
    activation_bytes (the largest layer's other intermediates: residual, normed input, q, k, v,
    attention output, FFN hidden), for `batch` sequences of bytes_per_element (4: float32)."""
    T = _length(length)
    if attention not in ("pegasus_x", "full"):
        raise InputError(f"attention must be 'pegasus_x' or 'full', got {attention!r}")
    M, F, H = config.d_model, config.encoder_ffn_dim, config.encoder_attention_heads
    K, G = config.block_size, config.num_global_tokens
    flops = attention_flops = score = act = 0
    for layer in range(config.encoder_layers):
        if attention == "full":
            rows, tokens, glob = T, T, 0
            attn = 2 * 2 * T * T * M                              # scores and probs @ v over all T keys
            scores = H * T * T
        else:
            P = -(-T // K) * K
            rows = P + (K if config.is_staggered(layer) else 0)   # positions the attention runs on
            tokens, glob, N = P, G, rows // K
            attn = 2 * 2 * (N * K * (G + K) + G * (G + rows)) * M  # local blocks + global rows
            scores = H * (N * K * (G + K) + G * (G + rows))
        proj = 2 * 4 * (rows + glob) * M * M                      # q, k, v, out projections
        ffn = 2 * 2 * (tokens + glob) * M * F                     # fc1, fc2
        flops += proj + attn + ffn
        attention_flops += attn
        score = max(score, scores)
        act = max(act, (tokens + glob) * M + 5 * (rows + glob) * M + (tokens + glob) * F)
    b = batch * bytes_per_element
    return dict(flops=batch * flops, attention_flops=batch * attention_flops, score_bytes=b * score,
                activation_bytes=b * act)


def plot_cost(config, lengths, measured=None, batch=1, bytes_per_element=4):
    """FLOPs and memory of the encoder against input length, PEGASUS-X versus full attention (log-log).

    measured: {length: seconds} of real encoder runs (e.g. timings of model.encode). Then a third
    panel sets them against the model: the FLOP rate is fitted as total FLOPs / total seconds over the
    measured lengths, and the predicted seconds are FLOPs / rate, for PEGASUS-X and full attention."""
    _mpl()
    lengths = sorted(int(_length(t)) for t in lengths)
    if not lengths:
        raise InputError("lengths must name at least one input length")
    px = [encoder_cost(config, t, "pegasus_x", batch, bytes_per_element) for t in lengths]
    full = [encoder_cost(config, t, "full", batch, bytes_per_element) for t in lengths]
    panels = 3 if measured else 2
    fig, axes = _figure((4.6 * panels, 4), ncols=panels)
    ax = axes[0]
    ax.loglog(lengths, [c["flops"] for c in px], "o-", color="C0", label="PEGASUS-X")
    ax.loglog(lengths, [c["attention_flops"] for c in px], ":", color="C0", label="PEGASUS-X, attention only")
    ax.loglog(lengths, [c["flops"] for c in full], "s-", color="C3", label="full attention")
    ax.loglog(lengths, [c["attention_flops"] for c in full], ":", color="C3", label="full, attention only")
    ax.set(xlabel="input tokens", ylabel="encoder FLOPs", title="compute")
    ax.legend(fontsize=7)
    _length_ticks(ax, lengths)
    ax = axes[1]
    gib = 2 ** 30
    ax.loglog(lengths, [c["score_bytes"] / gib for c in px], "o-", color="C0", label="PEGASUS-X, attention probs")
    ax.loglog(lengths, [c["activation_bytes"] / gib for c in px], "o--", color="C0", label="PEGASUS-X, activations")
    ax.loglog(lengths, [c["score_bytes"] / gib for c in full], "s-", color="C3", label="full, attention probs")
    ax.loglog(lengths, [c["activation_bytes"] / gib for c in full], "s--", color="C3", label="full, activations")
    ax.set(xlabel="input tokens", ylabel="GiB (largest layer)", title="memory")
    ax.legend(fontsize=7)
    _length_ticks(ax, lengths)
    if measured:
        ms = sorted((_length(t), float(sec)) for t, sec in measured.items())
        work = [encoder_cost(config, t, "pegasus_x", batch, bytes_per_element)["flops"] for t, _ in ms]
        rate = sum(work) / sum(sec for _, sec in ms)
        ax = axes[2]
        ax.loglog(lengths, [c["flops"] / rate for c in px], "-", color="C0", label="PEGASUS-X, predicted")
        ax.loglog(lengths, [c["flops"] / rate for c in full], "-", color="C3", label="full attention, predicted")
        ax.loglog([t for t, _ in ms], [sec for _, sec in ms], "kx", ms=8, label="measured")
        ax.set(xlabel="input tokens", ylabel="seconds",
               title=f"time at the measured rate, {rate / 1e9:.3g} GFLOP/s")
        ax.legend(fontsize=7)
        _length_ticks(ax, lengths)
    fig.suptitle(f"encoder cost: M={config.d_model}, {config.encoder_layers} layers, K={config.block_size}, "
                 f"G={config.num_global_tokens}, batch {batch}", fontsize=10)
    return fig


def _length_ticks(ax, lengths):
    """Label a log x axis with the lengths themselves (512, 1k, 2k, ...)."""
    ax.xaxis.set_minor_locator(_mpl().ticker.NullLocator())
    ax.xaxis.set_minor_formatter(_mpl().ticker.NullFormatter())
    ax.set_xticks(lengths, [f"{t // 1024}k" if t % 1024 == 0 else str(t) for t in lengths], fontsize=8)


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
    layers, single = _encoder_attentions(output)
    if single or len(layers) != config.encoder_layers:
        raise InputError(f"to_bertviz needs every encoder layer's attentions ({config.encoder_layers}); pass the "
                         "output of a forward pass with output_attentions=True")
    T = _length(T)
    G = config.num_global_tokens if include_globals else 0
    off = config.num_global_tokens - G
    enc = tuple(densify(a, config, i, T, batch_index)[None, :, off:, off:] for i, a in enumerate(layers))
    dec = getattr(output, "decoder_attentions", None)
    cross = getattr(output, "cross_attentions", None)
    if dec is not None:
        dec = tuple(_as_numpy(a)[batch_index][None] for a in dec)
        if summary_tokens is not None and dec[0].shape[-1] != len(summary_tokens):
            raise InputError(f"the decoder attentions cover {dec[0].shape[-1]} steps but got "
                             f"{len(summary_tokens)} summary_tokens")
    if cross is not None:
        cross = tuple(np.pad(_as_numpy(a)[batch_index][None], ((0, 0), (0, 0), (0, 0), (G, 0))) for a in cross)
        if cross[0].shape[-1] != G + T:
            raise InputError(f"the cross-attentions cover {cross[0].shape[-1] - G} source tokens, not {T}")
    return enc, dec, cross


__all__ = ["attention_pattern", "plot_attention_pattern", "densify", "plot_attention", "plot_cross_attention",
           "influence_hops", "plot_influence", "encoder_cost", "plot_cost", "to_bertviz", "encoder_token_labels"]
