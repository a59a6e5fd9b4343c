"""The building blocks shared by encoder and decoder: linear maps, layer norm, activations, the FFN,
scaled token embeddings, sinusoidal positions, softmax and the scaled-dot-product attention core.

Shape legend (used everywhere in minipegx): B batch, T tokens, S decoder steps, N blocks,
K block size, G global tokens, H heads, D head dim, F FFN width, M d_model, V vocab; P tokens padded
to whole blocks; Q queries and C keys of one attention (C also cached + new decoder steps); R rows per
input in generation (W beams x returned sequences). Each letter has this one meaning; counts of layers
are written out ("layers"), never a letter.
Every function takes arrays and plain parameter dicts (the checkpoint's own tree) and returns arrays;
the array module (NumPy or CuPy) comes from the inputs.
"""

from __future__ import annotations

import math

from .backend import array_module, finfo
from .precision import float32_inside, round_to

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which PEGASUS-X keeps


def record(trace, name, value):
    """Store an intermediate under its Hugging Face module name when tracing (trace is a dict or None)."""
    if trace is not None:
        trace[name] = value


@float32_inside(rounds_to=lambda x, w, b=None: x.dtype, device_products=True)
def linear(x, w, b=None):
    """y = x W^T (+ b), as torch.nn.Linear. W is [O, I] as stored in the checkpoint.

    The leading dims are flattened so the product is one BLAS GEMM, not one per batch row.
    float16/bfloat16 operands and int8/nf4 weights are widened to float32 around this formula and the
    result rounded once to x's dtype (precision.float32_inside)."""
    rows = x.reshape(-1, x.shape[-1])          # [R, I]
    if rows.shape[0] <= 16:  # a decoding step's few rows: W as the left operand, so BLAS streams it once
        y = (w @ rows.T).T                     # [O, I] @ [I, R] -> [O, R] -> [R, O] (~2x faster in OpenBLAS)
    else:
        y = rows @ w.T                         # [R, I] @ [I, O] -> [R, O]
    if b is not None:
        y += b
    return y.reshape(*x.shape[:-1], w.shape[0])  # [..., O]


@float32_inside(rounds_to=lambda x, p, eps=None: p["weight"].dtype)
def layer_norm(x, p, eps=LAYER_NORM_EPS):
    """LayerNorm over the last dim with biased variance (torch's), eps 1e-5. p = {"weight", "bias"} [M].
    x [..., M] -> [..., M].

    Under float16/bfloat16 the statistics are computed in float32 (squares of |x| > 256 overflow fp16)
    and the output rounded to the weights' dtype (the residual stream x may be float32, precision.py)."""
    xp = array_module(x)
    y = x - x.mean(axis=-1, keepdims=True)     # [..., M] centered; a new array, so the rest is in place
    var = (y * y).mean(axis=-1, keepdims=True)  # [..., 1]
    y /= xp.sqrt(var + eps)
    y *= p["weight"]
    y += p["bias"]
    return y


def erf(x):
    """erf for NumPy (which has none) and CuPy alike: Abramowitz & Stegun 7.1.26, |error| < 1.5e-7.
    Elementwise, any shape: in exact GELU, h [..., F] -> [..., F].

    That is below float32's resolution for GELU's outputs, so exact-GELU parity holds at fp32 tolerance."""
    xp = array_module(x)
    sign = xp.sign(x)
    a = xp.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * xp.exp(-a * a))


def _gelu_tanh(x):
    xp = array_module(x)
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _sigmoid(x):
    xp = array_module(x)
    return 1.0 / (1.0 + xp.exp(-x))


# transformers' ACT2FN, name for name (configuration validation lists the same names).
ACTIVATIONS = {
    "relu": lambda x: array_module(x).maximum(x, 0),
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0)))),  # exact GELU (erf), ACT2FN["gelu"]
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": lambda x: 0.5 * x * (1.0 + array_module(x).tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "quick_gelu": lambda x: x * _sigmoid(1.702 * x),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "tanh": lambda x: array_module(x).tanh(x),
    "sigmoid": _sigmoid,
}


@float32_inside(rounds_to=lambda h, act: h.dtype)
def activation(h, act):
    """``ACT2FN[act](h)``, float32 inside under float16/bfloat16. relu works in place: h is the FFN's own
    [..., F] array, and a second one (200 MB at 16k tokens) costs more to allocate than the relu itself."""
    if act == "relu":
        return array_module(h).maximum(h, 0, out=h)
    return ACTIVATIONS[act](h)


def ffn(x, p, act):
    """Position-wise feed-forward: fc2(act(fc1(x))). x [..., M] -> [..., F] -> [..., M]."""
    h = linear(x, p["fc1"]["weight"], p["fc1"]["bias"])                    # [..., F]
    h = activation(h, act)                                                 # [..., F]
    return linear(h, p["fc2"]["weight"], p["fc2"]["bias"])                 # [..., M]


def embed_tokens(ids, table, scale):
    """Token embedding times sqrt(d_model) when config.scale_embedding (PegasusXScaledWordEmbedding).
    ids [B, T], table [V, M] -> [B, T, M]."""
    return round_to(table[ids] * scale, table.dtype)  # [B, T] -> [B, T, M] (bf16 * float is float32)


def sinusoidal_positions(start, length, dim, xp, dtype="float32"):
    """PEGASUS-X's sinusoid: sin in the first half of the features, cos in the second, with frequency
    exp(-ln(10000) * i / (dim/2 - 1)) -- note dim/2 - 1, not dim/2 (PegasusXSinusoidalPositionalEmbedding).
    Positions start .. start+length-1 -> [T, M] (T = length, M = dim).

    Computed in float32 like the reference: at position 16k a float64 argument would differ from
    the reference's float32 one by ~1e-3 after rounding, far beyond parity tolerance."""
    half = dim // 2
    f32 = xp.float32
    # The exponent is rounded to float32 as the reference's is, then exp is taken in float64 and rounded:
    # that gives torch's float32 exp bit for bit on nearly every entry (NumPy's float32 exp differs in the
    # last bit on ~20% of them, and position 16k magnifies a last-bit difference to ~1e-3 in sin).
    exponent = xp.arange(half, dtype=f32) * f32(-(math.log(10000.0) / (half - 1)))   # [M/2]
    freq = xp.exp(exponent.astype(xp.float64)).astype(f32)                           # [M/2]
    pos = xp.arange(start, start + length, dtype=f32)[:, None]                           # [T, 1]
    angle = pos * freq                                                                   # [T, M/2]
    return xp.concatenate([xp.sin(angle), xp.cos(angle)], axis=-1).astype(dtype)         # [T, M]


@float32_inside(rounds_to=lambda s: s.dtype)
def softmax(s):
    """Softmax over the last axis, in place on s (saves one score-sized buffer): s [..., C] -> [..., C].
    float16/bfloat16 scores: exponentials and sums in float32, probabilities rounded back."""
    xp = array_module(s)
    s -= s.max(axis=-1, keepdims=True)
    xp.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


def split_heads(x, num_heads):
    """[B, T, M] -> [B, H, T, D] (T tokens or decoder steps; a strided view, read by matmul without a copy)."""
    B, T, M = x.shape
    return x.reshape(B, T, num_heads, M // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """[B, H, T, D] -> [B, T, H*D]."""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def additive_mask(attention_mask, dtype, xp):
    """1/0 keep-mask [B, T] -> additive mask [B, T]: 0 where kept, finfo(dtype).min where masked (the reference's
    `(1 - mask).masked_fill(..., finfo.min)`: anything other than exactly 1 counts as masked)."""
    keep = xp.asarray(attention_mask) == 1
    return xp.where(keep, 0.0, finfo(dtype).min).astype(dtype)
