"""Who may attend whom, and how far information travels: PEGASUS-X's attention structure as arrays.

    attention_pattern  which query may attend which key, per layer or over all layers   [G+T, G+T] bool
    pattern_tiles      the same, pooled into tiles (OR), by category, for long inputs    [m, m] uint8
    influence_hops     after how many layers token j can reach token i                   [T, T] int
    influence_tiles    the same, pooled into tiles (min)                                 [m, m] int

Only NumPy here; draw.py turns these into pictures. One axis convention everywhere, the reference's:
the G global tokens first, then the T tokens, so index G + t is token t. Rows are queries, columns keys.
The block geometry (padding, the half-block shift of staggered layers) comes from minipegx.blocks.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..blocks import block_of
from ..errors import InputError

# Bits of one (query, key) cell. The first three say why attention is allowed there; PADDING marks a
# cell that the structure allows but the attention_mask hides (masked key) or discards (masked query).
GLOBAL, LOCAL, STAGGERED, PADDING = 1, 2, 4, 8
ALLOWED = GLOBAL | LOCAL | STAGGERED
# The categories a cell is drawn as, by index (category()); draw.py gives each a colour.
CATEGORIES = ("impossible", "padding", "local block", "staggered block", "local and staggered", "global")


# ============================================================================== checks at the boundary
def layer_index(config, layer):
    n = config.encoder_layers
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -n <= layer < n:
        raise InputError(f"layer must be an encoder layer index in [-{n}, {n}) (the model has {n} encoder "
                         f"layers), got {layer!r}")
    return int(layer) % n


def layer_list(config, layer):
    """layer None -> every encoder layer; an int -> that one."""
    return list(range(config.encoder_layers)) if layer is None else [layer_index(config, layer)]


def check_length(length):
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise InputError(f"length must be the number of input tokens (a positive integer), got {length!r}")
    return int(length)


def as_numpy(x):
    """NumPy, CuPy or torch (CPU or GPU, any float dtype) -> NumPy, without importing torch."""
    if hasattr(x, "detach"):  # a torch tensor, e.g. from transformers' output_attentions
        x = x.detach()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.cpu().numpy()
    return to_numpy(x)


def real_tokens(attention_mask, length):
    """1/0 attention mask of one sequence -> bool [T] (True: a real token). None: every token is real."""
    if attention_mask is None:
        return np.ones(length, dtype=bool)
    m = as_numpy(attention_mask)
    if m.ndim == 2 and m.shape[0] == 1:
        m = m[0]
    if m.shape != (length,):
        raise InputError(f"attention_mask must be one sequence's 1/0 mask of shape ({length},) (or (1, {length})), "
                         f"got shape {m.shape}")
    return m == 1


def display_axis(config, length, region, include_globals=True):
    """The indices (into the [G+T] axis) shown on each side of a picture: the globals, then tokens
    region[0]..region[1]-1 -> (indices, number of globals shown, start)."""
    G, T = config.num_global_tokens, length
    start, stop = (0, T) if region is None else region
    if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer)) and 0 <= start < stop <= T):
        raise InputError(f"region must be (start, stop) token positions with 0 <= start < stop <= {T}, got {region!r}")
    g = G if include_globals else 0
    return np.concatenate([np.arange(g), G + np.arange(start, stop)]), g, int(start)


def tile_side(n, max_pixels):
    """Cells per pixel side (>= 1) so that n cells fit in max_pixels."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise InputError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    return -(-n // int(max_pixels))


# ============================================================================== the attention pattern
def cell_bits(config, keep, layers, rows, cols):
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
            same = tokens & (block_of(rt, K, staggered) == block_of(ct, K, staggered))  # both in one block
            bits |= np.where(same & real_key, bit, 0).astype(np.uint8)
            structural = structural | same
    bits |= np.where(structural & ~(real_key & real_query), PADDING, 0).astype(np.uint8)
    return bits


def attention_pattern(config, length, layer=0, attention_mask=None):
    """Which query may attend which key in encoder `layer` (None: in any layer) -> bool [G+T, G+T].

    Rows are queries, columns keys, the G global tokens first. attention_mask (one sequence's 1/0
    mask, [T]) removes padded keys; padded queries keep their rows, which the model computes and
    then ignores. Memory is (G+T)^2 bytes: for long inputs use pattern_tiles, which pools."""
    T = check_length(length)
    idx = np.arange(config.num_global_tokens + T)
    return (cell_bits(config, real_tokens(attention_mask, T), layer_list(config, layer), idx, idx) & ALLOWED) > 0


def category(bits):
    """Bits -> index into CATEGORIES, the strongest reason first (global > both > local/staggered > padding)."""
    cat = np.where(bits & PADDING, 1, 0)
    cat = np.where(bits & STAGGERED, 3, cat)
    cat = np.where(bits & LOCAL, 2, cat)
    cat = np.where(((bits & LOCAL) > 0) & ((bits & STAGGERED) > 0), 4, cat)
    return np.where(bits & GLOBAL, 5, cat)


def pattern_tiles(config, length, layer=None, attention_mask=None, region=None, max_pixels=1000):
    """attention_pattern by category, pooled so that at most max_pixels cells show per side.

    A tile is the OR over its cells, so thin structures (the global rows and columns) stay visible; the
    pattern is computed tile row by tile row, so memory stays small even for 16k tokens.
    Returns (categories [m, m] uint8 indexing CATEGORIES, shown indices [n], globals shown, start, s)
    with s cells per tile side."""
    T = check_length(length)
    layers = layer_list(config, layer)
    keep = real_tokens(attention_mask, T)
    idx, g, start = display_axis(config, T, region)
    n = len(idx)
    s = tile_side(n, max_pixels)
    m = -(-n // s)                                                # tiles per side
    pooled = np.zeros((m, m), dtype=np.uint8)
    rows_per_step = s * max(1, (1 << 22) // (n * s))              # about 4M cells per step
    for a in range(0, n, rows_per_step):
        rows = idx[a:a + rows_per_step]
        bits = cell_bits(config, keep, layers, rows, idx)
        bits = np.where(bits & PADDING, PADDING, bits).astype(np.uint8)  # padding shows as padding
        bits = np.pad(bits, ((0, (-len(rows)) % s), (0, m * s - n)))
        bits = np.bitwise_or.reduce(bits.reshape(-1, s, m, s), axis=(1, 3))  # [rows/s, s, m, s] -> [rows/s, m]
        pooled[a // s:a // s + len(bits)] = bits
    return category(pooled).astype(np.uint8), idx, g, start, s


# ============================================================================== information flow
def influence_atoms(config, length, use_global=True, num_layers=None):
    """After how many encoder layers one token can influence another, without a T x T matrix.

    Tokens that share their block in every layer (the "atoms": half blocks when blocks are staggered,
    about 2T/K of them) have the same influences, so reachability runs between atoms. In layer l a
    token reads its block's tokens and the global tokens as they were *before* layer l, and a global
    token reads every token as it was before layer l: token -> global -> token takes two layers, and
    with global tokens every pair is within 2 layers. use_global=False drops the global tokens.
    -> (atom [T] int, hops [A, A] int32): for tokens i != j, j can influence i after hops[atom[i],
    atom[j]] layers (-1: never within num_layers, default the model's layers). Memory A^2: 64^2 at 16k
    tokens with K=512."""
    T = check_length(length)
    layers = config.encoder_layers if num_layers is None else int(num_layers)
    pos = np.arange(T)
    blocks = [block_of(pos, config.block_size, config.is_staggered(layer)) for layer in range(layers)]  # [layers][T]
    cut = np.zeros(T, bool)
    cut[0] = True
    for b in blocks:
        cut[1:] |= b[1:] != b[:-1]                                # an atom ends wherever any layer's block does
    atom = np.cumsum(cut) - 1                                     # [T]
    first = np.flatnonzero(cut)                                   # [A] first token of each atom
    A = len(first)
    reach = np.eye(A, dtype=bool)                                 # [a, b]: atom a's state depends on atom b
    hops = np.where(reach, 0, -1).astype(np.int32)
    globals_ = np.zeros(A, dtype=bool)                            # [b]: the global tokens' states depend on b
    for layer in range(layers):
        block = blocks[layer][first]                              # [A] block of each atom in this layer
        starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
        new = np.logical_or.reduceat(reach, starts, axis=0)[block - block[0]]  # OR over each atom's block
        if use_global:
            new |= globals_[None, :]                              # tokens read the globals' previous state
            globals_ = globals_ | reach.any(axis=0)               # globals read every token's previous state
        hops[new & (hops < 0)] = layer + 1
        reach = new
    hops[np.arange(A), np.arange(A)] = 1 if layers else -1        # i != j in one atom: one layer
    return atom, hops


def influence_hops(config, length, use_global=True, stagger=None, num_layers=None):
    """After how many encoder layers can token j influence token i -> int [T, T], [i, j] = that number:
    influence_atoms expanded to every pair, 0 on the diagonal, -1 where j never reaches i within
    num_layers. stagger True/False overrides config.stagger_local_blocks. Memory 4 T^2 bytes (1 GB at
    16k tokens): for long inputs use influence_atoms, or influence_tiles, which pools from the atoms."""
    cfg = config if stagger is None else config.replace(stagger_local_blocks=bool(stagger))
    atom, hops = influence_atoms(cfg, length, use_global, num_layers)
    dense = hops[atom[:, None], atom[None, :]]                    # [T, T]
    np.fill_diagonal(dense, 0)
    return dense


def influence_tiles(config, length, use_global=True, stagger=None, num_layers=None, max_pixels=1000):
    """influence_hops pooled by the minimum over each tile (the fastest route in it), computed from the
    atoms without the T x T matrix; never (-1) becomes one past the largest count.
    -> (tiles [m, m] int, s cells per tile side, the largest count)."""
    cfg = config if stagger is None else config.replace(stagger_local_blocks=bool(stagger))
    atom, hops = influence_atoms(cfg, length, use_global, num_layers)
    T = len(atom)
    top = max(int(hops.max()), 1)
    h = np.where(hops < 0, top + 1, hops)                         # never -> one past the largest
    s = tile_side(T, max_pixels)
    m = -(-T // s)
    lo = atom[np.arange(m) * s]                                   # [m] first atom of each tile (atoms are sorted)
    hi = atom[np.minimum(np.arange(1, m + 1) * s, T) - 1] + 1     # [m] one past its last atom
    rows = np.stack([h[a:b].min(axis=0) for a, b in zip(lo, hi)])          # [m, A]
    tiles = np.stack([rows[:, a:b].min(axis=1) for a, b in zip(lo, hi)], axis=1)  # [m, m]
    tiles[np.arange(m), np.arange(m)] = 0                         # a tile on the diagonal holds some i == j
    return tiles, s, top
