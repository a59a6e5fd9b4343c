"""The one seam between minipegx and its array libraries.

Layer code never imports numpy or cupy: it asks ``array_module(x)`` for the module its inputs live
in, so the same lines run on the CPU (NumPy) and on a GPU (CuPy). Only this file decides which
module a model uses, moves weights there once, and brings results back.
"""

from __future__ import annotations

import numpy as np

from .errors import BackendError
from .tree import tree_map  # noqa: F401  (its home is tree.py; B_.tree_map kept for callers)

BACKENDS = ("numpy", "cupy")
DTYPES = ("float32", "float16", "bfloat16", "float64")  # float64: training's gradient checks


def array_module(x):
    """NumPy or CuPy: the module that owns array ``x`` (CuPy is imported only if x is a CuPy array)."""
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def get_backend(name: str = "numpy"):
    """The array module for a backend name, with a clear error when CuPy or a GPU is missing."""
    if name == "numpy":
        return np
    if name != "cupy":
        raise BackendError(f"unknown backend {name!r}: choose one of {BACKENDS}")
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise BackendError(
            "backend='cupy' needs CuPy, which is not installed: "
            "pip install 'minipegx[gpu]' (or the cupy-cudaXXx wheel matching your CUDA)"
        ) from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # pragma: no cover - depends on the machine
        raise BackendError(f"backend='cupy' needs a CUDA GPU, but CUDA reports none usable: {e}") from e
    if n < 1:  # pragma: no cover
        raise BackendError("backend='cupy' needs a CUDA GPU, but none is visible")
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU (tests use this to skip cleanly)."""
    try:
        get_backend("cupy")
    except BackendError:
        return False
    return True


def resolve_dtype(name, xp=np):
    """The array dtype for 'float32' | 'float16' | 'bfloat16' | 'float64' on module xp (bf16 on NumPy via ml_dtypes)."""
    name = getattr(name, "name", name)
    name = str(name)
    if name in ("float32", "fp32"):
        return xp.dtype("float32")
    if name in ("float64", "fp64", "double"):
        return xp.dtype("float64")
    if name in ("float16", "fp16", "half"):
        return xp.dtype("float16")
    if name in ("bfloat16", "bf16"):
        if xp is np:
            try:
                import ml_dtypes
            except ImportError as e:
                raise BackendError("dtype='bfloat16' on NumPy needs ml_dtypes: pip install ml_dtypes") from e
            return np.dtype(ml_dtypes.bfloat16)
        raise BackendError("dtype='bfloat16' is not supported by CuPy; use float16 or float32 on the GPU")
    raise BackendError(f"unknown dtype {name!r}: choose one of {DTYPES}")


def finfo(dtype):
    """np.finfo that also knows bfloat16 (NumPy's does not; ml_dtypes.finfo does). Works for CuPy dtypes,
    which are NumPy dtypes."""
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(dtype)
    return np.finfo(dtype)


def is_floating(dtype) -> bool:
    """True for float16/32/64 and bfloat16 (whose NumPy kind is 'V', not 'f')."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name == "bfloat16"


def to_device(x, xp, dtype=None):
    """Move (and optionally cast) a host or device array to module xp."""
    if xp is np:
        out = to_numpy(x)
    else:
        out = xp.asarray(x)
    if dtype is not None and out.dtype != dtype:
        out = out.astype(dtype)
    return out


def to_numpy(x):
    """Bring any array (NumPy, CuPy, list) back to a NumPy array."""
    if type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    return np.asarray(x)
