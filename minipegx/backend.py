"""The one seam between minipegx and its array libraries.

Layer code never imports numpy or cupy: it asks ``array_module(x)`` for the module its inputs live
in, so the same lines run on the CPU (NumPy) and on a GPU (CuPy). Only this file decides which
module a model uses, moves weights there once, and brings results back.
"""

from __future__ import annotations

import sys

import numpy as np

from .errors import BackendError
from .tree import tree_map  # noqa: F401  (its home is tree.py; B_.tree_map kept for callers)

BACKENDS = ("numpy", "cupy")
DTYPES = ("float32", "float16", "bfloat16", "float64")  # float64: training's gradient checks


def _cupy_loaded():
    """The `cupy` module if something has imported it, else None. This is the one seam to CuPy: minipegx
    never imports it at module level, and finds it where Python's import system keeps it, so whatever
    `import cupy` gives (the real library, or the test suite's strict stand-in) is the GPU module."""
    return sys.modules.get("cupy")


def is_device_array(x) -> bool:
    """True for a CuPy array (never imports CuPy: an array of it exists only once it is imported)."""
    cp = _cupy_loaded()
    return cp is not None and (isinstance(x, getattr(cp, "ndarray", ())) or type(x).__module__.split(".")[0] == "cupy")


def is_host_module(xp) -> bool:
    """True for NumPy (the host), False for CuPy: for code handed a module rather than an array."""
    return xp is np


def array_module(x):
    """NumPy or CuPy: the module that owns array ``x``."""
    return _cupy_loaded() if is_device_array(x) else np


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


def gpu_count() -> int:
    """How many CUDA GPUs CuPy sees (0 without CuPy or a GPU)."""
    try:
        return int(get_backend("cupy").cuda.runtime.getDeviceCount())
    except BackendError:
        return 0


def use_gpu(index: int):
    """Make GPU `index` (modulo the GPUs visible) the current device of this process, for CuPy. With one GPU
    there is nothing to choose (it is the current device already)."""
    n = gpu_count()
    if n > 1:
        get_backend("cupy").cuda.Device(index % n).use()


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
    """True for float16/32/64, bfloat16 and float8 (whose NumPy kind is 'V', not 'f')."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name == "bfloat16" or dtype.name.startswith("float8")  # ml_dtypes kinds "V"


def to_device(x, xp, dtype=None):
    """Move (and optionally cast) a host or device array to module xp.

    A host array is cast on the host, before the transfer: a bfloat16 or float8 checkpoint (ml_dtypes,
    which CuPy cannot hold) reaches the GPU as float16/float32, and a float16 load sends half the bytes."""
    if xp is not np and is_device_array(x):
        return x if dtype is None or x.dtype == dtype else x.astype(dtype)
    host = to_numpy(x)
    if dtype is not None and host.dtype != dtype:
        host = host.astype(dtype)
    return host if xp is np else xp.asarray(host)


def to_numpy(x):
    """Bring any array (NumPy, CuPy, list) back to a NumPy array (one transfer for a CuPy array)."""
    if is_device_array(x):
        return x.get()
    return np.asarray(x)
