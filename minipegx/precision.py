"""minipegx's mixed-precision rules, in one place (docs/precision.md explains and measures them).

float32, the default: nothing here changes a float32 result (every helper is the plain operation).
The textbook functions of layers.py (linear, layer_norm, softmax, the activation) are written as the
plain float32 formula; `float32_inside` wraps them, and is the one place where float16/bfloat16
operands are widened, int8/nf4 weights dequantized, and results rounded back.

float16 / bfloat16, the "compute dtype": weights (unless quantized) and activations are stored in it, and
  * matmuls multiply compute-dtype operands, accumulate in float32 and round the result once, as GPU
    tensor cores do. NumPy has no fp16/bf16 GEMM, so the operands are widened for BLAS; the product of
    two fp16 or bf16 numbers is exact in float32, so the arithmetic is the same;
  * attention scores stay in float32 from the product through the mask and the softmax (`scores`);
  * layer norm, softmax and activations compute in float32 and round their outputs (layers.py);
  * the residual stream, the running sum of every sub-block's output over all layers, stays in float32.
    It is the accumulation that overflows float16 in the PEGASUS family (it grows layer after layer;
    the reference family clamps it to finfo.max - 1000 instead, which changes the values it clamps);
    a float32 copy of [B, T, M] is small next to the weights;
  * everything else a layer computes is normalized first (pre-LayerNorm), so it is bounded by the
    weights. Should a sub-block output still pass 65504 it becomes inf, and the check after every
    layer (`check_finite`, on by default under fp16/bf16) raises NumericalError naming that layer:
    an overflow is reported, never clamped silently.

The two backends differ in one place, the products with a weight (`linear`): NumPy has no float16 GEMM,
so there both operands are widened to float32 and the result rounded once; on CuPy the float16 operands go
to cuBLAS as they are (it accumulates half-precision GEMMs in float32 and rounds the result once), so no
float32 copy of a weight is ever made on the GPU. The bias is then added in float16 (one more rounding);
probabilities meet the values in float16 (as torch's and FlashAttention's kernels do). Quantized weights
are dequantized to the compute dtype there, not to float32. Elementwise functions (layer norm, softmax,
activations) widen their activations only: a float16 layer-norm weight times a float32 array is cast per
element inside CuPy's kernel. docs/precision.md says what this changes in the numbers.
"""

from __future__ import annotations

import functools

import numpy as np

from .backend import array_module, to_numpy
from .errors import NumericalError
from .quantize import dequantize, is_quantized

ACCUMULATE = np.dtype("float32")  # matmul accumulators, norm/softmax statistics, the residual stream


def is_low_precision(dtype) -> bool:
    """True for float16 and bfloat16 (2-byte floats); False for float32/float64 and integer dtypes."""
    dtype = np.dtype(dtype)
    return dtype.itemsize == 2 and (dtype.kind == "f" or dtype.name == "bfloat16")


def round_to(y, dtype):
    """Round a float32 result to `dtype` (to nearest even; beyond +-65504 float16 gives inf, which the
    layer check reports). No copy when y already has that dtype."""
    dtype = np.dtype(dtype)
    if y.dtype == dtype:
        return y
    with np.errstate(over="ignore"):       # reported by assert_finite with the layer's name instead
        return y.astype(dtype)


def _narrow(a) -> bool:
    """True for a float16/bfloat16 array or a quantized (int8/nf4) weight."""
    return is_quantized(a) or (hasattr(a, "dtype") and is_low_precision(a.dtype))


def _any_narrow(obj) -> bool:
    """Whether any array among the arguments (arrays, dicts of a layer's parameters, tuples) is narrow."""
    if isinstance(obj, dict):
        return any(_any_narrow(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return any(_any_narrow(v) for v in obj)
    return _narrow(obj)


def _widen(obj):
    """The arguments with every narrow array as float32 (quantized weights dequantized), the rest as is."""
    if isinstance(obj, dict):
        return {k: _widen(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_widen(v) for v in obj)
    return dequantize(obj, ACCUMULATE) if _narrow(obj) else obj   # quantize.dequantize: either kind of narrow


def _widen_activations(obj):
    """On a GPU: the float16 arrays among the arguments as float32, parameter dicts left as they are (their
    float16 weights meet float32 activations elementwise, cast in registers, never copied)."""
    if isinstance(obj, tuple):
        return tuple(_widen_activations(v) for v in obj)
    if isinstance(obj, dict):
        return obj
    return obj.astype(ACCUMULATE) if hasattr(obj, "dtype") and is_low_precision(obj.dtype) else obj


def _native_product(fn, x, w, *rest):
    """A product with a weight on the GPU: float16 operands as they are (cuBLAS accumulates them in float32),
    a quantized weight dequantized to the compute dtype, a float32 x rounded to it."""
    low = w.dtype if not is_quantized(w) and is_low_precision(w.dtype) else \
        x.dtype if is_low_precision(x.dtype) else ACCUMULATE
    w = dequantize(w, low) if is_quantized(w) or w.dtype != low else w
    return fn(round_to(x, low), w, *rest)


def float32_inside(rounds_to, device_products=False):
    """Decorator: run a textbook function in float32 when any argument is float16/bfloat16 or quantized.

    Then the arguments are widened (weights dequantized), the plain formula runs in float32 (products
    of two fp16/bf16 numbers are exact there, so it is what a tensor core's float32 accumulation
    computes), and the result is rounded once to rounds_to(*args) -- e.g. linear's input dtype,
    layer_norm's weight dtype. With float32 (or float64) arguments the function is called as written,
    so its float32 path is the formula and nothing else. The plain function stays as `.textbook`.

    On CuPy (arrays not NumPy's): a function marked device_products=True (x @ W) runs on the float16
    operands natively (_native_product); the others widen their activations only (_widen_activations)."""
    def wrap(fn):
        @functools.wraps(fn)
        def seam(*args, **kwargs):
            if not (_any_narrow(args) or _any_narrow(kwargs)):
                return fn(*args, **kwargs)
            if array_module(args[0]) is not np:
                if device_products:
                    return round_to(_native_product(fn, *args, **kwargs), rounds_to(*args, **kwargs))
                return round_to(fn(*_widen_activations(args), **_widen_activations(kwargs)),
                                rounds_to(*args, **kwargs))
            return round_to(fn(*_widen(args), **_widen(kwargs)), rounds_to(*args, **kwargs))
        seam.textbook = fn
        return seam
    return wrap


def matmul(a, b):
    """a @ b. With a float16/bfloat16 operand: float32 accumulation, the result rounded to that dtype.

    On CuPy the product is native: both operands in float16 (float32 probabilities rounded to it, as
    torch's fp16 attention does), cuBLAS accumulating in float32."""
    low = a.dtype if is_low_precision(a.dtype) else b.dtype if is_low_precision(b.dtype) else None
    if low is None:
        return a @ b                       # float32 / float64: unchanged
    if array_module(a) is not np:
        return round_to(a, low) @ round_to(b, low)
    return round_to(a.astype(ACCUMULATE) @ b.astype(ACCUMULATE), low)


def scores(a, b):
    """a @ b for attention scores. With a float16/bfloat16 operand the float32 sums are kept, not rounded:
    the mask is added and the softmax computed in float32, as FlashAttention keeps its scores, so
    scores + finfo(float16).min cannot overflow to -inf. The probabilities then meet v in `matmul`.
    On CuPy the product itself is native and its float16 result widened (torch's fp16 attention rounds its
    scores the same way): widening q and k instead would copy every cached key to float32 at every decoding
    step, 64x the bytes of the scores at head dim 64. A raw score past 65504 becomes inf there, and the
    layer's inf/NaN check reports it."""
    if not (is_low_precision(a.dtype) or is_low_precision(b.dtype)):
        return a @ b                       # float32 / float64: unchanged
    if array_module(a) is not np:          # a GPU: native product (float32 sums, rounded once), then widened:
        low = a.dtype if is_low_precision(a.dtype) else b.dtype       # the [.., Q, C] scores, not q and k
        return (round_to(a, low) @ round_to(b, low)).astype(ACCUMULATE)
    return a.astype(ACCUMULATE) @ b.astype(ACCUMULATE)


def residual(x):
    """The residual stream's copy of x: float32 when x is float16/bfloat16, else x itself (no copy)."""
    return x.astype(ACCUMULATE) if is_low_precision(x.dtype) else x


def checks_on(check_finite, dtype) -> bool:
    """check_finite=None means: check under float16/bfloat16, not under float32 (see docs/precision.md)."""
    return is_low_precision(dtype) if check_finite is None else bool(check_finite)


def assert_finite(x, name, dtype):
    """Raise NumericalError if x (a residual stream after a layer) holds inf or NaN, naming the layer."""
    xp = array_module(x)
    if bool(xp.isfinite(x).all()):
        return
    raise_not_finite(name, x.size, int(x.size - int(xp.count_nonzero(xp.isfinite(x)))),
                     int(xp.count_nonzero(xp.isnan(x))), dtype)


def raise_not_finite(name, size, bad, nan, dtype):
    advice = ("a value in this layer passed float16's largest, 65504 (or a weight or input is not finite); "
              "use dtype='bfloat16' (float32's range at bfloat16's cost) or dtype='float32'"
              if np.dtype(dtype) == np.float16 else
              "check the inputs (inputs_embeds?) and the weights; minipegx.checkpoint.load_params validates a "
              "checkpoint's values, but weights changed after loading are not checked")
    raise NumericalError(f"inf or NaN first appeared in {name}: {bad} of {size} values ({nan} NaN) while "
                         f"computing in {np.dtype(dtype).name}; {advice}")


class FiniteChecks:
    """The inf/NaN check after every layer (assert_finite), on either backend without a sync per layer.

    On NumPy a layer is checked at once. On a GPU each check leaves two counts on the device, [bad, NaN],
    and `settle` brings all of a pass's counts back in one transfer and raises for the first bad layer;
    generation folds them into its one transfer per step (`counts()` then `settle(host_counts)`).
    `FiniteChecks.of(check_finite, dtype)` accepts check_finite = None | bool | a FiniteChecks to add to."""

    def __init__(self, on, dtype):
        self.on, self.dtype, self.pending = on, dtype, []   # pending: (name, size, device [bad, nan])

    @classmethod
    def of(cls, check_finite, dtype):
        return check_finite if isinstance(check_finite, FiniteChecks) else cls(checks_on(check_finite, dtype), dtype)

    def check(self, x, name):
        if not self.on:
            return
        xp = array_module(x)
        if xp is np:
            assert_finite(x, name, self.dtype)
            return
        bad = x.size - xp.count_nonzero(xp.isfinite(x))
        self.pending.append((name, x.size, xp.stack([bad, xp.count_nonzero(xp.isnan(x))])))

    def counts(self):
        """The pending counts as one device array [checks, 2] (None when nothing is pending)."""
        if not self.pending:
            return None
        xp = array_module(self.pending[0][2])
        return xp.stack([c for _, _, c in self.pending]).astype("int64")

    def settle(self, host_counts=None):
        """Raise NumericalError for the first pending check that found inf/NaN (one transfer if host_counts
        is not given), and forget the pending checks."""
        if not self.pending:
            return
        host = to_numpy(self.counts()) if host_counts is None else host_counts
        pending, self.pending = self.pending, []
        for (name, size, _), (bad, nan) in zip(pending, host.tolist()):
            if bad:
                raise_not_finite(name, size, bad, nan, self.dtype)


def assert_weights_fit(params, dtype):
    """At load: a weight whose values pass float16's range would become inf silently when cast; name it.
    Called on the host copy (the cast happens on the host, before the transfer), so no GPU sync."""
    if np.dtype(dtype) != np.float16:
        return
    from .tree import flatten_params

    bad = [name for name, a in flatten_params(params).items()
           if getattr(a, "dtype", None) == np.float16 and not bool(array_module(a).isfinite(a).all())]
    if bad:
        raise NumericalError(f"{len(bad)} weight(s) hold values beyond float16's range (+-65504), e.g. {bad[0]}; "
                             "load with dtype='bfloat16' (float32's range) or dtype='float32'")
