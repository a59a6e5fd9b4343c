"""Checkpoint files -> a nested tree of arrays with the Hugging Face names.

    params = load_params("pegasus-x-base/", config)
    params["model"]["encoder"]["layers"][3]["self_attn"]["q_proj"]["weight"]     # [M, M]

Three steps, each its own function:

1. ``read_state_dict`` reads the flat ``{name: array}`` dict a checkpoint stores, in whichever format
   the Hub uses: ``model.safetensors``, sharded safetensors (``model.safetensors.index.json``), or a
   pickled ``pytorch_model.bin`` (sharded or not). Arrays keep their stored dtype (bf16 through
   ml_dtypes) and are read-only views of a memory map of the file, so a 2 GB checkpoint is not read
   into RAM twice. The pickle reader never runs code from the file: it rebuilds tensors itself and
   refuses every global outside a short allow-list (a pickle can otherwise call any function).
2. ``load_params`` puts the names in canonical form (the bare ``PegasusXModel`` has no ``model.``
   prefix; the tied word embedding can be stored under any of four names), checks them against
   ``expected_shapes(config)``, rejects NaN/inf, optionally casts, and nests the names.
3. ``save_params`` writes a tree (or flat dict) back to ``model.safetensors`` that transformers loads.

The tied embedding: ``model.shared.weight`` is the token embedding of the encoder and the decoder and,
when ``config.tie_word_embeddings`` (every released checkpoint), the output projection too. With
untied embeddings transformers 5 gives the encoder, the decoder and the LM head separate matrices;
any that differs from ``shared`` is kept under its own name (``params["lm_head"]["weight"]``,
``params["model"]["encoder"]["embed_tokens"]["weight"]``), so the model reads
``p.get("embed_tokens", params["model"]["shared"])``.

No torch, no transformers: NumPy, safetensors and ml_dtypes only.
"""

from __future__ import annotations

import collections
import json
import mmap
import os
import pickle
import struct
import zipfile
from typing import NamedTuple

import numpy as np

from .backend import resolve_dtype, to_numpy
from .config import PegasusXConfig
from .errors import CheckpointError, CheckpointNotFoundError, MiniPegxError, UnsafeCheckpointError

# Weight files looked for in a checkpoint directory, most preferred first.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")

# The four names the tied word embedding has been saved under (old saves: all four, new: one).
SHARED = "model.shared.weight"
EMBED_ALIASES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight")
LM_HEAD = "lm_head.weight"


def _bfloat16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def _safetensors_dtypes() -> dict:
    """safetensors dtype tags -> little-endian NumPy dtypes (bf16 and fp8 via ml_dtypes)."""
    import ml_dtypes

    return {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": _bfloat16(),
            "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
            "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
            "U8": np.dtype("u1"), "BOOL": np.dtype("?")}


def _map_file(path: str) -> mmap.mmap:
    """A read-only memory map of the whole file (arrays made from it are read-only views, not copies)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise CheckpointError(f"{path} is empty: it looks truncated or corrupt; re-download it")
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


# ====================================================================== reading: dispatch
def read_state_dict(path) -> dict[str, np.ndarray]:
    """The flat {name: array} dict stored at ``path`` (a checkpoint directory or one weights file)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"no checkpoint at {path}: the path does not exist")
    if os.path.isdir(path):
        for name in WEIGHT_FILES:
            if os.path.isfile(os.path.join(path, name)):
                return read_state_dict(os.path.join(path, name))
        raise CheckpointNotFoundError(f"no weights in checkpoint directory {path}: looked for "
                                      f"{', '.join(WEIGHT_FILES)}")
    if path.endswith(".index.json"):
        return _read_sharded(path)
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    return _read_torch(path)


def _read_sharded(index_path: str) -> dict[str, np.ndarray]:
    """Merge the shards an index's weight_map names (every name must be found in its shard)."""
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path} is not a valid shard index ({e}); re-download it") from e
    folder = os.path.dirname(index_path)
    out: dict[str, np.ndarray] = {}
    for shard in dict.fromkeys(weight_map.values()):  # unique, in order
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            raise CheckpointNotFoundError(f"shard {shard} named by {index_path} does not exist; the download "
                                          "is incomplete: re-download the checkpoint")
        for name, x in read_state_dict(shard_path).items():
            if name in out:
                raise CheckpointError(f"tensor {name} is stored in two shards of {index_path}; re-download it")
            out[name] = x
    lost = [n for n in weight_map if n not in out]
    if lost:
        raise CheckpointError(f"{index_path} lists {len(lost)} tensor(s) its shards do not hold, e.g. "
                              f"{lost[0]} (in {weight_map[lost[0]]}); the shard looks truncated: re-download it")
    return out


# ====================================================================== reading: safetensors
def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Parse the safetensors layout ourselves so every tensor is a view of one mmap of the file.

    Layout: 8-byte little-endian header length N | N bytes of JSON header | data. The header maps
    each name to {"dtype", "shape", "data_offsets": [begin, end]}, offsets relative to the data start.
    (safetensors' own numpy loader copies each tensor and cannot produce bf16.)
    """
    def corrupt(detail):
        return CheckpointError(f"{path} looks truncated or corrupt ({detail}); re-download it")

    size = os.path.getsize(path)
    if size < 8:
        raise corrupt(f"{size} bytes, shorter than the 8-byte header length")
    mm = _map_file(path)
    (n,) = struct.unpack("<Q", mm[:8])
    if n > size - 8 or n > 100_000_000:
        raise corrupt(f"header length {n} but the file has {size} bytes")
    try:
        header = json.loads(mm[8:8 + n].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise corrupt(f"invalid JSON header: {e}") from None
    header.pop("__metadata__", None)
    dtypes = _safetensors_dtypes()
    data_start, data_len = 8 + n, size - 8 - n
    out = {}
    for name, info in header.items():
        if not isinstance(info, dict) or "dtype" not in info:
            raise corrupt(f"tensor {name} has an incomplete header entry")
        if info["dtype"] not in dtypes:
            raise CheckpointError(f"{path}: tensor {name} has dtype {info['dtype']}, which minipegx cannot read "
                                  f"(it reads {', '.join(dtypes)})")
        try:
            dtype = dtypes[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise corrupt(f"tensor {name} has a malformed header entry") from None
        count = int(np.prod(shape, dtype=np.int64))
        if min(shape, default=0) < 0 or not 0 <= begin <= end or end - begin != count * dtype.itemsize:
            raise corrupt(f"tensor {name}: data offsets [{begin}, {end}] do not fit shape {list(shape)} "
                          f"of {info['dtype']}")
        if end > data_len:
            raise corrupt(f"tensor {name} ends at byte {data_start + end}, beyond the file end ({size} bytes)")
        if count == 0:
            out[name] = np.empty(shape, dtype)
        else:
            out[name] = np.frombuffer(mm, dtype, count=count, offset=data_start + begin).reshape(shape)
    return out


# ====================================================================== reading: torch pickles
# torch.save writes a pickle whose only globals, for a state dict of fp32/fp16/bf16 tensors, are
# these (checked with pickletools on torch 2.13); a storage is a persistent id pointing at raw bytes.
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
        self.storage_types = {n: _StorageType(np.dtype(_bfloat16() if d == "bfloat16" else d))
                              for n, d in _STORAGE_DTYPES.items()}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _Allowed(self._rebuild_tensor_v2)
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _Allowed(self._rebuild_parameter)
        if module == "torch" and name in self.storage_types:
            return self.storage_types[name]
        raise UnsafeCheckpointError(
            f"{self.source} asks for the Python global {module}.{name}, which a state dict of tensors never "
            "needs; minipegx refuses to load it rather than run code from the file. If you trust the file, "
            "convert it to safetensors (transformers: model.save_pretrained(dir)) and load that")

    def persistent_load(self, pid):
        # zip format: ('storage', type, key, location, numel); legacy adds view_metadata (None)
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0 and (len(pid) == 5 or pid[5] is None)):
            raise CheckpointError(f"{self.source} has a storage reference minipegx does not understand "
                                  f"({pid!r:.120}); re-save it with a current torch or as safetensors")
        _, storage_type, key, _location, numel = pid[:5]
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, numel)
        return self.storages[key]

    def _rebuild_tensor_v2(self, storage, offset, size, stride, *_requires_grad_hooks_metadata):
        if not (isinstance(storage, _Storage) and _is_int_tuple(size) and _is_int_tuple(stride)
                and len(size) == len(stride) and isinstance(offset, int)):
            raise CheckpointError(f"{self.source} describes a tensor minipegx cannot rebuild; re-save it")
        return _PendingTensor(storage, offset, tuple(size), tuple(stride))

    def _rebuild_parameter(self, data, *_requires_grad_hooks):
        return data


def _is_int_tuple(t) -> bool:
    return isinstance(t, tuple) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in t)


def _materialize(t: _PendingTensor, arrays: dict, source: str) -> np.ndarray:
    """The array a _PendingTensor describes: a reshape when contiguous, else a checked as_strided view."""
    flat, size, stride = arrays[t.storage.key], t.size, t.stride  # flat: [numel] of the storage
    if 0 in size:
        return np.empty(size, flat.dtype)
    last = t.offset + sum((n - 1) * s for n, s in zip(size, stride))  # index of the furthest element
    if t.offset < 0 or last >= flat.size:
        raise CheckpointError(f"{source} describes a tensor reaching past the end of its storage; it is corrupt")
    contiguous = tuple(int(np.prod(size[i + 1:], dtype=np.int64)) for i in range(len(size)))
    count = int(np.prod(size, dtype=np.int64))
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous)):
        return flat[t.offset:t.offset + count].reshape(size)
    return np.lib.stride_tricks.as_strided(flat[t.offset:], shape=size,
                                           strides=[s * flat.itemsize for s in stride], writeable=False)


def _unpickle_state_dict(file, source: str, storages: dict):
    """Run SafeUnpickler; turn whatever a corrupt pickle raises into a CheckpointError."""
    try:
        return SafeUnpickler(file, source, storages).load()
    except MiniPegxError:
        raise
    except Exception as e:  # a corrupt pickle can raise almost anything (EOFError, ValueError, ...)
        raise CheckpointError(f"{source} is not a readable torch pickle ({type(e).__name__}: {e}); "
                              "it looks truncated or corrupt: re-download it") from e


def _as_state_dict(obj, arrays: dict, source: str) -> dict[str, np.ndarray]:
    if not (isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, _PendingTensor)
                                          for k, v in obj.items())):
        raise CheckpointError(f"{source} does not hold a state dict (a mapping of names to tensors), "
                              f"but a {type(obj).__name__}")
    return {k: _materialize(v, arrays, source) for k, v in obj.items()}


def _read_torch(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        return _read_torch_zip(path)
    if head[:1] == b"\x80":
        return _read_torch_legacy(path)
    raise CheckpointError(f"{path} is neither safetensors, a torch zip archive nor a torch pickle; "
                          "it looks corrupt: re-download it")


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip entry's local header: 30 bytes, then name and extra


def _read_torch_zip(path: str) -> dict[str, np.ndarray]:
    """torch >= 1.6: a zip of <root>/data.pkl plus one uncompressed entry <root>/data/<key> per storage."""
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path} is not a valid zip archive ({e}); it looks truncated: re-download it") from e
    with z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise CheckpointError(f"{path} is a zip archive without <root>/data.pkl, not a torch checkpoint")
        root = pkl[0][: -len("data.pkl")]
        if root + "byteorder" in z.namelist() and z.read(root + "byteorder").strip() != b"little":
            raise CheckpointError(f"{path} was saved on a big-endian machine; re-save it as safetensors")
        storages: dict[str, _Storage] = {}
        with z.open(pkl[0]) as f:
            obj = _unpickle_state_dict(f, path, storages)
        mm = _map_file(path)
        arrays = {}
        for key, st in storages.items():
            name = f"{root}data/{key}"
            try:
                info = z.getinfo(name)
            except KeyError:
                raise CheckpointError(f"{path} lacks the storage entry {name}; re-download it") from None
            nbytes = st.numel * st.dtype.itemsize
            if info.file_size < nbytes:
                raise CheckpointError(f"{path}: storage {name} holds {info.file_size} bytes, {nbytes} expected; "
                                      "it looks truncated: re-download it")
            if nbytes == 0:
                arrays[key] = np.empty(0, st.dtype)
            elif info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                # torch stores entries uncompressed (64-byte aligned): map them in place
                sig, *_, name_len, extra_len = _LOCAL_HEADER.unpack_from(mm, info.header_offset)
                start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
                if sig != b"PK\x03\x04" or start + nbytes > len(mm):
                    raise CheckpointError(f"{path}: storage {name} lies outside the file; it looks corrupt")
                arrays[key] = np.frombuffer(mm, st.dtype, count=st.numel, offset=start)
            else:
                arrays[key] = np.frombuffer(z.read(name), st.dtype, count=st.numel)
    return _as_state_dict(obj, arrays, path)


def _read_torch_legacy(path: str) -> dict[str, np.ndarray]:
    """torch < 1.6 (or _use_new_zipfile_serialization=False): five pickles-and-data in a row.

    magic number | protocol version | sys_info | the state dict | list of storage keys, then for each
    key in that order: int64 element count + the raw elements.
    """
    mm = _map_file(path)
    with open(path, "rb") as f:
        storages: dict[str, _Storage] = {}
        magic = _unpickle_state_dict(f, path, storages)
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(f"{path} is a pickle but not a torch checkpoint; minipegx reads state dicts "
                                  "saved with torch.save")
        _unpickle_state_dict(f, path, storages)  # protocol version
        sys_info = _unpickle_state_dict(f, path, storages)
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
            raise CheckpointError(f"{path} was saved on a big-endian machine; re-save it as safetensors")
        obj = _unpickle_state_dict(f, path, storages)
        keys = _unpickle_state_dict(f, path, storages)
        pos = f.tell()
    arrays = {}
    for key in keys if isinstance(keys, list) else []:
        st = storages.get(key)
        if st is None or pos + 8 > len(mm):
            raise CheckpointError(f"{path} is truncated or corrupt (storage {key!r}); re-download it")
        (numel,) = struct.unpack_from("<q", mm, pos)
        pos += 8
        if numel != st.numel or pos + numel * st.dtype.itemsize > len(mm):
            raise CheckpointError(f"{path} is truncated or corrupt (storage {key!r}); re-download it")
        arrays[key] = np.frombuffer(mm, st.dtype, count=numel, offset=pos) if numel else np.empty(0, st.dtype)
        pos += numel * st.dtype.itemsize
    if set(arrays) != set(storages):
        raise CheckpointError(f"{path} is truncated or corrupt (a storage has no data); re-download it")
    return _as_state_dict(obj, arrays, path)


# ====================================================================== what a checkpoint holds
def expected_shapes(config) -> dict[str, tuple]:
    """Every tensor of a PegasusXForConditionalGeneration checkpoint, canonical name -> shape.

    No positional embeddings (they are sinusoidal), no biases in attention, no final_logits_bias.
    The tied token embedding appears once, as model.shared.weight; lm_head.weight only when untied.
    """
    M, V, G = config.d_model, config.vocab_size, config.num_global_tokens
    shapes = {SHARED: (V, M), "model.encoder.embed_global.weight": (G, M)}

    def proj(prefix):
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{prefix}.{p}.weight"] = (M, M)

    def norm(prefix):
        shapes[f"{prefix}.weight"] = shapes[f"{prefix}.bias"] = (M,)

    def ffn(prefix, F):
        shapes.update({f"{prefix}.fc1.weight": (F, M), f"{prefix}.fc1.bias": (F,),
                       f"{prefix}.fc2.weight": (M, F), f"{prefix}.fc2.bias": (M,)})

    for i in range(config.encoder_layers):
        p = f"model.encoder.layers.{i}"
        proj(f"{p}.self_attn")
        norm(f"{p}.self_attn_layer_norm")
        norm(f"{p}.global_self_attn_layer_norm")
        ffn(p, config.encoder_ffn_dim)
        norm(f"{p}.final_layer_norm")
    norm("model.encoder.layer_norm")
    for i in range(config.decoder_layers):
        p = f"model.decoder.layers.{i}"
        proj(f"{p}.self_attn")
        norm(f"{p}.self_attn_layer_norm")
        proj(f"{p}.encoder_attn")
        norm(f"{p}.encoder_attn_layer_norm")
        ffn(p, config.decoder_ffn_dim)
        norm(f"{p}.final_layer_norm")
    norm("model.decoder.layer_norm")
    if not config.tie_word_embeddings:
        shapes[LM_HEAD] = (V, M)
    return shapes


# ====================================================================== loading
def load_params(path, config=None, dtype=None) -> dict:
    """Read, canonicalize, validate (names, shapes, finite values), cast, and nest a checkpoint.

    config: a minipegx PegasusXConfig (None: read config.json beside the weights).
    dtype: None keeps the stored dtype (arrays stay read-only views of the file); else a float dtype
    ('float32', 'float16', 'bfloat16' or a NumPy dtype) to cast to, one copy per tensor.
    """
    if config is None:
        path_s = os.fspath(path)
        config = PegasusXConfig.from_json_file(path_s if os.path.isdir(path_s) else os.path.dirname(path_s))
    target = _float_dtype(dtype) if dtype is not None else None
    flat = canonicalize(read_state_dict(path), config, source=os.fspath(path))
    validate(flat, config, source=os.fspath(path))
    order = {name: i for i, name in enumerate(expected_shapes(config))}
    flat = {k: flat[k] for k in sorted(flat, key=lambda k: order.get(k, len(order)))}  # the model's order
    if target is not None:
        flat = {k: v if v.dtype == target else v.astype(target) for k, v in flat.items()}
    return unflatten_params(flat)


def _float_dtype(dtype) -> np.dtype:
    """'float32' | 'float16' | 'bfloat16' | 'float64', as a name or a NumPy dtype."""
    try:
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:
        name = repr(dtype)
    if name in ("float64", "fp64", "double"):
        return np.dtype("<f8")
    return resolve_dtype(name)  # BackendError for anything else


def canonicalize(flat: dict, config, source: str = "checkpoint") -> dict:
    """Add the model. prefix of a bare PegasusXModel and fold the tied embedding names into one."""
    flat = {(f"model.{k}" if k.split(".", 1)[0] in ("shared", "encoder", "decoder") else k): v
            for k, v in flat.items()}
    names = (SHARED, *EMBED_ALIASES) + ((LM_HEAD,) if config.tie_word_embeddings else ())
    present = [n for n in names if n in flat]
    if not present:
        return flat  # validate() reports model.shared.weight missing
    shared = flat[present[0]]
    for n in present[1:]:
        x = flat.pop(n)
        if _same_values(shared, x):
            continue
        if config.tie_word_embeddings:
            raise CheckpointError(
                f"{source}: {n} differs from {present[0]}, but config.tie_word_embeddings is true, so they "
                "must be one matrix; if this checkpoint really has separate embeddings, set "
                "\"tie_word_embeddings\": false in config.json")
        flat[n] = x  # untied (transformers 5 unties the encoder and decoder embeddings too): keep it
    flat.pop(present[0])
    return {SHARED: shared, **flat}


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Cheap equality for (possibly 400 MB) embeddings: same memory, or equal values (sampled rows if big)."""
    if a.shape != b.shape:
        return False
    if a.dtype == b.dtype and a.strides == b.strides and \
            a.__array_interface__["data"][0] == b.__array_interface__["data"][0]:
        return True
    if a.size <= 1 << 22 or a.ndim == 0:
        return bool(np.array_equal(a, b))
    rows = np.unique(np.linspace(0, a.shape[0] - 1, 64).astype(np.int64))
    return bool(np.array_equal(a[rows], b[rows]))


def validate(flat: dict, config, source: str = "checkpoint") -> None:
    """Every expected tensor present with its shape, nothing unexpected, floating dtype, all finite."""
    expected = expected_shapes(config)
    optional = {} if config.tie_word_embeddings else {n: expected[SHARED] for n in EMBED_ALIASES}
    problems = []
    for name, shape in expected.items():
        if name not in flat:
            problems.append(f"missing {name}: expected shape {list(shape)}")
    for name, x in flat.items():
        shape = expected.get(name, optional.get(name))
        if shape is None:
            problems.append(f"unexpected {name}: shape {list(x.shape)}")
        elif tuple(x.shape) != shape:
            problems.append(f"{name}: expected shape {list(shape)}, found {list(x.shape)}")
        elif not (x.dtype.kind == "f" or x.dtype == _bfloat16()):
            problems.append(f"{name}: dtype {x.dtype} is not a floating dtype")
    if problems:
        raise CheckpointError(f"{source} does not fit the config ({len(problems)} problem(s)):\n  "
                              + "\n  ".join(problems[:10])
                              + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
                              + "\n" + _mismatch_hint(flat, config))
    bad = [f"{name} ({_count_nonfinite(x)} of {x.size} values)" for name, x in flat.items() if not _all_finite(x)]
    if bad:
        raise CheckpointError(f"{source} holds NaN or inf in {len(bad)} tensor(s): " + ", ".join(bad[:10])
                              + "; the checkpoint is corrupt or was saved from a diverged run: re-download it")


def _mismatch_hint(flat: dict, config) -> str:
    """A guess at why names or shapes do not fit: layer counts, widths, or another model type."""
    hints = []
    for part, want in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        found = {int(k.split(".")[3]) for k in flat
                 if k.startswith(f"model.{part}.layers.") and k.split(".")[3].isdigit()}
        if found and max(found) + 1 != want:
            hints.append(f"the checkpoint has {max(found) + 1} {part} layers, config.{part}_layers is {want}")
    if SHARED in flat and flat[SHARED].ndim == 2 and flat[SHARED].shape != (config.vocab_size, config.d_model):
        hints.append(f"its embedding is {list(flat[SHARED].shape)}, config says vocab_size={config.vocab_size}, "
                     f"d_model={config.d_model}")
    if any("embed_positions" in k or "final_logits_bias" in k for k in flat):
        hints.append("it has learned positions or final_logits_bias: it looks like a PEGASUS (model_type "
                     "'pegasus') checkpoint, not PEGASUS-X")
    return "hint: " + ("; ".join(hints) if hints else "is config.json the one that came with these weights?")


def _all_finite(x: np.ndarray, chunk: int = 1 << 22) -> bool:
    """np.isfinite over chunks, so a 400 MB tensor never needs a 100 MB boolean temporary."""
    flat = x.reshape(-1)
    return all(np.isfinite(flat[i:i + chunk]).all() for i in range(0, flat.size, chunk))


def _count_nonfinite(x: np.ndarray) -> int:
    return int(x.size - np.count_nonzero(np.isfinite(x)))


# ====================================================================== trees <-> flat names
def unflatten_params(flat: dict) -> dict:
    """{"model.encoder.layers.3.fc1.weight": x} -> params["model"]["encoder"]["layers"][3]["fc1"]["weight"]."""
    tree: dict = {}
    for name, x in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = x

    def lists(node):
        if not isinstance(node, dict):
            return node
        node = {k: lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node) and sorted(map(int, node)) == list(range(len(node))):
            return [node[str(i)] for i in range(len(node))]
        return node

    return lists(tree)


def flatten_params(tree, prefix: str = "") -> dict:
    """The inverse of unflatten_params (a flat dict passes through unchanged)."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out = {}
    for k, v in items:
        out.update(flatten_params(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


# ====================================================================== saving
def save_params(params_or_flat, path, metadata: dict | None = None) -> str:
    """Write a params tree (or flat dict) as model.safetensors with canonical names; returns the file.

    ``path`` is a directory (created if needed) or a file name ending in .safetensors. The metadata
    says format "pt", so transformers' from_pretrained accepts the file.
    """
    from safetensors.numpy import save_file

    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        os.makedirs(path, exist_ok=True)
        path = os.path.join(path, "model.safetensors")
    flat = {k: np.ascontiguousarray(to_numpy(v)) for k, v in flatten_params(params_or_flat).items()}
    tmp = path + ".tmp"
    save_file(flat, tmp, metadata={"format": "pt", **(metadata or {})})
    os.replace(tmp, path)  # never leave a half-written model.safetensors behind
    return path


__all__ = ["read_state_dict", "expected_shapes", "load_params", "canonicalize", "validate", "save_params",
           "flatten_params", "unflatten_params", "SafeUnpickler", "WEIGHT_FILES"]
