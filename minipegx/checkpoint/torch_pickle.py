"""pytorch_model.bin -> {name: array}, without torch and without running anything from the file.

torch.save writes a pickle whose only globals, for a state dict of fp32/fp16/bf16 tensors, are a
handful (checked with pickletools on torch 2.13); a storage is a persistent id pointing at raw bytes.
Two containers: a zip archive (torch >= 1.6: <root>/data.pkl plus one entry <root>/data/<key> per
storage) and the legacy stream (five pickles in a row, then the storages' bytes).

Each pickle is first scanned (pickle_scan.py: budgets, allowed opcodes and globals, string keys), then
unpickled by SafeUnpickler, whose find_class is the only door to Python callables and opens for the
same short allow-list. Storages become read-only views of a memory map of the file; a deflated zip
member is decompressed in a stream, never past the bytes its tensor needs.
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import pickle
import struct
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from ..errors import CheckpointError, MiniPegxError
from ..limits import bounded_repr, current, over_limit
from .files import bfloat16, check_regular_file, element_count, map_file
from .pickle_scan import ALLOWED_GLOBALS, refuse_global, scan_pickle

_STORAGE_DTYPES = {"FloatStorage": "<f4", "HalfStorage": "<f2", "BFloat16Storage": "bfloat16",
                   "DoubleStorage": "<f8", "LongStorage": "<i8", "IntStorage": "<i4"}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a pre-1.6 (non-zip) torch.save file


# Everything the pickle can get hold of is an immutable tuple: a BUILD opcode cannot modify it.
class _StorageType(NamedTuple):
    """What find_class returns for torch.FloatStorage & co: just the element dtype."""

    dtype: np.dtype


class _Storage(NamedTuple):
    """A persistent id: ``numel`` elements of ``dtype``, stored in the file under ``key``."""

    key: str
    dtype: np.dtype
    numel: int


class _PendingTensor(NamedTuple):
    """A tensor the pickle described: a strided view of a storage, materialized once its bytes are found."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


class _Allowed(NamedTuple):
    """An allowed callable, wrapped so the pickle cannot reach (and BUILD cannot modify) the function."""

    fn: object

    def __call__(self, *args):
        return self.fn(*args)


class SafeUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict without torch and without running anything from the file.

    ``find_class`` is the only door through which a pickle reaches Python callables (GLOBAL,
    STACK_GLOBAL, INST, OBJ and EXT all go through it), so allowing a short list closes it. The
    callables handed out are immutable wrappers, which a BUILD opcode cannot modify.
    """

    def __init__(self, file, source: str, storages: dict):
        super().__init__(file)
        self.source = source            # file name, for messages
        self.storages = storages        # key -> _Storage, one per key (tied weights share it)
        self.storage_types = {n: _StorageType(np.dtype(bfloat16() if d == "bfloat16" else d))
                              for n, d in _STORAGE_DTYPES.items()}

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise refuse_global(self.source, module, name)
        if module == "collections":
            return collections.OrderedDict
        if module == "torch._utils":
            return _Allowed(getattr(self, name))
        return self.storage_types[name]

    def persistent_load(self, pid):
        """A storage the pickle names, as a read-only view of its bytes in the zip (checked first)."""
        # zip format: ('storage', type, key, location, numel); legacy adds view_metadata (None)
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and _is_count(pid[4])
                and (len(pid) == 5 or pid[5] is None)):
            raise CheckpointError(f"{self.source} has a storage reference minipegx does not understand "
                                  f"({bounded_repr(pid, 120)}); re-save it with a current torch or as safetensors")
        _, storage_type, key, _location, numel = pid[:5]
        element_count((numel,), self.source, f"storage {key}")
        known = self.storages.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if known != (key, storage_type.dtype, numel):
            raise CheckpointError(f"{self.source} describes storage {bounded_repr(key)} twice, differently; "
                                  "it is corrupt")
        return known

    def _rebuild_tensor_v2(self, storage, offset, size, stride, *_requires_grad_hooks_metadata):
        if not (isinstance(storage, _Storage) and isinstance(size, tuple) and isinstance(stride, tuple)
                and all(map(_is_count, stride)) and len(size) == len(stride) and _is_count(offset)):
            raise CheckpointError(f"{self.source} describes a tensor minipegx cannot rebuild; re-save it")
        count = element_count(size, self.source, "in the pickle")
        if count > storage.numel:  # it would reach past the end, or overlap itself: a weight never does
            raise CheckpointError(f"{self.source} describes a tensor of {count} elements reaching past the end of "
                                  f"its storage of {storage.numel}; it is corrupt")
        return _PendingTensor(storage, offset, size, stride)

    def _rebuild_parameter(self, data, *_requires_grad_hooks):
        return data


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _materialize(t: _PendingTensor, arrays: dict, source: str) -> np.ndarray:
    """The array a _PendingTensor describes: a reshape when contiguous, else a checked as_strided view."""
    flat, size, stride = arrays[t.storage.key], t.size, t.stride  # flat: [numel] of the storage
    if 0 in size:
        return np.empty(size, flat.dtype)
    last = t.offset + sum((n - 1) * s for n, s in zip(size, stride))  # index of the furthest element
    if last >= flat.size:
        raise CheckpointError(f"{source} describes a tensor reaching past the end of its storage; it is corrupt")
    contiguous = tuple(math.prod(size[i + 1:]) for i in range(len(size)))
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous)):
        return flat[t.offset:t.offset + math.prod(size)].reshape(size)
    return np.lib.stride_tricks.as_strided(flat[t.offset:], shape=size,
                                           strides=[s * flat.itemsize for s in stride], writeable=False)


def _unpickle(buf, start: int, end: int, source: str, storages: dict):
    """Scan the pickle at buf[start:end], then unpickle it; (object, offset after its STOP)."""
    stop = scan_pickle(buf, start, end, source)
    try:
        return SafeUnpickler(io.BytesIO(bytes(buf[start:stop])), source, storages).load(), stop
    except MiniPegxError:
        raise
    except Exception as e:  # a corrupt pickle can raise almost anything (EOFError, ValueError, ...)
        raise CheckpointError(f"{source} is not a readable torch pickle ({type(e).__name__}: "
                              f"{bounded_repr(str(e), 120)}); it looks truncated or corrupt: re-download it") from e


def _as_state_dict(obj, arrays: dict, source: str) -> dict[str, np.ndarray]:
    if not (isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, _PendingTensor)
                                          for k, v in obj.items())):
        raise CheckpointError(f"{source} does not hold a state dict (a mapping of names to tensors), "
                              f"but a {type(obj).__name__}")
    return {k: _materialize(v, arrays, source) for k, v in obj.items()}


def read_torch(path: str) -> dict[str, np.ndarray]:
    check_regular_file(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        return _read_torch_zip(path)
    if head[:1] == b"\x80":
        return _read_torch_legacy(path)
    raise CheckpointError(f"{path} is neither safetensors, a torch zip archive nor a torch pickle; "
                          "it looks corrupt: re-download it")


# ---------------------------------------------------------------------------------------------- zip
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip entry's local header: 30 bytes, then name and extra


@contextlib.contextmanager
def _zip_errors(path: str):
    """Whatever zipfile or zlib raises on a damaged archive (bad CRC, truncation, ...) as a CheckpointError."""
    try:
        yield
    except MiniPegxError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
            struct.error, NotImplementedError, RuntimeError, OverflowError) as e:
        raise CheckpointError(f"{path} is not a readable zip archive ({type(e).__name__}: "
                              f"{bounded_repr(str(e), 120)}); it looks truncated or corrupt: re-download it") from None


def _read_torch_zip(path: str) -> dict[str, np.ndarray]:
    """torch >= 1.6: a zip of <root>/data.pkl plus one uncompressed entry <root>/data/<key> per storage."""
    mm = map_file(path)
    with _zip_errors(path), open(path, "rb") as fp:
        end = zipfile._EndRecData(fp)  # the entry count, before ZipFile builds one object per entry
        if end and end[zipfile._ECD_ENTRIES_TOTAL] > current().max_zip_entries:
            raise CheckpointError(f"{path}: " + over_limit("the zip entry count", end[zipfile._ECD_ENTRIES_TOTAL],
                                                           "max_zip_entries"))
        with zipfile.ZipFile(fp) as z:
            names = set(z.namelist())
            if len(names) != len(z.namelist()):  # zipfile would silently read the last of two same-named entries
                twice = collections.Counter(z.namelist()).most_common(1)[0][0]
                raise CheckpointError(f"{path} holds two zip entries named {bounded_repr(twice)}; minipegx will not "
                                      "pick one: the file is corrupt or tampered with")
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise CheckpointError(f"{path} is a zip archive with {len(pkl)} <root>/data.pkl entries, not a torch "
                                      "checkpoint (which has exactly one)")
            root = pkl[0][: -len("data.pkl")]
            if root + "byteorder" in names and _member(z, root + "byteorder", 16, path).strip() != b"little":
                raise CheckpointError(f"{path} was saved on a big-endian machine; re-save it as safetensors")
            storages: dict[str, _Storage] = {}
            data = _member(z, pkl[0], current().max_pickle_bytes, path)
            obj, _ = _unpickle(data, 0, len(data), path, storages)
            arrays = {key: _storage(z, mm, f"{root}data/{key}", st, path) for key, st in storages.items()}
    return _as_state_dict(obj, arrays, path)


def _member(z: zipfile.ZipFile, name: str, cap: int, path: str, nbytes: int | None = None) -> bytes:
    """A member's bytes, decompressed in a stream and never past `cap` (or exactly `nbytes`); CRC checked."""
    info = z.getinfo(name)
    _check_member(info, path)
    if nbytes is not None and info.file_size != nbytes:
        raise CheckpointError(f"{path}: storage {bounded_repr(name)} holds {info.file_size} bytes, its tensor "
                              f"needs {nbytes}; it looks truncated or corrupt: re-download it")
    if info.file_size > cap:
        raise CheckpointError(f"{path}: member {bounded_repr(name)} is {info.file_size} bytes, more than the "
                              f"{cap} it may hold")
    if info.compress_type == zipfile.ZIP_DEFLATED:
        ratio = current().max_decompression_ratio
        if info.file_size > ratio * info.compress_size + 65536:
            raise CheckpointError(f"{path}: " + over_limit(f"member {bounded_repr(name)} expands from "
                                                           f"{info.compress_size} to {info.file_size} bytes, a ratio "
                                                           "that", info.file_size // max(info.compress_size, 1),
                                                           "max_decompression_ratio"))
    with z.open(info) as f:
        data = f.read(info.file_size)  # ZipExtFile inflates chunk by chunk, bounded by file_size
        if len(data) != info.file_size or f.read(1):
            raise CheckpointError(f"{path}: member {bounded_repr(name)} is shorter or longer than its header says")
    return data


def _check_member(info: zipfile.ZipInfo, path: str) -> None:
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{path}: member {bounded_repr(info.filename)} is encrypted; torch never encrypts, "
                              "so the file is not a torch checkpoint")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"{path}: member {bounded_repr(info.filename)} uses compression method "
                              f"{info.compress_type}; minipegx reads stored (torch's) or deflated members")


def _storage(z: zipfile.ZipFile, mm, name: str, st: _Storage, path: str) -> np.ndarray:
    """The [numel] array of one storage: a view of the mmap when stored (CRC checked), else inflated."""
    try:
        info = z.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path} lacks the storage entry {bounded_repr(name)}; re-download it") from None
    _check_member(info, path)
    nbytes = st.numel * st.dtype.itemsize
    if info.compress_type != zipfile.ZIP_STORED:
        return np.frombuffer(_member(z, name, nbytes, path, nbytes), st.dtype)
    if info.file_size != nbytes or info.compress_size != nbytes:
        raise CheckpointError(f"{path}: storage {bounded_repr(name)} holds {info.file_size} bytes, its tensor "
                              f"needs {nbytes}; it looks truncated or corrupt: re-download it")
    if nbytes == 0:
        return np.empty(0, st.dtype)
    # torch stores entries uncompressed (64-byte aligned): map them in place
    sig, *_, name_len, extra_len = _LOCAL_HEADER.unpack_from(mm, info.header_offset)
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if sig != b"PK\x03\x04" or start + nbytes > len(mm):
        raise CheckpointError(f"{path}: storage {bounded_repr(name)} lies outside the file; it looks corrupt")
    view = memoryview(mm)[start:start + nbytes]
    crc = 0
    for i in range(0, nbytes, 1 << 24):
        crc = zlib.crc32(view[i:i + (1 << 24)], crc)
    if crc != info.CRC:
        raise CheckpointError(f"{path}: storage {bounded_repr(name)} fails its CRC check; the file is corrupt: "
                              "re-download it")
    return np.frombuffer(mm, st.dtype, count=st.numel, offset=start)


# ---------------------------------------------------------------------------------------------- legacy
def _read_torch_legacy(path: str) -> dict[str, np.ndarray]:
    """torch < 1.6 (or _use_new_zipfile_serialization=False): five pickles-and-data in a row.

    magic number | protocol version | sys_info | the state dict | list of storage keys, then for each
    key in that order: int64 element count + the raw elements.
    """
    mm = map_file(path)
    storages: dict[str, _Storage] = {}
    magic, pos = _unpickle(mm, 0, len(mm), path, storages)
    if magic != _LEGACY_MAGIC:
        raise CheckpointError(f"{path} is a pickle but not a torch checkpoint; minipegx reads state dicts "
                              "saved with torch.save")
    _, pos = _unpickle(mm, pos, len(mm), path, storages)  # protocol version
    sys_info, pos = _unpickle(mm, pos, len(mm), path, storages)
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
        raise CheckpointError(f"{path} was saved on a big-endian machine; re-save it as safetensors")
    obj, pos = _unpickle(mm, pos, len(mm), path, storages)
    keys, pos = _unpickle(mm, pos, len(mm), path, storages)
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise CheckpointError(f"{path} is truncated or corrupt (its storage list is not a list of names)")
    arrays = {}
    for key in keys:
        st = storages.get(key)
        if st is None or key in arrays or pos + 8 > len(mm):
            raise CheckpointError(f"{path} is truncated or corrupt (storage {bounded_repr(key)}); re-download it")
        (numel,) = struct.unpack_from("<q", mm, pos)
        pos += 8
        if numel != st.numel or pos + numel * st.dtype.itemsize > len(mm):
            raise CheckpointError(f"{path} is truncated or corrupt (storage {bounded_repr(key)}); re-download it")
        arrays[key] = np.frombuffer(mm, st.dtype, count=numel, offset=pos) if numel else np.empty(0, st.dtype)
        pos += numel * st.dtype.itemsize
    if set(arrays) != set(storages):
        raise CheckpointError(f"{path} is truncated or corrupt (a storage has no data); re-download it")
    return _as_state_dict(obj, arrays, path)


__all__ = ["read_torch", "SafeUnpickler"]
