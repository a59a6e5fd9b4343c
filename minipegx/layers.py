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

    That is below float32's resolution for GELU's outputs, so exact-GELU parity holds at fp32 tolerance.
    float64 arrays (the gradient checks' dtype) get erf64 instead, exact to a few ulp."""
    if x.dtype.itemsize == 8:
        return erf64(x)
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
    if xp.dtype(dtype) == xp.float64:  # float64 (gradient checks): the reference then computes in float64
        exponent = xp.arange(half, dtype=xp.float64) * -(math.log(10000.0) / (half - 1))   # [M/2]
        angle = xp.arange(start, start + length, dtype=xp.float64)[:, None] * xp.exp(exponent)  # [T, M/2]
        return xp.concatenate([xp.sin(angle), xp.cos(angle)], axis=-1)                    # [T, M]
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


# ================================================================================= backward passes (training)
# Each x_forward(...) returns (y, cache) and each x_backward(dy, cache) returns (dx, grads): the cache is a
# small named tuple of exactly what the backward reads, grads a dict keyed by the checkpoint's own names
# ({"weight", "bias"}, ...). The functions above stay the inference path; these are called by
# minipegx.training, in float32 or float64 (docs/training.md).
from typing import NamedTuple  # noqa: E402  (the training section's own import, kept beside it)

class LinearCache(NamedTuple):
    """What linear_backward reads: the input x [..., I] and the weight W [O, I]."""
    x: object                                  # [..., I] the input
    w: object                                  # [O, I]


def linear_forward(x, w, b=None):
    """y [..., O] = x [..., I] W^T (+ b [O]), W [O, I]; the cache keeps x and W."""
    return linear(x, w, b), LinearCache(x, w)


def linear_backward(dy, cache, bias=True):
    """dy [..., O] -> dx [..., I] and {"weight": dW [O, I], "bias": db [O]} ("bias" only if bias)."""
    x, w = cache
    x2 = x.reshape(-1, x.shape[-1])            # [R, I]
    dy2 = dy.reshape(-1, dy.shape[-1])         # [R, O]
    dx = (dy2 @ w).reshape(x.shape)            # [R, O] @ [O, I] -> [R, I] -> [..., I]
    grads = {"weight": dy2.T @ x2}             # [O, R] @ [R, I] -> [O, I]
    if bias:
        grads["bias"] = dy2.sum(axis=0)        # [O]
    return dx, grads


class LayerNormCache(NamedTuple):
    """What layer_norm_backward reads (llm.c keeps the same: the normalized input [..., M] and 1/std [..., 1])."""
    xhat: object                               # [..., M] the normalized input (x - mean) / std
    rstd: object                               # [..., 1] 1 / sqrt(var + eps)
    w: object                                  # [M]


def layer_norm_forward(x, p, eps=LAYER_NORM_EPS):
    """layer_norm of x [..., M] -> [..., M], keeping the normalized input and the reciprocal std (llm.c's
    layernorm_forward)."""
    xp = array_module(x)
    xc = x - x.mean(axis=-1, keepdims=True)                       # [..., M]
    rstd = 1.0 / xp.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)  # [..., 1] biased variance
    xhat = xc * rstd                                              # [..., M]
    return xhat * p["weight"] + p["bias"], LayerNormCache(xhat, rstd, p["weight"])


def layer_norm_backward(dy, cache):
    """dy [..., M] -> dx [..., M], {"weight", "bias"} [M]. With g = dy * w:
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), the means over the M features."""
    xhat, rstd, w = cache
    rows = tuple(range(dy.ndim - 1))
    grads = {"weight": (dy * xhat).sum(axis=rows), "bias": dy.sum(axis=rows)}     # [M], [M]
    g = dy * w                                                                     # [..., M] d xhat
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))  # [..., M]
    return dx, grads


def erf64(x):
    """erf to float64 accuracy, elementwise on an array of any shape ([B, T, F] in the FFN) (NumPy has none; the float32 `erf` above is A&S 7.1.26, 1.5e-7 off), for the
    float64 gradient checks. |x| < 3: erf = 2/sqrt(pi) e^(-x^2) sum_n (2x^2)^n x / (2n+1)!!, all terms positive
    (no cancellation), 64 terms (the last is below 2^-60 of the sum at |x| = 3). |x| >= 3: erfc's continued
    fraction e^(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), 60 levels evaluated from the
    bottom up. Both agree with math.erf to a few ulp (tests/test_training_finite_differences.py)."""
    xp = array_module(x)
    a = xp.abs(x)
    small = xp.minimum(a, 3.0)                         # the series' argument (large |x| use the fraction)
    term, total = small.copy(), small.copy()
    for n in range(1, 64):
        term = term * (2.0 * small * small) / (2 * n + 1)
        total = total + term
    series = (2.0 / math.sqrt(math.pi)) * xp.exp(-small * small) * total
    large = xp.maximum(a, 3.0)
    frac = large.copy()
    for n in range(60, 0, -1):
        frac = large + (n / 2.0) / frac
    erfc = xp.exp(-large * large) / (math.sqrt(math.pi) * frac)
    return xp.sign(x) * xp.where(a < 3.0, series, 1.0 - erfc)


def _tanh_gelu_grad(x, c):
    """d/dx of 0.5 x (1 + tanh(c (x + 0.044715 x^3)))."""
    xp = array_module(x)
    t = xp.tanh(c * (x + 0.044715 * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x)


def _sigmoid_times_grad(x, k):
    """d/dx of x sigmoid(k x) = s + k x s (1 - s)."""
    s = _sigmoid(k * x)
    return s + k * x * s * (1.0 - s)


# The derivative of each activation, written from its forward formula above (h is the activation's input).
ACTIVATION_GRADS = {
    "relu": lambda h: (h > 0).astype(h.dtype),         # torch's relu passes no gradient at 0
    "gelu": lambda h: 0.5 * (1.0 + erf(h * (1.0 / math.sqrt(2.0))))
    + h * array_module(h).exp(-0.5 * h * h) * (1.0 / math.sqrt(2.0 * math.pi)),   # Phi(h) + h phi(h)
    "gelu_new": lambda h: _tanh_gelu_grad(h, math.sqrt(2.0 / math.pi)),
    "gelu_pytorch_tanh": lambda h: _tanh_gelu_grad(h, math.sqrt(2.0 / math.pi)),
    "gelu_fast": lambda h: _tanh_gelu_grad(h, 0.7978845608),
    "quick_gelu": lambda h: _sigmoid_times_grad(h, 1.702),
    "silu": lambda h: _sigmoid_times_grad(h, 1.0),
    "swish": lambda h: _sigmoid_times_grad(h, 1.0),
    "tanh": lambda h: 1.0 - array_module(h).tanh(h) ** 2,
    "sigmoid": lambda h: _sigmoid(h) * (1.0 - _sigmoid(h)),
}


def activation_forward(h, act):
    """``ACT2FN[act](h)`` of h [..., F] into a new array (the inference relu works in place); the cache is h itself."""
    return ACTIVATIONS[act](h), h


def activation_backward(dy, h, act):
    """dy [..., F] -> dh [..., F] = dy * act'(h). No parameters."""
    return dy * ACTIVATION_GRADS[act](h)


class FfnCache(NamedTuple):
    """What ffn_backward reads: both linears' caches and the activation's input h [..., F]."""
    fc1: LinearCache
    act: object                                # [..., F] fc1's output, the activation's input
    fc2: LinearCache
    activation: str


def ffn_forward(x, p, act):
    """fc2(act(fc1(x))) with its cache. x [..., M] -> [..., F] -> [..., M]."""
    h, c1 = linear_forward(x, p["fc1"]["weight"], p["fc1"]["bias"])         # [..., F]
    a, ca = activation_forward(h, act)                                      # [..., F]
    y, c2 = linear_forward(a, p["fc2"]["weight"], p["fc2"]["bias"])         # [..., M]
    return y, FfnCache(c1, ca, c2, act)


def ffn_backward(dy, cache):
    """dy [..., M] -> dx [..., M] and {"fc1": {weight, bias}, "fc2": {weight, bias}}."""
    da, g2 = linear_backward(dy, cache.fc2)                                  # [..., F]
    dh = activation_backward(da, cache.act, cache.activation)               # [..., F]
    dx, g1 = linear_backward(dh, cache.fc1)                                  # [..., M]
    return dx, {"fc1": g1, "fc2": g2}


def softmax_backward(dp, probs):
    """Through p = softmax(s) over the last axis: ds = p * (dp - sum(dp * p)). dp, probs [..., C].
    In place on dp, which the callers compute for this alone (two score-sized buffers fewer: the local
    attention's are 0.5 GB each at 16k tokens)."""
    dp -= (dp * probs).sum(axis=-1, keepdims=True)                   # [..., C] - [..., 1]
    dp *= probs                                                       # [..., C]
    return dp


class AttendCache(NamedTuple):
    """What attend_backward reads: queries [..., Q, D], keys and values [..., C, D], the probabilities
    [..., Q, C] and the score scale."""
    q: object                                  # [..., Q, D]
    k: object                                  # [..., C, D]
    v: object                                  # [..., C, D]
    probs: object                              # [..., Q, C]
    scale: float


def attend_forward(q, k, v, mask, scale=1.0):
    """softmax(q k^T * scale + mask) v with its cache. q [..., Q, D], k and v [..., C, D], mask additive
    broadcastable to [..., Q, C] or None. The encoder passes scale 1 (its queries are pre-scaled), the
    decoder D^-1/2 (it scales the scores, as the reference does)."""
    s = q @ k.swapaxes(-1, -2)                 # [..., Q, D] @ [..., D, C] -> [..., Q, C]
    if scale != 1.0:
        s *= scale
    if mask is not None:
        s += mask
    probs = softmax(s)                         # [..., Q, C]
    return probs @ v, AttendCache(q, k, v, probs, scale)   # [..., Q, C] @ [..., C, D] -> [..., Q, D]


def attend_backward(dout, cache):
    """dout [..., Q, D] -> dq [..., Q, D], dk [..., C, D], dv [..., C, D]."""
    q, k, v, probs, scale = cache
    dv = probs.swapaxes(-1, -2) @ dout         # [..., C, Q] @ [..., Q, D] -> [..., C, D]
    dp = dout @ v.swapaxes(-1, -2)             # [..., Q, D] @ [..., D, C] -> [..., Q, C]
    ds = softmax_backward(dp, probs)           # [..., Q, C] (masked scores: probs 0, so ds 0)
    if scale != 1.0:
        ds *= scale
    dq = ds @ k                                # [..., Q, C] @ [..., C, D] -> [..., Q, D]
    dk = ds.swapaxes(-1, -2) @ q               # [..., C, Q] @ [..., Q, D] -> [..., C, D]
    return dq, dk, dv


class EmbedCache(NamedTuple):
    """What embed_tokens_backward reads: the ids [B, T], the table's row count V and the scale."""
    ids: object                                # [B, T] token ids
    vocab: int                                 # V, rows of the table
    scale: float


def embed_tokens_forward(ids, table, scale):
    """table[ids] * scale with its cache. [B, T] -> [B, T, M]."""
    return table[ids] * scale, EmbedCache(ids, table.shape[0], scale)


def embed_tokens_backward(dy, cache, padding_idx=None):
    """dy [B, T, M] -> the table's gradient [V, M]: each row sums the gradients of the positions that
    read it. As torch.nn.Embedding(padding_idx=pad), the padding token's row gets none (PEGASUS-X's token
    embedding sets padding_idx = pad_token_id; the tied LM head still gives that row a gradient)."""
    xp = array_module(dy)
    dtable = xp.zeros((cache.vocab, dy.shape[-1]), dy.dtype)                # [V, M]
    xp.add.at(dtable, cache.ids.reshape(-1), dy.reshape(-1, dy.shape[-1]) * cache.scale)  # scatter-add [B*T, M]
    if padding_idx is not None:
        dtable[padding_idx] = 0
    return dtable


def add_grads(into, grads):
    """Accumulate a gradient tree into another (into[k] += grads[k], each of its parameter's shape, e.g. the
    table [V, M]), for weights used more than once:
    the tied embedding table, the final layer norm and FFN shared by tokens and global tokens."""
    for name, g in grads.items():
        if name not in into:
            into[name] = g
        elif isinstance(g, dict):
            add_grads(into[name], g)
        else:
            into[name] += g
    return into
