"""check_function: grade a student's version of one of minipegx's public layer functions.

    from minipegx.parity import check_function
    result = check_function("layer_norm", my_layer_norm)
    result.passed, print(result.message)

Three checks, each run only when the one before passed:
1. on its own, on inputs that catch the usual bugs (cases.py), against minipegx's function, within
   TINY_FP32 (one layer function in fp32: only the summation order may differ);
2. in place: the student's function replaces minipegx's wherever the model calls it (parity.patched)
   and the first (short) bundled demo model runs a batch of 2 (row 1 padded; 150 tokens = 3 blocks of 64, the last
   partial, 4 in the staggered layer; 16 global tokens): the logits of a 3-step forward pass and of a 4th
   step decoded from its cache (beam_step: the ids 3-beam search generates) must equal minipegx's own
   within LOGITS;
3. when transformers is installed (and with_transformers is not False), the same logits against
   transformers' PegasusXForConditionalGeneration on the same checkpoint, within LOGITS.
The reference is minipegx, which the test suite checks against transformers and the committed goldens,
so students need neither torch nor transformers. The student's code never makes this raise: an
exception in it is a failed check whose message shows the student's line that raised.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sysconfig
import traceback
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError
from ..tolerances import LOGITS, TINY_FP32
from .cases import MODULES, REFERENCE, cases
from .hints import ADVICE, matching_variant, where_hint

NAMES = tuple(MODULES)


@dataclass
class CheckResult:
    """The verdict on one function: passed, and a message saying where and why it differs (or that it
    does not). Truthy when passed; prints as its message."""
    name: str
    passed: bool
    message: str

    def __bool__(self):
        return self.passed

    def __str__(self):
        return self.message

    def _repr_html_(self):  # notebooks
        return "<pre>" + self.message.replace("&", "&amp;").replace("<", "&lt;") + "</pre>"


class _Failed(Exception):
    """Internal: a check failed, with its message."""


def _fresh(obj):
    """A copy of every array (and of the dicts, tuples and dataclasses holding them); modules, configs and
    numbers as they are. Functions may write into their inputs (minipegx's softmax does)."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, dict):
        return {k: _fresh(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_fresh(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) and not obj.__dataclass_params__.frozen:
        return dataclasses.replace(obj, **{f.name: _fresh(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    return obj


def _their_line(exc):
    """'line N of FILE: SOURCE' for the deepest frame of the traceback outside minipegx and the libraries."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    ours += [sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")]
    theirs = [f for f in frames if not any(os.path.abspath(f.filename).startswith(p) for p in ours)]
    f = (theirs or frames)[-1]
    return f"line {f.lineno} of {f.filename}, in {f.name}:\n    {(f.line or '').strip()}"


def _call(name, fn, args, where):
    try:
        with np.errstate(all="ignore"):  # their overflow shows as a difference, with a hint
            return fn(*args)
    except NotImplementedError:
        raise _Failed(f"{where}: not implemented yet: replace `raise NotImplementedError` with your code") from None
    except Exception as e:
        raise _Failed(f"{where}: it raised {type(e).__name__}: {e}\nat {_their_line(e)}") from None


def _leaves(names, value, path="output"):
    """(label, value) pairs of a nested output, labelled by `names` (same nesting) where given."""
    if isinstance(names, str):
        yield names, value
    elif isinstance(names, dict):
        if not isinstance(value, dict):
            raise _Failed(f"{path} should be a dict with keys {sorted(names)}, got {type(value).__name__}")
        for k, sub in names.items():
            if k not in value:
                raise _Failed(f"{path} has no key {k!r} (keys: {sorted(value)})")
            yield from _leaves(sub, value[k], f"{path}[{k!r}]")
    elif dataclasses.is_dataclass(names):
        for f in dataclasses.fields(names):
            if not hasattr(value, f.name):
                raise _Failed(f"{path} should be a {type(names).__name__} (with .{f.name}), got {type(value).__name__}")
            yield from _leaves(getattr(names, f.name), getattr(value, f.name), f"{path}.{f.name}")
    else:
        if not isinstance(value, (tuple, list)) or len(value) != len(names):
            got = f"a {type(value).__name__} of {len(value)}" if isinstance(value, (tuple, list)) else \
                f"a {type(value).__name__}"
            raise _Failed(f"{path} should be a tuple of {len(names)} ({', '.join(map(str, _flat(names)))}), got {got}")
        for i, (sub, v) in enumerate(zip(names, value)):
            yield from _leaves(sub, v, f"{path}[{i}]")


def _flat(names):
    return [names] if isinstance(names, str) else [n for sub in (names.values() if isinstance(names, dict) else names)
                                                   for n in _flat(sub)]


def _num(x):
    return repr(x.item()) if x.dtype.kind in "biu" else f"{float(x):.6g}"


def _at(index, axes):
    letters = axes if axes and len(axes) == len(index) else [f"axis{i}" for i in range(len(index))]
    return "[" + ", ".join(f"{a}={i}" for a, i in zip(letters, index)) + "]"


def _difference(label, got, want, axes, keep, tol):
    """None when got equals want within tol (where keep is True), else the message of the first difference."""
    want = np.asarray(want)
    try:
        got = np.asarray(got)
    except Exception:
        return f"{label}: expected an array of shape {list(want.shape)}, got {type(got).__name__}"
    if got.shape != want.shape:
        return f"{label}: shape {list(got.shape)}, expected {list(want.shape)} (axes {' '.join(axes or '?')})"
    if want.dtype == bool or want.dtype.kind in "iu":
        bad = got != want
    else:
        bad = ~(np.abs(got.astype(np.float64) - want.astype(np.float64)) <= tol.bound(want))
        bad &= ~(np.isneginf(want) & np.isneginf(got))
    if keep is not None:
        try:
            bad &= np.broadcast_to(keep, bad.shape)
        except ValueError:  # another layout than the reference's (a variant's): every entry counts
            pass
    if not bad.any():
        return None
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    worst = np.where(bad, np.nan_to_num(diff, nan=np.inf), -1.0)
    big = tuple(int(i) for i in np.unravel_index(int(np.argmax(worst)), worst.shape))
    msg = (f"{label} {list(want.shape)} first differs at {_at(first, axes)}: got {_num(got[first])}, expected "
           f"{_num(want[first])}; {int(bad.sum())} of {bad.size} entries differ, the most at {_at(big, axes)} "
           f"by {diff[big]:.3g} (tolerance {tol.name}: {tol.bound(want):.3g})")
    if want.dtype.kind == "f":
        hint = where_hint(first, axes or "", bad, got, want)
        msg += f"\nHint: {hint}" if hint else ""
    return msg


def _compare(case, got, want, tol):
    pairs = dict(_leaves(case.names, want))
    for label, value in _leaves(case.names, got):
        problem = _difference(label, value, pairs[label], case.axes.get(label), case.keep.get(label), tol)
        if problem:
            return problem
    return None


def _standalone(name, fn):
    for case in cases(name):
        want = REFERENCE[name](*_fresh(case.args))
        got = _call(name, fn, _fresh(case.args), f"on its own, case: {case.label}")
        problem = _compare(case, got, want, TINY_FP32)
        if problem:
            same = matching_variant(name, _fresh(case.args), got, lambda g, w: _compare(case, g, w, TINY_FP32) is None)
            cause = f"Likely cause: {same} (your output equals what that mistake gives)." if same else \
                f"Check: {ADVICE[name]}"
            raise _Failed(f"on its own, case: {case.label}\n{problem}\n{cause}")
    return len(cases(name))


# ---------------------------------------------------------------------------------------------- in place
@lru_cache(maxsize=1)
def _demo():
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


def _run_model(model, ids, mask, dec, beams):
    """What the in-place check compares: a forward's logits and a cached step's, or beam search's ids."""
    if beams:
        return {"beam search ids": np.asarray(model.generate(ids, mask, num_beams=3, max_new_tokens=6))}
    first = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec[:, :3], use_cache=True)  # [B, 3, V]
    step = model(encoder_outputs=(first.encoder_last_hidden_state,), attention_mask=mask,
                 decoder_input_ids=dec[:, 3:], past_key_values=first.past_key_values, use_cache=True)  # [B, 1, V]
    return {"logits": first.logits, "logits of a cached decoding step": step.logits}


@lru_cache(maxsize=2)
def _expected(beams):
    return _run_model(*_demo(), beams)


def _logits_check(name, got, want, source):
    for label, value in want.items():
        problem = _difference(label, got[label], value, "bsv" if value.ndim == 3 else "bs", None, LOGITS)
        if problem:
            raise _Failed(f"in place ({source}): it passes on its own, but the model's output changes with it:\n"
                          f"{problem}\nCheck: the other places the model calls {name} (other shapes: "
                          f"global tokens [B, G, M], one decoding step, 16 global tokens and blocks of 64), and "
                          f"that it does not write into its inputs.")


def _in_place(name, fn):
    from ..patching import patched

    model, ids, mask, dec = _demo()
    model = dataclasses.replace(model, params=_fresh(model.params))   # a function that writes into weights
    beams = name == "beam_step"                                        # spoils only this copy
    with patched({f"{MODULES[name].__name__}.{name}": fn}):
        try:
            got = _run_model(model, ids, mask, dec, beams)
        except Exception as e:
            raise _Failed(f"in place: it raised {type(e).__name__} inside the model: {e}\n"
                          f"at {_their_line(e)}") from None
    _logits_check(name, got, _expected(beams), "compared with minipegx's own functions")
    return got


def _transformers_logits(beams):
    import torch

    from ..model import demo_model_path

    ref = _reference_model(demo_model_path("short"))
    _, ids, mask, dec = _demo()
    t = torch.as_tensor
    with torch.no_grad():
        if beams:
            return {"beam search ids": ref.generate(input_ids=t(ids), attention_mask=t(mask), num_beams=3,
                                                    max_new_tokens=6).numpy()}
        full = ref(input_ids=t(ids), attention_mask=t(mask), decoder_input_ids=t(dec)).logits.numpy()
    return {"logits": full[:, :3], "logits of a cached decoding step": full[:, 3:]}


@lru_cache(maxsize=1)
def _reference_model(path):
    from ..hf_reference import load_reference

    return load_reference(path)


def has_transformers():
    """Whether torch and transformers can be imported here (without importing them)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken install
        return False


def check_function(name, fn, with_transformers=None) -> CheckResult:
    """Grade `fn`, a student's version of minipegx's public function `name` (one of NAMES).

    Returns a CheckResult: .passed, and .message saying where the output first differs, by how much, and
    the likely cause. Never raises because of fn. with_transformers: None = also compare with transformers
    when it is installed; False = never (an autograder's verdict should not depend on the machine)."""
    if name not in MODULES:
        raise InputError(f"check_function knows {', '.join(NAMES)}; got {name!r}")
    if not callable(fn):
        return CheckResult(name, False, f"{name}: FAILED: expected a function, got {type(fn).__name__} (is there a "
                                        f"function named {name}, and was its cell run?)")
    try:
        n = _standalone(name, fn)
        got = _in_place(name, fn)
        done = [f"on its own: {n} case(s) within {TINY_FP32.name} ({TINY_FP32.atol:g})",
                f"in place: the demo model's {' and '.join(got)} equal minipegx's within {LOGITS.name} "
                f"({LOGITS.atol:g})"]
        if with_transformers is None and has_transformers() or with_transformers:
            _logits_check(name, got, _transformers_logits(name == "beam_step"), "compared with transformers")
            done.append("and with transformers'")
        return CheckResult(name, True, f"{name}: passed. " + "; ".join(done) + ".")
    except _Failed as failed:
        return CheckResult(name, False, f"{name}: FAILED {failed}")
    except Exception as e:  # an output too odd to compare (objects, ragged lists): still a verdict, not a crash
        return CheckResult(name, False, f"{name}: FAILED: its output could not be compared with the reference's "
                                        f"({type(e).__name__}: {e})")
