"""The student's side of a check: call their function on the check inputs and bring the outputs back as
plain arrays. Nothing here decides a verdict; check.judge does, from these arrays only.

check_function runs harvest and judge in one process. The grader runs harvest inside the submission's own
process (the notebook's namespace) and judge in its own process, so that whatever a notebook patches
(minipegx, NumPy, this module) cannot change a verdict: the arrays are compared by code the notebook never
reached.

harvest(name, fn) -> (arrays, notes):
  arrays  {"case0:tokens": ndarray, ..., "in place:logits": ndarray}, numeric dtypes only;
  notes   {"case0": "why there is no output", "in place": ..., "calls minipegx": True/False}, str/bool only.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import sysconfig
import traceback
from functools import lru_cache

import numpy as np

from .cases import MODULES, REFERENCE, cases


class StudentError(Exception):
    """Internal: the student's function could not produce an output to compare; the message says why."""


def fresh(obj):
    """A copy of every array (and of the dicts, tuples and dataclasses holding them); modules, configs and
    numbers as they are. Functions may write into their inputs (minipegx's softmax does)."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, dict):
        return {k: fresh(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):      # a backward's cache (a NamedTuple)
        return type(obj)(*(fresh(v) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(fresh(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) and not obj.__dataclass_params__.frozen:
        return dataclasses.replace(obj, **{f.name: fresh(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    return obj


def their_line(exc):
    """'line N of FILE: SOURCE' for the deepest frame of the traceback outside minipegx and the libraries."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    ours += [sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")]
    theirs = [f for f in frames if not any(os.path.abspath(f.filename).startswith(p) for p in ours)]
    f = (theirs or frames)[-1]
    return f"line {f.lineno} of {f.filename}, in {f.name}:\n    {(f.line or '').strip()}"


def reference_codes(name):
    """The code objects of minipegx's own `name`. For a function inside a precision seam, only the plain
    formula's (the seam's code is shared by linear, softmax and the others, which a student may call)."""
    ref = REFERENCE[name]
    inner = getattr(ref, "textbook", None)
    return {inner.__code__} if inner is not None else {ref.__code__}


class _Watch:
    """Records whether minipegx's own `name` runs while the student's function does (sys.setprofile)."""

    def __init__(self, name):
        self.codes, self.hit = reference_codes(name), False

    def __call__(self, frame, event, arg):
        if event == "call" and frame.f_code in self.codes:
            self.hit = True


def call(fn, args, where, watch=None):
    """fn(*args), an exception in it becoming a StudentError that shows the student's line."""
    previous = sys.getprofile()
    try:
        if watch is not None:
            sys.setprofile(watch)
        with np.errstate(all="ignore"):  # their overflow shows as a difference, with a hint
            return fn(*args)
    except NotImplementedError:
        raise StudentError(f"{where}: not implemented yet: replace `raise NotImplementedError` with your code") \
            from None
    except Exception as e:
        raise StudentError(f"{where}: it raised {type(e).__name__}: {e}\nat {their_line(e)}") from None
    finally:
        sys.setprofile(previous)


def flat(names):
    return [names] if isinstance(names, str) else [n for sub in (names.values() if isinstance(names, dict) else names)
                                                   for n in flat(sub)]


def leaves(names, value, path="output"):
    """(label, value) pairs of a nested output, labelled by `names` (same nesting)."""
    if isinstance(names, str):
        yield names, value
    elif isinstance(names, dict):
        if not isinstance(value, dict):
            raise StudentError(f"{path} should be a dict with keys {sorted(names)}, got {type(value).__name__}")
        for k, sub in names.items():
            if k not in value:
                raise StudentError(f"{path} has no key {k!r} (keys: {sorted(map(str, value))})")
            yield from leaves(sub, value[k], f"{path}[{k!r}]")
    elif dataclasses.is_dataclass(names):
        for f in dataclasses.fields(names):
            if not hasattr(value, f.name):
                raise StudentError(f"{path} should be a {type(names).__name__} (with .{f.name}), "
                                   f"got {type(value).__name__}")
            yield from leaves(getattr(names, f.name), getattr(value, f.name), f"{path}.{f.name}")
    else:
        if not isinstance(value, (tuple, list)) or len(value) != len(names):
            got = f"a {type(value).__name__} of {len(value)}" if isinstance(value, (tuple, list)) else \
                f"a {type(value).__name__}"
            raise StudentError(f"{path} should be a tuple of {len(names)} ({', '.join(map(str, flat(names)))}), "
                               f"got {got}")
        for i, (sub, v) in enumerate(zip(names, value)):
            yield from leaves(sub, v, f"{path}[{i}]")


def as_array(label, value):
    """A plain numeric NumPy array of `value` (lists, NumPy scalars and CuPy arrays too), else StudentError."""
    if hasattr(value, "get") and hasattr(value, "__cuda_array_interface__"):
        value = value.get()                                   # a CuPy array: to the host
    try:
        out = np.array(value)
    except Exception as e:
        raise StudentError(f"{label}: expected an array, got {type(value).__name__} ({type(e).__name__})") from None
    if out.dtype.kind not in "biuf":
        raise StudentError(f"{label}: expected a numeric array, got {type(value).__name__} of dtype {out.dtype}")
    return out


# ---------------------------------------------------------------------------------------------- in place
@lru_cache(maxsize=1)
def demo():
    """The first (short) demo model and a batch of 2 (row 1 padded from token 100 of 150), 4 decoder tokens."""
    from ..model import demo_model_path, from_pretrained

    model = from_pretrained(demo_model_path("short"))   # the model the course notebooks use
    rng = np.random.default_rng(0)
    V = model.config.vocab_size
    ids = rng.integers(5, V, size=(2, 150))                                    # [B, T]
    mask = np.ones((2, 150), dtype=np.int64)
    mask[1, 100:] = 0
    ids[1, 100:] = model.config.pad_token_id
    dec = np.concatenate([np.zeros((2, 1), np.int64), rng.integers(5, V, size=(2, 3))], axis=1)  # [B, S]
    return model, ids, mask, dec


BACKWARD = ("layer_norm_backward", "softmax_backward", "global_local_attention_backward")


def kind(name):
    """What the in-place check of `name` compares: "beam search" ids, "gradients" or "logits"."""
    return "beam search" if name == "beam_step" else "gradients" if name in BACKWARD else "logits"


@lru_cache(maxsize=1)
def demo64():
    """The same demo model in float64, for the backward exercises (gradients are checked in float64)."""
    from ..model import demo_model_path, from_pretrained

    return from_pretrained(demo_model_path("short"), dtype="float64")


def run_training(model, ids, mask, dec):
    """Every parameter's gradient of the demo batch's loss (labels: the decoder tokens shifted left, the last
    of row 1 ignored, -100), keyed "d " + transformers' parameter name."""
    from ..training import loss_and_grads

    labels = np.concatenate([dec[:, 1:], np.array([[1], [-100]])], axis=1)    # [B, S]
    _, grads = loss_and_grads(model, ids, mask, labels)
    return {f"d {name}": g for name, g in grads.items()}


def run_model(model, ids, mask, dec, what):
    """What the in-place check compares (kind(name)): a forward's logits and a cached step's, beam search's
    ids, or the gradients of a training step."""
    if what == "gradients":
        return run_training(model, ids, mask, dec)
    if what == "beam search":
        return {"beam search ids": np.asarray(model.generate(ids, mask, num_beams=3, max_new_tokens=6))}
    first = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec[:, :3], use_cache=True)  # [B, 3, V]
    step = model(encoder_outputs=(first.encoder_last_hidden_state,), attention_mask=mask,
                 decoder_input_ids=dec[:, 3:], past_key_values=first.past_key_values, use_cache=True)  # [B, 1, V]
    return {"logits": first.logits, "logits of a cached decoding step": step.logits}


def in_place(name, fn):
    """The demo model's outputs with `fn` in place of minipegx's `name` wherever the model calls it."""
    from ..patching import patched

    model, ids, mask, dec = demo()
    model = demo64() if kind(name) == "gradients" else model
    model = dataclasses.replace(model, params=fresh(model.params))   # a function that writes into weights
    with patched({f"{MODULES[name].__name__}.{name}": fn}):          # spoils only this copy
        try:
            got = run_model(model, ids, mask, dec, kind(name))
        except Exception as e:
            raise StudentError(f"in place: it raised {type(e).__name__} inside the model: {e}\n"
                               f"at {their_line(e)}") from None
    return {label: as_array(label, value) for label, value in got.items()}


def harvest(name, fn):
    """The student's outputs on every case of `name` and in place in the demo model, as arrays and notes."""
    arrays, notes = {}, {"calls minipegx": False}
    if not callable(fn):
        notes["not callable"] = (f"expected a function, got {type(fn).__name__} (is there a function named "
                                 f"{name}, and was its cell run?)")
        return arrays, notes
    watch = _Watch(name)
    for i, case in enumerate(cases(name)):
        try:
            got = call(fn, fresh(case.args), f"on its own, case: {case.label}", watch)
            for label, value in leaves(case.names, got):
                arrays[f"case{i}:{label}"] = as_array(label, value)
        except StudentError as e:
            notes[f"case{i}"] = str(e)
    notes["calls minipegx"] = watch.hit
    if any(key.startswith("case") for key in notes):      # judge stops at the failed case: no model run needed
        return arrays, notes
    try:
        for label, value in in_place(name, fn).items():
            arrays[f"in place:{label}"] = value
    except StudentError as e:
        notes["in place"] = str(e)
    return arrays, notes
