"""check_function: grade a student's version of one of minipegx's public layer functions.

    from minipegx.parity import check_function
    result = check_function("layer_norm", my_layer_norm)
    result.passed, print(result.message)

Two halves (the grader runs them in two processes, harvest.py says why):
* harvest(name, fn): call the function on the check inputs (cases.py) and in place in the demo model, and
  bring back plain arrays;
* judge(name, arrays, notes): the verdict, from those arrays alone. Three checks, each only when the one
  before passed:
  1. on its own, on inputs that catch the usual bugs, against minipegx's function, within TINY_FP32 (one
     layer function in fp32: only the summation order may differ). Only the entries the model reads count
     (outputs at padded positions may hold anything), and an additive mask may hide a position with any
     value <= -1e9;
  2. in place: the student's function replaces minipegx's wherever the model calls it (parity.patched) and
     the first (short) bundled demo model runs a batch of 2 (row 1 padded; 150 tokens = 3 blocks of 64, the
     last partial, 4 in the staggered layer; 16 global tokens): the logits of a 3-step forward pass and of a
     4th step decoded from its cache (beam_step: the ids 3-beam search generates) must equal minipegx's own
     within LOGITS;
  For the backward exercises (layer_norm_backward, softmax_backward, global_local_attention_backward) both
  checks are in float64, as gradient checks are: the cases' caches come from minipegx's forward, and in place
  is a training step of the demo model loaded in float64 (minipegx.training.loss_and_grads), whose every
  parameter gradient must equal minipegx's own within TINY_FP32 (float64 rounding is ~1e-14);
  3. when transformers is installed (and with_transformers is not False), the same logits against
     transformers' PegasusXForConditionalGeneration on the same checkpoint, within LOGITS.
A function that is minipegx's own, or calls minipegx's function of the same name, fails: the exercise is to
write it (other minipegx functions are allowed, as the exercises say).
The reference is minipegx, which the test suite checks against transformers and the committed goldens, so
students need neither torch nor transformers. The student's code never makes this raise.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError
from ..tolerances import LOGITS, TINY_FP32
from .cases import MASKED, MODULES, REFERENCE, cases
from .harvest import StudentError, demo, demo64, fresh, harvest, kind, leaves, run_model
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


def _num(x):
    return repr(x.item()) if x.dtype.kind in "biu" else f"{float(x):.6g}"


def _at(index, axes):
    letters = axes if axes and len(axes) == len(index) else [f"axis{i}" for i in range(len(index))]
    return "[" + ", ".join(f"{a}={i}" for a, i in zip(letters, index)) + "]"


def _difference(label, got, want, axes, keep, tol, mask=False):
    """None when got equals want within tol (where keep is True), else the message of the first difference.
    mask: an additive mask, where a masked entry (finfo.min in want) may be any value <= MASKED."""
    want, got = np.asarray(want), np.asarray(got)
    if got.shape != want.shape:
        return f"{label}: shape {list(got.shape)}, expected {list(want.shape)} (axes {' '.join(axes or '?')})"
    if want.dtype == bool or want.dtype.kind in "iu":
        bad = got != want
    else:
        g64, w64 = got.astype(np.float64), want.astype(np.float64)
        bad = ~(np.abs(g64 - w64) <= tol.bound(want))
        bad &= ~(np.isneginf(want) & np.isneginf(got))
        if mask:
            hidden = w64 <= MASKED
            bad = np.where(hidden, ~(g64 <= MASKED), bad)
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
    if mask:
        msg += f"\nA masked position's additive mask must be finfo(dtype).min (or at most {MASKED:g}); a kept one 0."
    elif want.dtype.kind == "f":
        hint = where_hint(first, axes or "", bad, got, want)
        msg += f"\nHint: {hint}" if hint else ""
    return msg


def _compare(case, got, want, tol):
    """got: {label: array}; want: the reference's nested output. The first difference's message, or None."""
    for label, value in leaves(case.names, want):
        if label not in got:
            return f"{label}: missing from the output"
        problem = _difference(label, got[label], value, case.axes.get(label), case.keep.get(label), tol,
                              label in case.masks)
        if problem:
            return problem + (f"\n({case.legend})" if case.legend else "")
    return None


def _standalone(name, arrays, notes):
    todo = cases(name)
    for i, case in enumerate(todo):
        if f"case{i}" in notes:
            raise _Failed(notes[f"case{i}"])
        got = {k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith(f"case{i}:")}
        want = REFERENCE[name](*fresh(case.args))
        problem = _compare(case, got, want, TINY_FP32)
        if problem:
            same = matching_variant(name, fresh(case.args), got,
                                    lambda g, w: _compare(case, g, w, TINY_FP32) is None)
            cause = f"Likely cause: {same} (your output equals what that mistake gives)." if same else \
                f"Check: {ADVICE[name]}"
            raise _Failed(f"on its own, case: {case.label}\n{problem}\n{cause}")
    return len(todo)


@lru_cache(maxsize=3)
def _expected(what):
    model, ids, mask, dec = demo()
    return run_model(demo64() if what == "gradients" else model, ids, mask, dec, what)


def _logits_check(name, got, want, source):
    for label, value in want.items():
        if label not in got:
            raise _Failed(f"in place ({source}): no {label} came back")
        axes = None if label.startswith("d ") else "bsv" if value.ndim == 3 else "bs"
        problem = _difference(label, got[label], value, axes, None, TINY_FP32 if axes is None else LOGITS)
        if problem and axes is None:
            raise _Failed(f"in place ({source}): it passes on its own, but the demo model's gradients change with "
                          f"it:\n{problem}\nCheck: the other places training calls {name} (other shapes: the "
                          f"decoder's [B, S, M] and its attention, 16 global tokens and blocks of 64, a staggered "
                          f"layer), and that it returns its result (the callers use what it returns).")
        if problem:
            raise _Failed(f"in place ({source}): it passes on its own, but the model's output changes with it:\n"
                          f"{problem}\nCheck: the other places the model calls {name} (other shapes: "
                          f"global tokens [B, G, M], one decoding step, 16 global tokens and blocks of 64), and "
                          f"that it does not write into its inputs.")


def _transformers_logits(beams):
    import torch

    from ..model import demo_model_path

    ref = _reference_model(demo_model_path("short"))
    _, ids, mask, dec = demo()
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


def not_own(name):
    """The message for a graded function that is minipegx's own or calls it."""
    where = f"minipegx's own `{MODULES[name].__name__}.{name}`"
    return (f"{name}: FAILED: the function checked is {where}, or calls it: this exercise is to write "
            f"{name} yourself (other minipegx functions may be used, as the exercise says).")


def judge(name, arrays, notes, with_transformers=False, require_own=True) -> CheckResult:
    """The verdict on `name` from harvest's arrays and notes alone (see the module docstring)."""
    if name not in MODULES:
        raise InputError(f"check_function knows {', '.join(NAMES)}; got {name!r}")
    if "not callable" in notes:
        return CheckResult(name, False, f"{name}: FAILED: {notes['not callable']}")
    if require_own and notes.get("calls minipegx"):
        return CheckResult(name, False, not_own(name))
    try:
        n = _standalone(name, arrays, notes)
        if "in place" in notes:
            raise _Failed(notes["in place"])
        got = {k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith("in place:")}
        what = kind(name)
        _logits_check(name, got, _expected(what), "compared with minipegx's own functions")
        done = [f"on its own: {n} case(s) within {TINY_FP32.name} ({TINY_FP32.atol:g})"]
        if what == "gradients":       # minipegx's gradients are the ones the test suite checks against torch's
            done.append(f"in place: the float64 demo model's {len(got)} parameter gradients equal minipegx's "
                        f"within {TINY_FP32.name} ({TINY_FP32.atol:g})")
        else:
            done.append(f"in place: the demo model's {' and '.join(got)} equal minipegx's within {LOGITS.name} "
                        f"({LOGITS.atol:g})")
        if with_transformers and what != "gradients":
            _logits_check(name, got, _transformers_logits(what == "beam search"), "compared with transformers")
            done.append("and with transformers'")
        return CheckResult(name, True, f"{name}: passed. " + "; ".join(done) + ".")
    except (_Failed, StudentError) as failed:
        return CheckResult(name, False, f"{name}: FAILED {failed}")
    except Exception as e:  # an output too odd to compare: still a verdict, not a crash
        return CheckResult(name, False, f"{name}: FAILED: its output could not be compared with the reference's "
                                        f"({type(e).__name__}: {e})")


def check_function(name, fn, with_transformers=None, require_own=True) -> CheckResult:
    """Grade `fn`, a student's version of minipegx's public function `name` (one of NAMES).

    Returns a CheckResult: .passed, and .message saying where the output first differs, by how much, and
    the likely cause. Never raises because of fn. with_transformers: None = also compare with transformers
    when it is installed; False = never (an autograder's verdict should not depend on the machine).
    require_own: fail a function that is minipegx's own or calls it (False: grade what it computes; the
    test suite uses that for planted bugs built on minipegx's functions)."""
    if name not in MODULES:
        raise InputError(f"check_function knows {', '.join(NAMES)}; got {name!r}")
    arrays, notes = harvest(name, fn)
    transformers = has_transformers() if with_transformers is None else with_transformers
    return judge(name, arrays, notes, transformers, require_own)
