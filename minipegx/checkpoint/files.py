"""What every weights format shares: a memory map of the file, and a tensor's shape checked before use.

A tensor's header (safetensors) or pickle (torch) claims a dtype and a shape; nothing is allocated and
no view is made until the claim is checked: rank and element count against the limits (limits.py),
bytes against the file that must hold them. Shapes are multiplied as Python integers, so 2^32 x 2^32
is 2^64, not a 64-bit overflow to 0.
"""

from __future__ import annotations

import math
import mmap
import os
import stat

import numpy as np

from ..errors import CheckpointError
from ..limits import bounded_repr, current, over_limit


def bfloat16() -> np.dtype:
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def check_regular_file(path: str) -> None:
    """A weights path must be a regular file: a FIFO or /dev/zero would hang or never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path} is not a regular file; a weights file must be one")


def map_file(path: str) -> mmap.mmap:
    """A read-only memory map of the whole file (arrays made from it are read-only views, not copies)."""
    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise CheckpointError(f"{path} is empty: it looks truncated or corrupt; re-download it")
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None


def element_count(shape, source: str, name: str) -> int:
    """The element count of a claimed shape (a list/tuple of ints), or CheckpointError naming the tensor.

    Checks the type of every dimension, the rank and the count against the limits, without allocating."""
    lim = current()
    where = f"{source}: tensor {bounded_repr(name)}"
    if not isinstance(shape, (list, tuple)):
        raise CheckpointError(f"{where} has shape {bounded_repr(shape)}, not a list of dimensions; it is corrupt")
    if len(shape) > lim.max_tensor_rank:
        raise CheckpointError(f"{where}: " + over_limit("its rank", len(shape), "max_tensor_rank"))
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise CheckpointError(f"{where} has shape {bounded_repr(shape)}: dimensions must be whole numbers >= 0; "
                              "the file is corrupt")
    count = math.prod(shape)
    if count > lim.max_tensor_elements or max(shape, default=0) > lim.max_tensor_elements:
        raise CheckpointError(f"{where}: " + over_limit(f"its element count ({bounded_repr(list(shape))})", count,
                                                        "max_tensor_elements"))
    return count


__all__ = ["bfloat16", "check_regular_file", "map_file", "element_count"]
