"""model.safetensors -> {name: read-only array view of one memory map of the file}.

Layout: 8-byte little-endian header length N | N bytes of JSON header | data. The header maps each name
to {"dtype", "shape", "data_offsets": [begin, end]}, offsets relative to the data start. We parse it
ourselves so every tensor is a view of one mmap (safetensors' own NumPy loader copies each tensor and
cannot produce bf16). The header is untrusted: its size and nesting, every entry's JSON types, and
each tensor's rank, element count and bytes are checked against the limits and the file before any
view is made.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import CheckpointError
from ..limits import bounded_repr, current, over_limit, parse_json
from .files import bfloat16, element_count, map_file


def safetensors_dtypes() -> dict:
    """safetensors dtype tags -> little-endian NumPy dtypes (bf16 and fp8 via ml_dtypes)."""
    import ml_dtypes

    return {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": bfloat16(),
            "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
            "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
            "U8": np.dtype("u1"), "BOOL": np.dtype("?")}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    def corrupt(detail):
        return CheckpointError(f"{path} looks truncated or corrupt ({detail}); re-download it")

    mm = map_file(path)
    size = len(mm)
    if size < 8:
        raise corrupt(f"{size} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", mm[:8])
    if n > size - 8:
        raise corrupt(f"header length {n} but the file has {size} bytes")
    if n > current().max_safetensors_header_bytes:
        raise CheckpointError(f"{path}: " + over_limit("the header length", n, "max_safetensors_header_bytes"))
    header = parse_json(mm[8:8 + n], f"{path} (safetensors header)", CheckpointError,
                        size_limit="max_safetensors_header_bytes")
    if not isinstance(header, dict):
        raise corrupt("the header is not a JSON object")
    if not isinstance(header.pop("__metadata__", {}), dict):
        raise corrupt("__metadata__ is not a JSON object")
    dtypes = safetensors_dtypes()
    data_start, data_len = 8 + n, size - 8 - n
    out = {}
    for name, info in header.items():
        dtype, shape, begin, end = _entry(info, name, dtypes, path, corrupt)
        count = element_count(shape, path, name)
        if not 0 <= begin <= end or end - begin != count * dtype.itemsize:
            raise corrupt(f"tensor {bounded_repr(name)}: data offsets [{begin}, {end}] do not fit shape "
                          f"{bounded_repr(shape)} of {info['dtype']}")
        if end > data_len:
            raise corrupt(f"tensor {bounded_repr(name)} ends at byte {data_start + end}, beyond the file end "
                          f"({size} bytes)")
        if count == 0:
            out[name] = np.empty(tuple(shape), dtype)
        else:
            out[name] = np.frombuffer(mm, dtype, count=count, offset=data_start + begin).reshape(shape)
    return out


def _entry(info, name, dtypes, path, corrupt):
    """(dtype, shape, begin, end) of one header entry, every JSON type checked."""
    if not (isinstance(info, dict) and {"dtype", "shape", "data_offsets"} <= set(info)):
        raise corrupt(f"tensor {bounded_repr(name)} has an incomplete header entry")
    tag, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(tag, str) or tag not in dtypes:
        raise CheckpointError(f"{path}: tensor {bounded_repr(name)} has dtype {bounded_repr(tag)}, which minipegx "
                              f"cannot read (it reads {', '.join(dtypes)})")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise corrupt(f"tensor {bounded_repr(name)} has data_offsets {bounded_repr(offsets)}, not two integers")
    return dtypes[tag], shape, offsets[0], offsets[1]


__all__ = ["read_safetensors", "safetensors_dtypes"]
