"""The tolerance ladder, stated once: how closely minipegx must match a reference, and why.

A value passes when  max |got - want|  <=  atol + rtol * max |want|.  Each rung widens the one before it
for a reason that can be named: longer sums, longer inputs, wider models, another BLAS. The tests, the
parity tool (minipegx.parity) and docs/parity.md all read these; `python -m minipegx.tolerances`
prints the table that docs/parity.md shows (a test keeps the two equal).

Lower precision (float16, bfloat16, int8, nf4) is not on this ladder: its bounds are multiples of the
format's own rounding unit, measured and explained in docs/precision.md and tests/test_precision.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """|got - want| <= atol + rtol * max|want|, for the quantity `what`, because `why`."""
    name: str
    atol: float
    rtol: float
    what: str
    why: str

    def bound(self, want) -> float:
        """The largest difference allowed against the reference values `want`."""
        return self.atol + self.rtol * float(np.abs(_host(want)).max(initial=0.0))

    def error(self, got, want) -> float:
        """max |got - want|, in float64."""
        return float(np.abs(_host(got) - _host(want)).max(initial=0.0))

    def holds(self, got, want) -> bool:
        """error(got, want) <= bound(want)."""
        return self.error(got, want) <= self.bound(want)


def _host(x):
    """x as a float64 NumPy array; a CuPy array is brought back (one transfer), so device results compare too."""
    from .backend import to_numpy
    return to_numpy(x).astype(np.float64)


# name, atol, rtol, what it bounds, why
LADDER = tuple(Tolerance(*rung) for rung in (
    ("TINY_FP32", 1e-5, 0.0,
     "activations and attentions of tiny fp32 models (one layer function or the whole model)",
     "only the summation order of matmuls and softmax differs, ~1e-7 relative, far below 1e-5 at O(1) magnitudes"),
    ("LOGITS", 1e-4, 0.0,
     "fp32 logits and loss (tiny models, goldens)",
     "the bound the project sets for fp32 logits: sums over the vocabulary's width of O(1) values"),
    ("SCORES", 1e-4, 1e-5,
     "generation's sequences_scores",
     "sums of ~10 fp32 log-probs whose logits differ by ~1e-6; the relative term covers scores made large by penalties"),
    ("LONG_INPUTS", 1e-4, 1e-5,
     "every intermediate in the parity tool (its default), up to thousands of tokens",
     "a trained model's residual stream grows layer after layer and fp32 rounding with it; the sinusoid's last-bit "
    "differences grow with the position"),
    ("REAL_CHECKPOINT", 1e-3, 1e-4,
     "every intermediate of google/pegasus-x-base/-large, forward and decoding steps",
     "768/1024-wide matmuls sum in another order than torch's: ~1e-6 relative per operation over 32 layers"),
    ("CUPY_LOGITS", 1e-4, 0.0,
     "CuPy logits against NumPy and the goldens",
     "cuBLAS and OpenBLAS sum in different orders (~1e-6 relative at these sizes); TF32 is refused"),
    ("CUPY_ACTIVATIONS", 1e-5, 0.0,
     "CuPy encoder attentions against NumPy",
     "probabilities are O(1) and normalized: summation order alone, as for TINY_FP32"),
))
TINY_FP32, LOGITS, SCORES, LONG_INPUTS, REAL_CHECKPOINT, CUPY_LOGITS, CUPY_ACTIVATIONS = LADDER


def markdown_table() -> str:
    """The ladder as the Markdown table docs/parity.md shows."""
    rows = ["| rung | atol | rtol | what | why |", "| --- | --- | --- | --- | --- |"]
    rows += [f"| `{t.name}` | `{t.atol:g}` | `{t.rtol:g}` | {t.what} | {t.why} |" for t in LADDER]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
