"""Real checkpoint directories of a tiny PEGASUS-X, and small tools to damage them, for the hardening tests.

Every format is written by torch/transformers themselves (as in test_checkpoint.py); the tools then
rewrite one part: the safetensors header, a zip member, a pickle, a JSON file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import zipfile

import numpy as np

import minipegx

TINY = dict(vocab_size=103 + 50, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_global_tokens=2, block_size=4,
            max_position_embeddings=64)
TOKENIZER_FILES = ("spiece.model", "tokenizer_config.json")
SPECIAL_TOKENS_MAP = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask_2>"}


def tiny_model(seed=0):
    import torch
    import transformers

    torch.manual_seed(seed)
    return transformers.PegasusXForConditionalGeneration(transformers.PegasusXConfig(**TINY)).eval()


def add_tokenizer(directory) -> None:
    for name in TOKENIZER_FILES:
        shutil.copyfile(os.path.join(minipegx.demo_model_path(), name), os.path.join(directory, name))
    with open(os.path.join(directory, "special_tokens_map.json"), "w") as f:
        json.dump(SPECIAL_TOKENS_MAP, f)


def write_checkpoints(root, model) -> dict:
    """One directory per format the loader reads, each a complete checkpoint: {format: path}."""
    import torch

    from minipegx.checkpoint import save_quantized

    root = os.fspath(root)
    dirs = {f: os.path.join(root, f) for f in ("safetensors", "sharded", "bin_zip", "bin_legacy", "quantized")}
    model.save_pretrained(dirs["safetensors"])
    model.save_pretrained(dirs["sharded"], max_shard_size="20KB")
    for fmt, new_zip in (("bin_zip", True), ("bin_legacy", False)):
        os.makedirs(dirs[fmt])
        model.config.to_json_file(os.path.join(dirs[fmt], "config.json"))
        torch.save(model.state_dict(), os.path.join(dirs[fmt], "pytorch_model.bin"),
                   _use_new_zipfile_serialization=new_zip)
    save_quantized(minipegx.from_pretrained(dirs["safetensors"], quantize="int8"), dirs["quantized"])
    for d in dirs.values():
        add_tokenizer(d)
    return dirs


def copy_checkpoint(src, dst) -> str:
    shutil.copytree(src, dst)
    return os.fspath(dst)


# ---------------------------------------------------------------------------------------------- safetensors
def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def join_safetensors(header, body: bytes, raw_header: bytes | None = None) -> bytes:
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


# ---------------------------------------------------------------------------------------------- torch zip
def zip_members(path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(path) as z:
        return [(info, z.read(info)) for info in z.infolist()]


def write_zip(path, members, compress=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compress) as z:
        for info, data in members:
            z.writestr(info.filename if isinstance(info, zipfile.ZipInfo) else info, data)


def torch_zip(path, data_pkl: bytes, storages: dict | None = None) -> None:
    """A zip laid out like torch.save's: archive/data.pkl and archive/data/<key> per storage."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data)


class Tensor:
    """Pickles as torch's _rebuild_tensor_v2(storage, offset, size, stride, ...) with any storage id."""

    def __init__(self, pid, size=(4,), stride=(1,), offset=0):
        self.pid, self.size, self.stride, self.offset = pid, size, stride, offset


class _Storage:
    def __init__(self, pid):
        self.pid = pid


def torch_pickle(state: dict) -> bytes:
    """pickle bytes of a state dict of Tensor()s, written the way torch.save writes them (protocol 2)."""
    import collections

    import torch

    class Rebuild:
        def __init__(self, t):
            self.t = t

        def __reduce__(self):
            t = self.t
            return torch._utils._rebuild_tensor_v2, (_Storage(t.pid), t.offset, t.size, t.stride, False,
                                                     collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, _Storage) else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(collections.OrderedDict(
        (k, Rebuild(v) if isinstance(v, Tensor) else v) for k, v in state.items()))
    return buf.getvalue()


def float_storage(key="0", numel=4):
    import torch

    return ("storage", torch.FloatStorage, key, "cpu", numel)


def self_sharing_list(levels: int):
    """[x, x] with x = [y, y] ... `levels` deep: 2 * levels objects, 2^levels leaves when expanded."""
    x: list = []
    for _ in range(levels):
        x = [x, x]
    return x


def self_sharing_tuple(levels: int):
    """(x, x) nested `levels` deep: hash() of it takes 2^levels steps."""
    x: tuple = ()
    for _ in range(levels):
        x = (x, x)
    return x


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def rewrite_json(path, change) -> None:
    """Apply change(obj) -> obj to the JSON in a file."""
    with open(path) as f:
        obj = json.load(f)
    with open(path, "w") as f:
        json.dump(change(obj), f)


def zeros(nbytes: int) -> bytes:
    return np.zeros(nbytes, np.uint8).tobytes()
