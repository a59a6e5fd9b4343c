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


# ================================================================================= backward passes (training)
# x_forward(...) -> (outputs, cache) and x_backward(d outputs, cache) -> (d inputs, grads), beside the inference
# functions above (layers.py explains the convention; minipegx.training runs them). Training sees every step
# at once, so there is no key/value cache: the causal mask does its work.
from typing import NamedTuple  # noqa: E402  (the training section's own imports, kept beside it)

from .layers import (AttendCache, EmbedCache, FfnCache, LayerNormCache, LinearCache, attend_backward,  # noqa: E402
                     attend_forward, embed_tokens_backward, embed_tokens_forward, ffn_backward, ffn_forward,
                     layer_norm_backward, layer_norm_forward, linear_backward, linear_forward)


class AttentionCache(NamedTuple):
    """What attention_backward reads: the four projections' caches and the heads' attention (queries
    [B, H, S, D], keys and values [B, H, C, D], probabilities [B, H, S, C])."""
    q: LinearCache                             # q_proj of the queries' input [B, S, M]
    k: LinearCache                             # k_proj of the keys' input [B, C, M] (C = S, or T encoder tokens)
    v: LinearCache
    attend: AttendCache                        # the heads' softmax(q k^T D^-1/2 + mask) v
    out: LinearCache                           # out_proj's input [B, S, M]


def attention_forward(x, kv_input, p, num_heads, mask):
    """The decoder's attention with its cache: queries from x [B, S, M], keys and values from kv_input
    [B, C, M] (x itself for self-attention, the encoder's output for cross-attention), mask additive
    broadcastable to [B, H, S, C]. Returns [B, S, M], cache."""
    D = x.shape[-1] // num_heads
    q, cq = linear_forward(x, p["q_proj"]["weight"])                       # [B, S, M]
    k, ck = linear_forward(kv_input, p["k_proj"]["weight"])                # [B, C, M]
    v, cv = linear_forward(kv_input, p["v_proj"]["weight"])                # [B, C, M]
    out, ca = attend_forward(split_heads(q, num_heads), split_heads(k, num_heads), split_heads(v, num_heads),
                             mask, D ** -0.5)                              # [B, H, S, D]
    out, co = linear_forward(merge_heads(out), p["out_proj"]["weight"])    # [B, S, M]
    return out, AttentionCache(cq, ck, cv, ca, co)


def attention_backward(dout, cache):
    """dout [B, S, M] -> d queries' input [B, S, M], d keys' input [B, C, M] and
    {q_proj, k_proj, v_proj, out_proj: {"weight"}} (for self-attention the caller adds the two inputs')."""
    dheads, g_out = linear_backward(dout, cache.out, bias=False)           # [B, S, M]
    H = cache.attend.q.shape[1]
    dq, dk, dv = attend_backward(split_heads(dheads, H), cache.attend)     # [B, H, S, D], [B, H, C, D] x 2
    dx, g_q = linear_backward(merge_heads(dq), cache.q, bias=False)        # [B, S, M]
    dkv, g_k = linear_backward(merge_heads(dk), cache.k, bias=False)       # [B, C, M]
    dkv_v, g_v = linear_backward(merge_heads(dv), cache.v, bias=False)
    dkv += dkv_v
    return dx, dkv, {"q_proj": g_q, "k_proj": g_k, "v_proj": g_v, "out_proj": g_out}


class DecoderLayerCache(NamedTuple):
    """What decoder_layer_backward reads: each sub-block's cache (the layer's input [B, S, M])."""
    self_norm: LayerNormCache
    self_attn: AttentionCache
    cross_norm: LayerNormCache
    cross_attn: AttentionCache
    final_norm: LayerNormCache
    ffn: FfnCache


def decoder_layer_forward(x, enc, p, config, self_mask, cross_mask):
    """decoder_layer with its cache: x [B, S, M], enc the encoder's output [B, T, M] -> x [B, S, M], cache."""
    H = config.decoder_attention_heads
    h, c1 = layer_norm_forward(x, p["self_attn_layer_norm"])
    h, c2 = attention_forward(h, h, p["self_attn"], H, self_mask)          # causal self-attention
    x = x + h
    h, c3 = layer_norm_forward(x, p["encoder_attn_layer_norm"])
    h, c4 = attention_forward(h, enc, p["encoder_attn"], H, cross_mask)    # cross-attention
    x = x + h
    h, c5 = layer_norm_forward(x, p["final_layer_norm"])
    h, c6 = ffn_forward(h, p, config.activation_function)
    return x + h, DecoderLayerCache(c1, c2, c3, c4, c5, c6)


def decoder_layer_backward(dx, cache):
    """dx [B, S, M] -> dx [B, S, M], d encoder output [B, T, M] and the layer's gradients."""
    dh, grads = ffn_backward(dx, cache.ffn)
    dh, grads["final_layer_norm"] = layer_norm_backward(dh, cache.final_norm)
    dx = dx + dh
    dh, denc, grads["encoder_attn"] = attention_backward(dx, cache.cross_attn)
    dh, grads["encoder_attn_layer_norm"] = layer_norm_backward(dh, cache.cross_norm)
    dx = dx + dh
    dq, dkv, grads["self_attn"] = attention_backward(dx, cache.self_attn)
    dh, grads["self_attn_layer_norm"] = layer_norm_backward(dq + dkv, cache.self_norm)  # h was queries and keys
    return dx + dh, denc, grads


class DecoderCache(NamedTuple):
    """What decoder_backward reads: the embeddings' cache, each layer's cache (or only its input [B, S, M]
    under recomputation) and the final layer norm's."""
    embed: EmbedCache
    layers: list                               # per layer its DecoderLayerCache, or its input x to recompute it
    enc: object                                # [B, T, M] the encoder's output (keys and values of every layer)
    self_mask: object                          # [B or 1, 1, S, S] additive, causal
    cross_mask: object                         # [B, 1, 1, T] additive
    final_norm: LayerNormCache
    params: dict                               # the tree under "model"
    config: object


def decoder_forward(params, config, decoder_input_ids, enc, cross_mask, decoder_attention_mask=None,
                    recompute=False):
    """decoder() for training, every step at once: ids [B, S], enc [B, T, M], cross_mask [B, 1, 1, T] ->
    hidden [B, S, M] after the final layer norm, cache (recompute: as encoder_forward)."""
    p = params["decoder"]
    scale = config.d_model ** 0.5 if config.scale_embedding else 1.0
    table = p.get("embed_tokens", params["shared"])["weight"]             # [V, M]
    x, c_embed = embed_tokens_forward(decoder_input_ids, table, scale)     # [B, S, M]
    xp, dtype = array_module(x), x.dtype
    _, S, M = x.shape
    x = x + sinusoidal_positions(0, S, M, xp, dtype)                       # [B, S, M]
    self_mask = causal_mask(S, 0, dtype, xp, decoder_attention_mask)       # [B or 1, 1, S, S]
    caches = []
    for layer_p in p["layers"]:
        inputs = x
        x, c = decoder_layer_forward(x, enc, layer_p, config, self_mask, cross_mask)
        caches.append(inputs if recompute else c)
        del c
    h, c_norm = layer_norm_forward(x, p["layer_norm"])                     # [B, S, M]
    return h, DecoderCache(c_embed, caches, enc, self_mask, cross_mask, c_norm, params, config)


def decoder_backward(dh, cache):
    """dh [B, S, M] -> (the decoder's gradients, d encoder output [B, T, M] summed over the layers, the token
    table's gradient [V, M])."""
    xp = array_module(dh)
    p, config = cache.params["decoder"], cache.config
    dx, g_norm = layer_norm_backward(dh, cache.final_norm)                 # [B, S, M]
    denc = xp.zeros_like(cache.enc)                                        # [B, T, M]
    layers = [None] * len(cache.layers)
    for i in reversed(range(len(cache.layers))):
        c = cache.layers[i]
        if not isinstance(c, DecoderLayerCache):                           # recompute the layer's forward
            _, c = decoder_layer_forward(c, cache.enc, p["layers"][i], config, cache.self_mask, cache.cross_mask)
        dx, d, layers[i] = decoder_layer_backward(dx, c)
        denc += d                                                          # every layer reads the encoder's output
    dtable = embed_tokens_backward(dx, cache.embed, config.pad_token_id)
    return {"layers": layers, "layer_norm": g_norm}, denc, dtable
