"""What one token can reach and what it attends to, computed as arrays without a T x T matrix.

The encoder's probabilities stay in their blocked form (encoder.py): per layer, the tokens' rows
local [N, K, G+K] (G global keys, then the K keys of the token's block) and the global tokens' rows
glob [G, G+P] (P = N K padded positions). Every view below reads them directly:

    block_geometry       where a layer's blocks lie (half-block shift, padded length)      dict
    encoder_views        the probabilities of one document, layer by layer, heads reduced  EncoderViews
    token_attention      one token's attention in one layer: to the globals, to the tokens [G], [T]
    global_reads         what each global token reads in one layer                         [G, T]
    full_attention_row   the same weights with every key allowed: softmax(q k^T), one row  [G+T]
    reach_structure      which input tokens a token's state can depend on, layer by layer  int8 [layers+1, T]
    reach_weighted       how much of it comes from each input (attention rollout)          [layers+1, G+T]
    influence_layers     after how many layers each token can influence one token          int [T]
    influence_atoms      the same for every pair, between half blocks (no T x T)           [T], int [A, A]

Memory is O(T (G+K)) per layer and every per-token view is O(T) (reach_weighted: O(layers^2 T (G+K))),
so all of them run at 16k tokens. Shape legend: T tokens, P padded positions, N blocks, K block size,
G global tokens, H heads, D head dim, M d_model.

Conventions (the reference's): a staggered layer pads K/2 masked positions in front, so padded
position = token + shift with shift = K/2 there and 0 elsewhere; padding is never attended.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import blocks
from .backend import finfo, to_numpy
from .encoder import global_local_attention, stagger
from .errors import InputError
from .layers import additive_mask, linear, split_heads
from .viz.patterns import influence_atoms  # noqa: F401  (re-exported: a view of the structure)
from .viz.probs import layer_probs


# ============================================================================== geometry
def block_geometry(config, layer, length):
    """Where encoder `layer`'s blocks lie for `length` tokens (minipegx.blocks): {"shift": K/2 if
    staggered else 0, "blocks": N (one more when staggered), "padded": N K, "starts": the token
    positions where a block starts, clipped to [0, T)}. Token t is in block (t + shift) // K."""
    K, staggered = config.block_size, config.is_staggered(layer)
    N = blocks.num_blocks(length, K, staggered)
    starts = blocks.query_positions(np.arange(N), K, staggered)[:, 0]         # [N] first slot of each block
    return dict(shift=blocks.stagger_shift(K, staggered), blocks=N, padded=N * K,
                starts=np.unique(np.clip(starts, 0, length - 1)))


def block_of(config, layer, positions):
    """The block index of each token position in encoder `layer` (minipegx.blocks.block_of)."""
    return blocks.block_of(positions, config.block_size, config.is_staggered(layer))


# ============================================================================== probabilities
@dataclass
class LayerAttention:
    """One encoder layer's probabilities for one sequence, heads reduced (mean, or one head).
    local [N, K, G+K] token rows; glob [G, G+P] global rows; shift K/2 on a staggered layer; length T."""
    local: np.ndarray
    glob: np.ndarray
    shift: int
    length: int

    @property
    def G(self):
        """The number of global tokens."""
        return self.glob.shape[0]

    @property
    def K(self):
        """The block size."""
        return self.local.shape[1]


@dataclass
class EncoderViews:
    """Per-layer LayerAttention of one document and, when kept, each layer's normalized inputs
    (tokens [T, M], global tokens [G, M]) for full_attention_row."""
    config: object
    layers: list
    inputs: list = field(default_factory=list)


def reduce_heads(probs, head=None):
    """[H, ...] -> mean over heads (head None) or one head, float32 NumPy."""
    a = to_numpy(probs)
    H = a.shape[0]
    if head is None:
        return a.astype(np.float32).mean(axis=0)
    if not (isinstance(head, (int, np.integer)) and -H <= head < H):
        raise InputError(f"head must be None (mean over heads) or a head index in [0, {H}), got {head!r}")
    return a[head].astype(np.float32)


def layer_attention(attentions_layer, config, layer, length, head=None, batch_index=0):
    """One layer of output.encoder_attentions ({"local": [B, H, N, K, G+K], "global": [B, H, G, G+P]})
    -> LayerAttention of sequence batch_index, shapes checked against the config and the length
    (viz.probs.layer_probs, the one check of that layout)."""
    local, glob = layer_probs(attentions_layer, config, layer, length, batch_index)  # [H, N, K, G+K], [H, G, G+P]
    shift = block_geometry(config, layer, length)["shift"]
    return LayerAttention(reduce_heads(local, head), reduce_heads(glob, head), shift, int(length))


class _LayerInputs(dict):
    """A trace that keeps only each layer's normalized attention inputs (model.encode records them)."""

    def __setitem__(self, name, value):
        if name.endswith(("self_attn_layer_norm",)):
            super().__setitem__(name, value)


def encoder_views(model, input_ids, attention_mask=None, head=None, keep_inputs=False):
    """Run the encoder once on one document and compute each layer's probabilities from its recorded
    inputs, one layer at a time (peak memory: one layer's [H, N, K, G+K] probabilities, not all
    layers' as output_attentions keeps them). input_ids [T] or [1, T]. -> EncoderViews."""
    ids = np.asarray(to_numpy(input_ids)).reshape(1, -1)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(to_numpy(attention_mask)).reshape(1, -1)
    cfg, T = model.config, ids.shape[1]
    trace = _LayerInputs()
    model.encode(ids, mask, trace=trace)
    xp = model.xp
    h0 = trace["model.encoder.layers.0.self_attn_layer_norm"]
    add = additive_mask(xp.asarray(mask), h0.dtype, xp)                          # [1, T]
    add = xp.pad(add, ((0, 0), (0, h0.shape[1] - T)), constant_values=finfo(h0.dtype).min)  # [1, P]
    views = EncoderViews(cfg, [])
    for i, p in enumerate(model.params["model"]["encoder"]["layers"]):
        h = trace.pop(f"model.encoder.layers.{i}.self_attn_layer_norm")          # [1, P, M]
        hg = trace.pop(f"model.encoder.layers.{i}.global_self_attn_layer_norm")  # [1, G, M]
        hs, m = stagger(h, add, cfg.block_size) if cfg.is_staggered(i) else (h, add)
        _, _, probs = global_local_attention(hs, hg, m, p["self_attn"], cfg.encoder_attention_heads,
                                             cfg.block_size)
        views.layers.append(layer_attention(probs, cfg, i, T, head))
        del probs
        if keep_inputs:
            views.inputs.append((to_numpy(h[0, :T]), to_numpy(hg[0])))
    return views


# ============================================================================== one token, one layer
def _check_query(att, query):
    if isinstance(query, bool) or not isinstance(query, (int, np.integer)) or not 0 <= query < att.length:
        raise InputError(f"query must be a token position in [0, {att.length}), got {query!r}")
    return int(query)


def token_attention(att, query):
    """Token `query`'s attention in one layer -> (to the G global tokens [G], to the T tokens [T]).
    Zero outside the query's block; the two parts sum to 1. O(T) (only the output is that long)."""
    q = _check_query(att, query)
    G, K = att.G, att.K
    n, r = divmod(q + att.shift, K)
    row = att.local[n, r]                                          # [G+K]
    tokens = np.zeros(att.length, np.float32)
    lo = n * K - att.shift                                         # token position of the block's first key
    a, b = max(lo, 0), min(lo + K, att.length)
    tokens[a:b] = row[G + a - lo:G + b - lo]
    return row[:G].copy(), tokens


def global_reads(att):
    """What each global token reads in one layer -> (to the global tokens [G, G], to the tokens [G, T])."""
    G, s = att.G, att.shift
    return att.glob[:, :G], att.glob[:, G + s:G + s + att.length]


def project_qk(model, h, hg, layer):
    """Queries (scaled by D^-1/2, as the encoder does) and keys of every position of one layer, from its
    normalized inputs h [T, M] and hg [G, M] -> q, k [H, G+T, D], globals first."""
    w = model.params["model"]["encoder"]["layers"][layer]["self_attn"]
    H = model.config.encoder_attention_heads
    x = np.concatenate([to_numpy(hg), to_numpy(h)])[None].astype(np.float32)  # [1, G+T, M]
    q = split_heads(linear(x, host_weight(w["q_proj"]["weight"])), H)[0]  # [H, G+T, D]
    k = split_heads(linear(x, host_weight(w["k_proj"]["weight"])), H)[0]
    return q * q.shape[-1] ** -0.5, k


def host_weight(w):
    """A weight as a float32 NumPy array: quantized (int8/nf4) weights dequantized, device ones brought back."""
    from .quantize import dequantize, is_quantized
    return to_numpy(dequantize(w, np.float32) if is_quantized(w) else w).astype(np.float32)


def full_attention_row(q, k, query, num_globals, head=None, keys=None):
    """Full attention of token `query` on the same weights: softmax over every global and token key,
    O(T) per row. q, k [H, G+T, D] from project_qk; num_globals G. keys: a bool [G+T] mask restricting
    the softmax (the query's global and block keys give the model's own row back).
    -> [G+T] probabilities (mean over heads, or one head)."""
    s = np.einsum("hd,hjd->hj", q[:, num_globals + query].astype(np.float64), k)  # [H, G+T]
    if keys is not None:
        s = np.where(keys, s, -np.inf)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return reduce_heads(e / e.sum(axis=-1, keepdims=True), head)


def local_keys(config, layer, length, query):
    """The keys token `query` may attend in encoder `layer`: bool [G+T], the G globals then its block."""
    G = config.num_global_tokens
    keys = np.zeros(G + length, bool)
    keys[:G] = True
    keys[G:] = block_of(config, layer, np.arange(length)) == block_of(config, layer, query)
    return keys


# ============================================================================== reach over layers
def _spread(config, layer, tokens):
    """Tokens sharing a block of encoder `layer` with any token in `tokens` (bool [T]) -> bool [T]."""
    blk = block_of(config, layer, np.arange(len(tokens)))
    hit = np.zeros(blk[-1] + 1, bool)
    hit[blk[tokens]] = True
    return hit[blk]


def reach_structure(config, length, query, num_layers=None):
    """Which input tokens token `query`'s state after each layer can depend on, from the structure
    alone (any config, no weights) -> int8 [layers+1, T]: row l is after l layers (row 0: the token
    itself), 2 where a path through local blocks alone reaches, 1 where only a path through a global
    token does, 0 where nothing does. Walks down from layer l: in each layer a token reads its block
    (shifted half a block on a staggered layer) and the global tokens, and a global token reads
    everything, so with global tokens every token is reached after 2 layers. O(layers^2 T)."""
    T = int(length)
    if not 0 <= query < T:
        raise InputError(f"query must be a token position in [0, {T}), got {query!r}")
    L = config.encoder_layers if num_layers is None else int(num_layers)
    codes = np.zeros((L + 1, T), np.int8)
    codes[0, query] = 2
    for top in range(1, L + 1):
        local = np.zeros(T, bool)
        local[query] = True
        full, via_global = local.copy(), False                      # via_global: a global token is read
        for layer in reversed(range(top)):
            local = _spread(config, layer, local)
            full = np.ones(T, bool) if via_global else _spread(config, layer, full)
            via_global = True                                       # every token reads the globals
        codes[top] = np.where(local, 2, np.where(full, 1, 0))
    return codes


def influence_layers(config, length, query, use_global=True, num_layers=None):
    """After how many layers each token j can influence token `query` -> int32 [T] (0 for the query
    itself, -1 if never within num_layers): row `query` of viz.influence_hops, in O(layers^2 T)."""
    codes = reach_structure(config, length, query, num_layers)
    reached = codes >= 1 if use_global else codes == 2             # [layers+1, T]
    return np.where(reached.any(axis=0), reached.argmax(axis=0), -1).astype(np.int32)


def read_through(att, r_glob, r_tok):
    """One layer's attention applied to a row of weights over the layer's outputs: r A, with A the
    layer's [G+T, G+T] probabilities, in O(T (G+K)) -> weights over its inputs (globals [G], tokens [T])."""
    G, K, s, T = att.G, att.K, att.shift, att.length
    N = att.local.shape[0]
    rp = np.zeros(N * K, np.float64)
    rp[s:s + T] = r_tok
    contrib = np.einsum("nk,nkj->nj", rp.reshape(N, K), att.local)  # [N, G+K]
    g = contrib[:, :G].sum(axis=0) + r_glob @ att.glob[:, :G]       # [G]
    tp = contrib[:, G:].reshape(-1) + r_glob @ att.glob[:, G:]      # [P]
    return g, tp[s:s + T]


def reach_weighted(layers, query, residual=0.5):
    """How much of token `query`'s state after each layer comes from each input (attention rollout,
    Abnar & Zuidema 2020): row l is row `query` of (r I + (1-r) A_l) ... (r I + (1-r) A_1), with A the
    layers' probabilities and r=residual standing for the residual connection. layers: LayerAttention
    per layer. -> [layers+1, G+T] (the initial global embeddings first, then the input tokens); every
    row sums to 1. O(layers^2 T (G+K)), never a T x T matrix."""
    att0 = layers[0]
    G, T = att0.G, att0.length
    q = _check_query(att0, query)
    out = np.zeros((len(layers) + 1, G + T))
    out[0, G + q] = 1.0
    for top in range(1, len(layers) + 1):
        rg, rt = np.zeros(G), np.zeros(T)
        rt[q] = 1.0
        for att in reversed(layers[:top]):
            ag, at = read_through(att, rg, rt)
            rg, rt = residual * rg + (1 - residual) * ag, residual * rt + (1 - residual) * at
        out[top, :G], out[top, G:] = rg, rt
    return out
