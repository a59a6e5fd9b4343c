"""Weight-only quantization: int8 (one scale per output channel) and NF4 (4-bit, block-wise).

Every linear weight -- attention q/k/v/out projections and fc1/fc2 of every encoder and decoder layer --
is replaced by a small container of arrays; `layers.linear` dequantizes it on the fly (to float32, inside
the matmul; on CuPy to the compute dtype), so activations keep the compute dtype and no float copy of the
weights stays in memory.

* int8 (per output channel, symmetric): W[o] ~= q[o] * scale[o], scale = absmax(W[o]) / 127,
  q = round(W / scale) in [-127, 127]. Error per value at most scale[o] / 2. This is the row-wise absmax
  scheme of bitsandbytes' LLM.int8() weights (without its fp16 outlier decomposition of activations).
* nf4 (block-wise, as bitsandbytes' `quant_type="nf4"`): the tensor is flattened, cut into blocks of 64
  values, each block is divided by its absmax and each value replaced by the index of the nearest of the
  16 NormalFloat levels (QLoRA, Dettmers et al. 2023: quantiles of N(0, 1) scaled to [-1, 1], with an
  exact 0); two indices per byte, the first in the high nibble as bitsandbytes packs them. Dequantized:
  NF4[index] * absmax. 4 bits + a float32 absmax per 64 values = 4.5 bits per weight (no double
  quantization of the absmax, which would bring it to ~4.127).

Not quantized: the token embedding, which is also the tied LM head, and the global-token embedding,
biases and layer norms. bitsandbytes and transformers' integration leave embeddings and `lm_head` in full
precision too: the output layer's errors move the logits directly, and a row lookup gains nothing from
a matmul kernel. They stay in the compute dtype (so dtype="bfloat16" with quantize="nf4" halves them).

Saved form (written by `minipegx.checkpoint.save_quantized`): model.safetensors with, for each quantized
weight `<name>`, the tensors `<name>.qweight` (int8 [O, I] or packed uint8 [n/2]) and `<name>.scale`
(float32 [O]) or `<name>.absmax` (float32 [n/64]); quantization_config.json says the mode.
`from_pretrained` recognises such a directory.
This module holds the formats only (no file I/O).
Shape legend: O output features, I input features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import array_module, to_device, to_numpy
from .errors import ConfigError

MODES = ("int8", "nf4")
NF4_BLOCK = 64

# bitsandbytes' NF4 code book (functional.get_4bit_type("nf4")): index 7 is the exact zero.
NF4_CODE = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                     -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                     0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                     0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
_NF4_MIDPOINTS = (NF4_CODE[1:] + NF4_CODE[:-1]) / 2    # value v maps to searchsorted(midpoints, v)
_NF4_PAIRS = np.stack([NF4_CODE[np.arange(256) >> 4], NF4_CODE[np.arange(256) & 0x0F]], axis=1)  # [256, 2]

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass
class Int8Weight:
    """W [O, I] ~= q * scale[:, None]."""
    q: object          # [O, I] int8
    scale: object      # [O] float32

    @property
    def shape(self):
        """The weight's shape [O, I]."""
        return tuple(self.q.shape)

    @property
    def nbytes(self):
        """Bytes held: q [O, I] and scale [O]."""
        return int(self.q.nbytes + self.scale.nbytes)

    def dequantize(self, dtype=np.float32):
        """W [O, I] in dtype. NumPy: in float32, rounded once. On a GPU in dtype itself (float16 there: the
        codes are exact in it, the scale is rounded once more), so no float32 copy of the weight is made."""
        if array_module(self.q) is np:
            return (self.q.astype(np.float32) * self.scale[:, None]).astype(dtype, copy=False)   # [O, I]
        return self.q.astype(dtype) * self.scale.astype(dtype)[:, None]                           # [O, I]

    def tensors(self):
        """The arrays a saved folder stores: qweight [O, I] int8, scale [O] float32."""
        return {"qweight": self.q, "scale": self.scale}

    def to_device(self, xp):
        """The same container with its arrays [O, I] and [O] on xp's device."""
        return Int8Weight(to_device(self.q, xp), to_device(self.scale, xp))


@dataclass
class NF4Weight:
    """W [O, I] ~= ``NF4_CODE[index] * absmax[block]``, 64 consecutive values (of the flattened W) per block."""
    packed: object     # [n_padded / 2] uint8: two code indices per byte, the first in the high nibble
    absmax: object     # [n_padded / 64] float32
    shape: tuple       # the weight's own shape, [O, I]
    block_size: int = NF4_BLOCK

    @property
    def nbytes(self):
        """Bytes held: packed [O*I/2] and absmax [O*I/64]."""
        return int(self.packed.nbytes + self.absmax.nbytes)

    def indices(self):
        """The code index of every (padded) value: [O*I + padding] uint8 in [0, 16)."""
        xp = array_module(self.packed)
        return xp.stack([self.packed >> 4, self.packed & 0x0F], axis=-1).reshape(-1)

    def dequantize(self, dtype=np.float32):
        """W [O, I] in dtype. NumPy: in float32, rounded once. On a GPU in dtype itself (the code book, kept on
        the device once per dtype, and the absmax in float16 there), so no float32 copy of the weight is made."""
        xp = array_module(self.packed)
        work = np.float32 if xp is np else np.dtype(dtype)
        # One gather per byte: _NF4_PAIRS[byte] is the byte's two values (~3x faster than per nibble).
        blocks = xp.take(nf4_pairs(xp, work), self.packed, axis=0).reshape(-1, self.block_size)  # [n_blocks, 64]
        blocks *= (self.absmax if self.absmax.dtype == work else self.absmax.astype(work))[:, None]
        n = int(np.prod(self.shape))
        return blocks.reshape(-1)[:n].reshape(self.shape).astype(dtype, copy=False)

    def tensors(self):
        """The arrays a saved folder stores: qweight [O*I/2] uint8, absmax [O*I/64] float32."""
        return {"qweight": self.packed, "absmax": self.absmax}

    def to_device(self, xp):
        """The same container with its arrays [O*I/2] and [O*I/64] on xp's device."""
        return NF4Weight(to_device(self.packed, xp), to_device(self.absmax, xp), self.shape, self.block_size)


_DEVICE_PAIRS = {}   # (array module, dtype) -> _NF4_PAIRS on that device: uploaded once, not per call


def nf4_pairs(xp, dtype=np.float32):
    """The NF4 byte table [256, 2] (a byte's two values; the packed codes [O*I/2] index it) on module xp, in dtype, kept after the first use."""
    if xp is np and np.dtype(dtype) == np.float32:
        return _NF4_PAIRS
    key = (xp.__name__, id(xp), np.dtype(dtype).str)
    if key not in _DEVICE_PAIRS:
        _DEVICE_PAIRS[key] = to_device(_NF4_PAIRS, xp, np.dtype(dtype))
    return _DEVICE_PAIRS[key]


QUANTIZED = (Int8Weight, NF4Weight)


def is_quantized(w) -> bool:
    """True for an Int8Weight or NF4Weight container."""
    return isinstance(w, QUANTIZED)


def dequantize(w, dtype=np.float32):
    """A float array [O, I] from a quantized container (a plain array passes through, cast to dtype)."""
    return w.dequantize(dtype) if is_quantized(w) else w.astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------------- quantizers
def quantize_int8(w) -> Int8Weight:
    """Symmetric int8 with one scale per output channel (row): w [O, I] -> q [O, I], scale = absmax / 127 [O]."""
    w = to_numpy(w).astype(np.float32)                                  # [O, I]
    absmax = np.abs(w).max(axis=1)                                      # [O]
    scale = (absmax / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)          # an all-zero row stays zero
    q = np.clip(np.rint(w / safe[:, None]), -127, 127).astype(np.int8)
    return Int8Weight(q, scale)


def quantize_nf4(w, block_size=NF4_BLOCK) -> NF4Weight:
    """bitsandbytes-style NF4: absmax per block of `block_size` consecutive values, nearest code.
    w [O, I] -> packed [O*I/2] uint8 (padded to whole blocks), absmax [O*I/64]."""
    w = to_numpy(w).astype(np.float32)
    flat = w.reshape(-1)
    pad = (-flat.size) % block_size
    if pad % 2:  # pragma: no cover - block_size is even
        raise ConfigError("nf4 block_size must be even (two values per byte)")
    blocks = np.concatenate([flat, np.zeros(pad, np.float32)]).reshape(-1, block_size)  # [n_blocks, 64]
    absmax = np.abs(blocks).max(axis=1).astype(np.float32)                               # [n_blocks]
    safe = np.where(absmax > 0, absmax, 1.0).astype(np.float32)
    idx = np.searchsorted(_NF4_MIDPOINTS, (blocks / safe[:, None]).reshape(-1)).astype(np.uint8)
    packed = (idx[0::2] << 4) | idx[1::2]
    return NF4Weight(packed.astype(np.uint8), absmax, tuple(w.shape), block_size)


QUANTIZERS = {"int8": quantize_int8, "nf4": quantize_nf4}


def check_mode(mode):
    """The mode, if it is 'int8' or 'nf4'; ConfigError otherwise."""
    if mode not in MODES:
        raise ConfigError(f"unknown quantize={mode!r}: choose None (no quantization), 'int8' or 'nf4'")
    return mode


def linear_weight_names(params):
    """(parent dict, key) of every linear weight in a params tree: attention projections and fc1/fc2."""
    out = []
    model = params["model"]
    for part in ("encoder", "decoder"):
        for layer in model[part]["layers"]:
            for attn in ("self_attn", "encoder_attn"):
                if attn in layer:
                    out += [(layer[attn][n], "weight") for n in LINEAR_NAMES[:4]]
            out += [(layer[n], "weight") for n in ("fc1", "fc2")]
    return out


def quantize_params(params, mode):
    """A copy of the params tree with every linear weight [O, I] quantized (embeddings, LM head, norms, biases
    unchanged). The tree is copied dict by dict, so the caller's tree is left as it was."""
    check_mode(mode)
    params = _copy_tree(params)
    for parent, key in linear_weight_names(params):
        if not is_quantized(parent[key]):
            parent[key] = QUANTIZERS[mode](parent[key])
    return params


def _copy_tree(tree):
    if isinstance(tree, dict):
        return {k: _copy_tree(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_copy_tree(v) for v in tree]
    return tree


def weight_bytes(params) -> int:
    """Bytes held by every parameter (quantized containers count their packed arrays and scales)."""
    from .tree import flatten_params

    return sum(int(v.nbytes) for v in flatten_params(params).values())


def quantization_mode(params):
    """'int8', 'nf4' or None, from the containers in a params tree."""
    kinds = {type(parent[key]) for parent, key in linear_weight_names(params)}
    return "int8" if Int8Weight in kinds else "nf4" if NF4Weight in kinds else None


# ---------------------------------------------------------------------------------------------- from tensors
# The files (save_quantized, load_quantized, quantization_config.json) are in checkpoint/quantized.py; it
# rebuilds containers from the tensors it read with this function.
def _container(mode, parts, shape):
    n = int(np.prod(shape))
    q = parts.get("qweight")
    if mode == "int8" and set(parts) == {"qweight", "scale"} and q.dtype == np.int8 and tuple(q.shape) == shape \
            and tuple(parts["scale"].shape) == shape[:1] and np.isfinite(parts["scale"]).all():
        return Int8Weight(q, parts["scale"].astype(np.float32))
    n_blocks = -(-n // NF4_BLOCK)
    if mode == "nf4" and set(parts) == {"qweight", "absmax"} and q.dtype == np.uint8 \
            and tuple(q.shape) == (n_blocks * NF4_BLOCK // 2,) and tuple(parts["absmax"].shape) == (n_blocks,) \
            and np.isfinite(parts["absmax"]).all():
        return NF4Weight(q, parts["absmax"].astype(np.float32), tuple(shape))
    return None
