"""Argument checks at minipegx's boundary: everything a caller hands the model call, `generate` or
`summarize` is checked here, before any work, and refused with minipegx's own errors naming the
argument and the fix. The layer functions behind them stay free of checks that hide the math.

Rules (one per class of mistake, not one per case):
- a count is an int (not a bool, not a float), within a stated range;
- a real number is an int or float, finite (NaN and inf are refused everywhere), within its range;
- a flag is a bool (the string "false" is not a flag);
- an array has the rank, the shape (against the config and the other arguments), the dtype kind and,
  for floating arrays, finite values the model needs; token ids lie in [0, vocab_size).

Shape legend: B inputs, R decoder rows per input, S decoder steps, P cached steps, T encoder tokens,
H heads, D head dim, M d_model.
"""

from __future__ import annotations

import math
import numbers
import warnings
import weakref

import numpy as np

from . import backend as B_
from .errors import InputError, LongInputWarning, MiniPegxWarning


# ---------------------------------------------------------------------------------------------- scalars
def as_int(name, v, lo, hi=None, error=InputError):
    """v as an int in [lo, hi] (hi None: no upper bound); bools and floats are refused."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise error(f"{name} must be an integer >= {lo}, got {short(v)}")
    if int(v) < lo or (hi is not None and int(v) > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise error(f"{name} must be {bound}, got {int(v)}")
    return int(v)


def as_real(name, v, ok=lambda x: True, rule="a finite number", error=InputError):
    """v as a finite float with ok(v); bools, NaN and inf are refused."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or not ok(v):
        raise error(f"{name} must be {rule}, got {short(v)}")
    return float(v)


def as_flag(name, v, error=InputError):
    """v as a bool: True/False (or a NumPy bool); strings such as "false" and numbers are refused."""
    if not isinstance(v, bool) and type(v).__name__ != "bool_":
        raise error(f"{name} must be True or False, got {short(v)}")
    return bool(v)


def short(v, limit=80):
    """repr(v), cut to `limit` characters (messages never format an untrusted object unbounded)."""
    if isinstance(v, (bool, int, float, str, type(None))):
        text = repr(v) if not isinstance(v, int) or abs(v) < 10 ** 30 else f"an integer of {v.bit_length()} bits"
    else:
        text = f"a {type(v).__name__}"
    return text if len(text) <= limit else text[:limit] + "..."


def check_model(model):
    """A loaded model (what from_pretrained returns), before anything reads from it."""
    if not all(hasattr(model, a) for a in ("config", "params", "generation_config", "encode", "xp")):
        raise InputError(f"model must be a loaded PegasusX (minipegx.from_pretrained(...)), got {short(model)}")


# ---------------------------------------------------------------------------------------------- arrays
def as_array(x, name, items="numbers"):
    """A list, tuple or array -> an array (NumPy for lists); InputError for anything else."""
    if isinstance(x, (list, tuple)):
        try:
            x = B_.to_numpy(x)
        except (ValueError, TypeError) as e:
            raise InputError(f"{name} rows have different lengths or mixed types; pad them (the tokenizer's "
                             "padding=True) and pass an attention_mask") from e
    if not hasattr(x, "dtype") or not hasattr(x, "ndim") or not hasattr(x, "shape"):
        raise InputError(f"{name} must be a NumPy/CuPy array or a list of {items}, got {type(x).__name__}")
    return x


def as_ids(model, ids, name):
    """Lists or arrays of token ids -> an int64 [rows, length] array on the model's backend, checked on the way:
    integers, rank 1 or 2, a non-empty batch, every id in [0, vocab_size) (CuPy would wrap bad ids
    silently)."""
    ids = as_array(ids, name, "token ids")
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2:
        raise InputError(f"{name} must have shape [batch, length], got shape {tuple(ids.shape)}")
    if ids.shape[0] == 0:
        raise InputError(f"{name} has a batch of zero sequences; give at least one")
    if ids.shape[1] == 0:
        raise InputError(f"{name} has sequences of length zero; every input needs at least one token")
    if ids.dtype.kind not in "iu":
        raise InputError(f"{name} must hold integer token ids, got dtype {ids.dtype}; "
                         "cast with .astype('int64') if they are whole numbers")
    lo, hi = (int(v) for v in B_.to_numpy(_stack(ids.min(), ids.max())))  # one transfer on a GPU
    V = model.config.vocab_size
    if lo < 0 or hi >= V:
        bad = lo if lo < 0 else hi
        raise InputError(f"{name} holds id {bad}, outside the vocabulary [0, {V}); "
                         "was it made by this checkpoint's tokenizer?")
    return B_.to_device(ids, model.xp).astype("int64")


def as_mask(model, mask, shape, name):
    """A 1/0 attention mask of exactly `shape`, as an array on the model's backend."""
    mask = as_array(mask, name)
    if mask.ndim == 1 and len(shape) == 2 and shape[0] == 1:
        mask = mask[None]
    if tuple(mask.shape) != tuple(shape):
        raise InputError(f"{name} has shape {tuple(mask.shape)} but its ids have shape {tuple(shape)}; "
                         "they must match (one 1/0 per token)")
    if mask.dtype.kind not in "biuf":
        raise InputError(f"{name} must hold numbers 1 (keep) and 0 (padding), got dtype {mask.dtype}")
    if not bool(((mask == 0) | (mask == 1)).all()):      # on the host for host masks: no GPU sync
        raise InputError(f"{name} must hold only 1 (keep) and 0 (padding)")
    m = B_.to_device(mask, model.xp)
    return m.astype("int64") if m.dtype.kind == "b" else m


def as_hidden(model, x, name, rows=None, length=None):
    """Floating vectors [rows, length, M] (embeddings, encoder states), finite, in the compute dtype."""
    M = model.config.d_model
    x = as_array(x, name)
    want = f"[{'batch' if rows is None else rows}, {'length' if length is None else length}, d_model={M}]"
    if x.ndim != 3 or x.shape[-1] != M or 0 in x.shape[:2] or rows not in (None, x.shape[0]) \
            or length not in (None, x.shape[1]):
        raise InputError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if not B_.is_floating(x.dtype):
        raise InputError(f"{name} must be a floating array, got dtype {x.dtype}")
    if not is_checked(x):                                  # before the cast: a bf16 host array is checked as is
        check_finite(x, name)
    return B_.to_device(x, model.xp, B_.resolve_dtype(model.dtype, model.xp))


def check_finite(x, name):
    """InputError when a floating array holds NaN or inf (it would spread through every later layer).
    No float32 copy: isfinite reads float16 and bfloat16 as they are."""
    xp = B_.array_module(x)
    if not bool(xp.isfinite(x).all()):
        raise InputError(f"{name} holds NaN or inf; every value must be finite")


def _stack(*scalars):
    """0-d arrays of one module as one 1-d array (so a GPU brings them back in one transfer)."""
    return B_.array_module(scalars[0]).stack(scalars)


def ids_or_embeds(model, ids, embeds, prefix="", hint=""):
    """Exactly one of {prefix}input_ids / {prefix}inputs_embeds, checked: (ids, embeds, [rows, length])."""
    if (ids is None) == (embeds is None):
        raise InputError(f"give exactly one of {prefix}input_ids or {prefix}inputs_embeds{hint}")
    if ids is not None:
        ids = as_ids(model, ids, f"{prefix}input_ids")
        return ids, None, ids.shape
    embeds = as_hidden(model, embeds, f"{prefix}inputs_embeds")
    return None, embeds, embeds.shape[:2]


def check_encoder_inputs(model, input_ids, attention_mask, inputs_embeds):
    """(ids, mask, embeds) checked: exactly one of ids / embeds, a mask of their [B, T] shape."""
    input_ids, inputs_embeds, shape = ids_or_embeds(model, input_ids, inputs_embeds)
    if attention_mask is not None:
        given = attention_mask
        attention_mask = as_mask(model, attention_mask, shape, "attention_mask")
        # the rows are read where the mask came from: a host mask costs the GPU no synchronisation
        rows_of = attention_mask if B_.is_device_array(given) else np.asarray(given).reshape(shape)  # [B, T]
        empty = ~(rows_of == 1).any(axis=1)                                                        # [B]
        if bool(empty.any()):
            rows = [int(i) for i in B_.to_numpy(B_.array_module(empty).nonzero(empty)[0])]
            warnings.warn(f"attention_mask rows {rows} are all padding: those inputs have no tokens, so "
                          "their outputs depend only on the global tokens", MiniPegxWarning, stacklevel=3)
    if shape[1] > model.config.max_position_embeddings:
        warnings.warn(f"the input has {shape[1]} tokens, more than max_position_embeddings="
                      f"{model.config.max_position_embeddings}; positions are sinusoidal so it runs, but the "
                      "model never saw such positions in training", LongInputWarning, stacklevel=3)
    return input_ids, attention_mask, inputs_embeds


def as_labels(model, labels, shape=None):
    """Integer labels [B, S] (ids in [0, V) or -100 = ignore), of the decoder inputs' shape if given."""
    labels = as_array(labels, "labels")
    if labels.dtype.kind not in "iu" or labels.ndim != 2 or 0 in labels.shape:
        raise InputError("labels must be a non-empty integer array [batch, length] of token ids (-100 = ignore)")
    if shape is not None and tuple(labels.shape) != tuple(shape):
        raise InputError(f"labels have shape {tuple(labels.shape)} but the decoder inputs {tuple(shape)}; "
                         "give one label per decoder position")
    bad = (labels != -100) & ((labels < 0) | (labels >= model.config.vocab_size))
    if bool(bad.any()):
        raise InputError(f"labels hold ids outside [0, {model.config.vocab_size}) other than -100 (ignore)")
    return B_.to_device(labels, model.xp).astype("int64")


def check_past_key_values(model, past_key_values, rows, batch, tokens):
    """past_key_values (per decoder layer (self_k, self_v, cross_k, cross_v)) checked against the config,
    the decoder rows and the encoder's [B, T]: self [rows, H, P, D] with one P for all layers, cross
    [B, H, T, D]. Returns (self caches, cross kvs, P)."""
    cfg = model.config
    H = cfg.decoder_attention_heads
    D = cfg.d_model // H
    layers = cfg.decoder_layers
    how = (f"a tuple of {layers} (self_k, self_v, cross_k, cross_v) tuples, as a previous call returned with "
           "use_cache=True")
    if not isinstance(past_key_values, (tuple, list)) or len(past_key_values) != layers:
        raise InputError(f"past_key_values must be {how}; got {short(past_key_values)}"
                         + (f" of length {len(past_key_values)}" if isinstance(past_key_values, (tuple, list)) else ""))
    past, unchecked = None, []
    for i, layer in enumerate(past_key_values):
        if not isinstance(layer, (tuple, list)) or len(layer) != 4:
            raise InputError(f"past_key_values[{i}] must be (self_k, self_v, cross_k, cross_v); it must be {how}")
        for j, a in enumerate(layer):
            name = f"past_key_values[{i}][{j}]"
            if not hasattr(a, "shape") or not hasattr(a, "dtype") or len(a.shape) != 4:
                raise InputError(f"{name} must be an array [rows, heads, steps, head_dim]; it must be {how}")
            if not B_.is_floating(a.dtype):
                raise InputError(f"{name} must be a floating array, got dtype {a.dtype}")
            if past is None:
                past = a.shape[2]                                   # P, from the first self-attention keys
            want = (rows, H, past, D) if j < 2 else (batch, H, tokens, D)
            if tuple(a.shape) != want:
                what = "self-attention" if j < 2 else "cross-attention"
                raise InputError(f"{name} ({what}) has shape {tuple(a.shape)}, expected {want} (decoder rows "
                                 f"{rows}, inputs {batch}, encoder tokens {tokens}, {H} heads of {D}); was it made "
                                 "for other inputs or another model?")
            if not is_checked(a):
                unchecked.append((a, name))
    if unchecked:   # values checked once per cache: arrays a previous call returned are not read again
        xp = B_.array_module(unchecked[0][0])
        if xp is np:
            for a, name in unchecked:
                check_finite(a, name)
        else:       # one transfer for all of them
            ok = B_.to_numpy(xp.stack([xp.isfinite(a).all() for a, _ in unchecked if B_.array_module(a) is xp]))
            for good, (a, name) in zip(ok.tolist(), [u for u in unchecked if B_.array_module(u[0]) is xp]):
                if not good:
                    raise InputError(f"{name} holds NaN or inf; every value must be finite")
            for a, name in unchecked:
                if B_.array_module(a) is not xp:
                    check_finite(a, name)
    xp, dtype = model.xp, B_.resolve_dtype(model.dtype, model.xp)
    on = [tuple(B_.to_device(a, xp, dtype) for a in layer) for layer in past_key_values]
    return tuple((a[0], a[1]) for a in on), tuple((a[2], a[3]) for a in on), past


# Arrays minipegx itself returned in past_key_values (finite by construction: every layer is checked, or
# the caller turned the checks off), by id, with a weak reference so that a freed id is forgotten.
_CHECKED = {}


def mark_checked(arrays):
    """Remember arrays returned as past_key_values, so feeding them back costs no second check."""
    for a in arrays:
        try:
            _CHECKED[id(a)] = weakref.ref(a, lambda _, key=id(a): _CHECKED.pop(key, None))
        except TypeError:          # an array type without weak references: checked again next time
            pass


def is_checked(a):
    ref = _CHECKED.get(id(a))
    return ref is not None and ref() is a
