"""The PEGASUS-X decoder: a standard pre-LayerNorm Transformer decoder with causal self-attention
(with a key/value cache) and cross-attention over the encoder's tokens (not its global tokens).

Shape legend: B batch (inputs), R rows per input (beams x return sequences; 1 in a plain forward),
S decoder steps in this call, C keys attended (cached + new steps, or T), T encoder tokens, H heads,
D head dim, M d_model.
The dynamic self-attention cache is a value: tuples in, tuples out. The static one (StaticCache) is
a named, preallocated buffer written in place; see its docstring for why it exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backend import array_module, finfo
from .layers import (embed_tokens, ffn, layer_norm, linear, merge_heads, record, sinusoidal_positions,
                     softmax, split_heads)
from .precision import FiniteChecks, matmul, residual, scores


def attention(q, k, v, mask):
    """softmax(q k^T * D^-1/2 + mask) v. The decoder scales the scores after the product, as the
    reference's eager_attention_forward does (the encoder pre-scales its queries instead).

    q [..., S, D], k and v [..., C, D], mask additive, broadcastable to [..., S, C].
    The scores are computed as (k q^T)^T: with the keys as the left operand BLAS streams them once, which
    is what a decoding step (S = 1, C up to 16k encoder tokens) is made of (~4x faster in OpenBLAS than
    q k^T, where the long operand is packed on the right). Made contiguous again for the softmax."""
    xp = array_module(q)
    s = xp.ascontiguousarray(scores(k, q.swapaxes(-1, -2)).swapaxes(-1, -2))  # [..., C, D] @ [..., D, S] -> [..., S, C]
    s *= q.shape[-1] ** -0.5
    if mask is not None:
        s += mask
    probs = softmax(s)                                           # [..., S, C]
    return matmul(probs, v), probs                               # [..., S, D]


@dataclass(eq=False)
class StaticCache:
    """One decoder layer's preallocated self-attention buffer: keys and values [B, H, Smax, D], of which
    the first `length` steps are filled.

    Not a value, on purpose: `write` stores new steps in place and advances `length`, and `reorder`
    (beam search) gathers rows in place, so an earlier reference to the same StaticCache sees the
    change. The dynamic cache, a (k, v) tuple grown by concatenation, is the value-semantics default;
    this one exists because concatenation copies the whole cache at every step (O(S^2) bytes over a
    run, a fresh allocation per step), which a fixed buffer avoids, as transformers' StaticCache does:
    long beam searches run faster with it (generate(..., static_cache=True)), short ones gain nothing.
    Both give identical ids and scores (tests/test_generate.py)."""
    k: object                                                     # [B, H, Smax, D]
    v: object                                                     # [B, H, Smax, D]
    length: int = 0

    @classmethod
    def empty(cls, rows, heads, steps, head_dim, dtype, xp):
        """Zeroed keys and values [B, H, Smax, D] (B = rows, Smax = steps), nothing filled yet."""
        shape = (rows, heads, steps, head_dim)                    # [B, H, Smax, D]
        return cls(xp.zeros(shape, dtype), xp.zeros(shape, dtype), 0)

    def write(self, k, v):
        """Store the S new keys/values [B, H, S, D] at [length, length+S) in place; returns views of all
        filled steps [B, H, length+S, D]."""
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise IndexError(f"StaticCache holds {self.k.shape[2]} steps; cannot write step {end}")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, index):
        """Row i becomes old row index[i], over the filled steps, in place (beams follow their parents).
        index: [B] ints."""
        self.k[:, :, :self.length] = self.k[index, :, :self.length]
        self.v[:, :, :self.length] = self.v[index, :, :self.length]
        return self


def self_attention(x, p, num_heads, mask, cache=None):
    """Causal self-attention over the past steps' keys/values and the S new ones.

    cache: None; (k, v) of the past steps, each [B, H, C-S, D], a value grown by concatenation; or a
    StaticCache, written in place. Returns the output [B, S, M], probs [B, H, S, C] and the new cache
    (a new (k, v) tuple, or the same StaticCache advanced)."""
    xp = array_module(x)
    q = split_heads(linear(x, p["q_proj"]["weight"]), num_heads)  # [B, H, S, D]
    k = split_heads(linear(x, p["k_proj"]["weight"]), num_heads)  # [B, H, S, D]
    v = split_heads(linear(x, p["v_proj"]["weight"]), num_heads)  # [B, H, S, D]
    if isinstance(cache, StaticCache):
        k, v = cache.write(k, v)                                  # [B, H, C, D] views
    else:
        if cache is not None:                                     # dynamic
            k = xp.concatenate([cache[0], k], axis=2)             # [B, H, C, D]
            v = xp.concatenate([cache[1], v], axis=2)
        cache = (k, v)
    out, probs = attention(q, k, v, mask)                         # [B, H, S, D]
    return linear(merge_heads(out), p["out_proj"]["weight"]), probs, cache


def cache_length(cache):
    """Steps already in a self-attention cache (None, (k, v) or a StaticCache)."""
    if cache is None:
        return 0
    return cache.length if isinstance(cache, StaticCache) else cache[0].shape[2]


def cross_kv(encoder_hidden, p, num_heads):
    """Keys and values of the encoder tokens for one decoder layer, computed once per input:
    [B, T, M] -> two [B, H, T, D]. Beams of the same input share them (never copied per beam).
    Stored contiguous, head after head: every decoding step reads each head's [T, D] keys and values
    whole, and reads them ~2x faster as one block than as D-wide strips of [T, M] rows."""
    xp = array_module(encoder_hidden)
    return (xp.ascontiguousarray(split_heads(linear(encoder_hidden, p["k_proj"]["weight"]), num_heads)),
            xp.ascontiguousarray(split_heads(linear(encoder_hidden, p["v_proj"]["weight"]), num_heads)))


def cross_attention(x, kv, p, num_heads, mask):
    """Attention of decoder rows over the encoder tokens.

    x [B*R, S, M]: the R rows of each input are consecutive (beams of one input side by side).
    kv: (k, v) each [B, H, T, D], one per input. mask: additive [B, 1, 1, T] or None.
    The R*S queries of an input are stacked so one matmul per input and head reads its keys once."""
    k, v = kv
    B, H, T, D = k.shape
    BR, S, M = x.shape
    R = BR // B
    q = linear(x, p["q_proj"]["weight"]).reshape(B, R * S, H, D).transpose(0, 2, 1, 3)  # [B, H, R*S, D]
    out, probs = attention(q, k, v, mask)                         # [B, H, R*S, D], [B, H, R*S, T]
    out = out.reshape(B, H, R, S, D).transpose(0, 2, 3, 1, 4).reshape(BR, S, M)  # [B*R, S, M]
    return linear(out, p["out_proj"]["weight"]), probs


def unstack_rows(probs, rows):
    """Cross-attention probs [B, H, R*S, T] -> [B*R, H, S, T], the reference's per-row layout."""
    B, H, RS, T = probs.shape
    return probs.reshape(B, H, rows, RS // rows, T).transpose(0, 2, 1, 3, 4).reshape(B * rows, H, RS // rows, T)


def decoder_layer(x, p, config, self_mask, kv, cross_mask, cache=None, trace=None, name=""):
    """Pre-LayerNorm decoder layer: causal self-attention, cross-attention, FFN, each with a residual.
    x [B, S, M] -> [B, S, M]; kv the cross keys/values [B, H, T, D]; self_mask [B or 1, 1, S, past+S]."""
    H = config.decoder_attention_heads
    h = layer_norm(x, p["self_attn_layer_norm"])
    h, self_probs, cache = self_attention(h, p["self_attn"], H, self_mask, cache)
    record(trace, f"{name}.self_attn", h)
    x = x + h
    h = layer_norm(x, p["encoder_attn_layer_norm"])
    h, cross_probs = cross_attention(h, kv, p["encoder_attn"], H, cross_mask)
    record(trace, f"{name}.encoder_attn", h)
    x = x + h
    x = x + ffn(layer_norm(x, p["final_layer_norm"]), p, config.activation_function)
    record(trace, name, x)
    return x, cache, self_probs, cross_probs


def causal_mask(S, past, dtype, xp, decoder_attention_mask=None):
    """Additive mask [B or 1, 1, S, past+S]: step i sees keys 0..past+i, and none the padding mask hides."""
    C = past + S
    allowed = xp.arange(C)[None, :] <= (past + xp.arange(S))[:, None]    # [S, C]
    allowed = allowed[None, None]                                        # [1, 1, S, C]
    if decoder_attention_mask is not None:
        allowed = allowed & (xp.asarray(decoder_attention_mask)[:, None, None, :C] == 1)  # [B, 1, S, C]
    return xp.where(allowed, 0.0, finfo(dtype).min).astype(dtype)


def decoder(params, config, kvs, cross_mask, input_ids=None, inputs_embeds=None, decoder_attention_mask=None,
            caches=None, output_hidden_states=False, trace=None, check_finite=None):
    """Run the decoder on S new steps.

    params: the tree under "model". kvs: per-layer cross (k, v) from cross_kv. cross_mask: additive
    [B, 1, 1, T] or None. caches: per-layer self-attention cache values (see self_attention), or None.
    Returns (hidden [B*R, S, M] after the final layer norm, new caches, hidden_states,
    self-attention probs, cross-attention probs). check_finite: as in encoder.encoder, or a
    precision.FiniteChecks that collects the checks for the caller to settle."""
    p = params["decoder"]
    if inputs_embeds is None:
        scale = config.d_model ** 0.5 if config.scale_embedding else 1.0
        table = p.get("embed_tokens", params["shared"])["weight"]  # tied to shared unless the checkpoint unties it
        inputs_embeds = embed_tokens(input_ids, table, scale)   # [B*R, S, M]
        record(trace, "model.decoder.embed_tokens", inputs_embeds)
    xp = array_module(inputs_embeds)
    dtype = inputs_embeds.dtype
    _, S, M = inputs_embeds.shape
    past = 0 if caches is None else cache_length(caches[0])
    pos = sinusoidal_positions(past, S, M, xp, dtype)            # [S, M] positions continue after the cache
    record(trace, "model.decoder.embed_positions", pos)
    x = residual(inputs_embeds) + pos                            # [B*R, S, M], float32 under fp16/bf16
    self_mask = causal_mask(S, past, dtype, xp, decoder_attention_mask)

    checks = FiniteChecks.of(check_finite, dtype)  # default: on under fp16/bf16; one sync per pass on a GPU
    hidden_states, self_probs, cross_probs, new_caches = [], [], [], []
    for i, layer_p in enumerate(p["layers"]):
        if output_hidden_states:
            hidden_states.append(x)
        x, cache, sp, cp = decoder_layer(x, layer_p, config, self_mask, kvs[i], cross_mask,
                                         None if caches is None else caches[i], trace, f"model.decoder.layers.{i}")
        checks.check(x, f"model.decoder.layers.{i}")  # inf/NaN reported with its layer (precision.py)
        new_caches.append(cache)
        self_probs.append(sp)
        cross_probs.append(cp)
    if checks is not check_finite:  # our own checks (generation passes its FiniteChecks and settles it)
        checks.settle()
    x = layer_norm(x, p["layer_norm"])                           # [B*R, S, M]
    record(trace, "model.decoder.layer_norm", x)
    if output_hidden_states:
        # As the reference: the embeddings and each layer's output, except that the last layer's
        # entry is the final layer norm's output, i.e. every layer's input and then the result.
        hidden_states.append(x)
    return x, tuple(new_caches), tuple(hidden_states) if output_hidden_states else None, \
        tuple(self_probs), tuple(cross_probs)
