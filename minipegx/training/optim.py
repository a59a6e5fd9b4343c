"""AdamW with torch.optim.AdamW's semantics, over a flat dict of parameters keyed by the checkpoint's names.

    opt = AdamW(model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    loss, grads = loss_and_grads(model, input_ids, attention_mask, labels)
    opt.step(grads)                      # model.params change in place

One step for a parameter p with gradient g (Loshchilov & Hutter 2019; torch's single-tensor loop, in the same
order of operations so that float64 runs agree to rounding):

    t += 1
    p *= 1 - lr * wd                         # decoupled weight decay: on the weights, not through the moments
    m  = m + (1 - b1) * (g - m)              # first moment (torch's lerp)
    v  = v * b2 + (1 - b2) * g * g           # second moment
    p += (-lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)     # bias-corrected

The moments live in the parameter's dtype on the parameter's device (as torch's zeros_like). A parameter with no
gradient in `grads` is left alone, moments and step count included (torch skips a parameter whose .grad is None).
`state_dict()` / `load_state_dict()` give and take the moments and step counts, for resumable checkpoints.
"""

from __future__ import annotations

import math

from ..backend import array_module, to_numpy
from ..errors import InputError


def decay_matrices_only(name: str, p) -> bool:
    """The usual exclusion (and tools/train_demo.py's): decay weight matrices, not biases or layer norms."""
    return p.ndim >= 2 and "norm" not in name


class AdamW:
    """torch.optim.AdamW over `params`: a minipegx model (its named_parameters()) or a dict name -> array.

    decay: None decays every parameter (torch's default for one parameter group); or a predicate
    decay(name, array) -> bool, e.g. decay_matrices_only, for two groups (decayed / not decayed)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decay=None):
        self.params = _named(params)
        _check_hyper(lr, betas, eps, weight_decay)
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), tuple(map(float, betas)), float(eps), \
            float(weight_decay)
        bad = [n for n, p in self.params.items() if not getattr(getattr(p, "flags", None), "writeable", True)]
        if bad:
            raise InputError(f"AdamW updates parameters in place, but {bad[0]} is read-only (a view of the "
                             "checkpoint file); take the parameters from minipegx.training.named_parameters(model)")
        self.decays = {n: True if decay is None else bool(decay(n, p)) for n, p in self.params.items()}
        self.m, self.v, self.t = {}, {}, {}      # per name: first moment, second moment, step count
        self.steps = 0                           # step() calls: what a schedule counts

    def step(self, grads: dict) -> None:
        """One update of every parameter that has a gradient in `grads` (a dict keyed like the parameters)."""
        unknown = [n for n in grads if n not in self.params]
        if unknown:
            raise InputError(f"a gradient for {unknown[0]!r}, which is not one of the optimizer's parameters "
                             f"({len(self.params)} of them, e.g. {next(iter(self.params))!r})")
        b1, b2 = self.betas
        self.steps += 1
        for name, g in grads.items():
            p = self.params[name]
            if g.shape != p.shape:
                raise InputError(f"the gradient of {name} has shape {tuple(g.shape)}, its parameter {tuple(p.shape)}")
            xp = array_module(p)
            if name not in self.m:
                self.m[name], self.v[name], self.t[name] = xp.zeros_like(p), xp.zeros_like(p), 0
            m, v = self.m[name], self.v[name]
            g = g.astype(p.dtype, copy=False)
            self.t[name] += 1
            t = self.t[name]
            # In place, through two scratch arrays, in torch's order of operations (so float64 agrees to the bit).
            if self.decays[name] and self.weight_decay != 0:
                p *= 1 - self.lr * self.weight_decay
            tmp = xp.subtract(g, m)
            tmp *= 1 - b1
            m += tmp                                             # m + (1 - b1)(g - m): torch's lerp_, weight < 0.5
            v *= b2
            xp.multiply(g, 1 - b2, out=tmp)
            tmp *= g
            v += tmp                                             # v b2 + (1 - b2) g g: addcmul_(g, g, 1 - b2)
            step_size = self.lr / (1 - b1 ** t)
            xp.sqrt(v, out=tmp)
            tmp /= math.sqrt(1 - b2 ** t)
            tmp += self.eps                                      # denom = sqrt(v) / sqrt(1 - b2^t) + eps
            update = xp.multiply(m, -step_size)
            update /= tmp
            p += update                                          # addcdiv_(m, denom, value=-step_size)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """{"hyper": {...}, "steps": n, "step": {name: t}, "arrays": {"m.NAME": ..., "v.NAME": ...}} (NumPy)."""
        arrays = {}
        for name in self.m:
            arrays[f"m.{name}"], arrays[f"v.{name}"] = to_numpy(self.m[name]), to_numpy(self.v[name])
        return {"hyper": {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                          "weight_decay": self.weight_decay},
                "steps": self.steps, "step": dict(self.t), "arrays": arrays}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() gave (the moments go to the parameters' device and dtype)."""
        from ..backend import to_device

        for name, t in state["step"].items():
            if name not in self.params:
                raise InputError(f"the optimizer state holds {name!r}, which is not one of this model's parameters; "
                                 "was it saved for another model?")
            p = self.params[name]
            xp = array_module(p)
            m, v = state["arrays"][f"m.{name}"], state["arrays"][f"v.{name}"]
            if tuple(m.shape) != tuple(p.shape):
                raise InputError(f"the saved moments of {name} have shape {tuple(m.shape)}, the parameter "
                                 f"{tuple(p.shape)}")
            self.m[name], self.v[name] = to_device(m, xp, p.dtype).copy(), to_device(v, xp, p.dtype).copy()
            self.t[name] = int(t)
        self.steps = int(state.get("steps", max(self.t.values(), default=0)))
        self.lr = float(state.get("hyper", {}).get("lr", self.lr))


def _named(params) -> dict:
    if isinstance(params, dict):
        return params
    from .params import named_parameters   # views into model.params, tied weights once

    make_writable(params)
    return named_parameters(params)


def make_writable(model) -> None:
    """Give every read-only parameter of `model` a writable copy of its own, in model.params.

    from_pretrained keeps float32 weights as read-only views of the memory-mapped checkpoint file (no copy, and
    the file must not change under a reader); training updates them in place, so it needs its own arrays."""
    from ..tree import tree_map

    def own(a):
        flags = getattr(a, "flags", None)
        return a.copy() if flags is not None and not getattr(flags, "writeable", True) else a

    model.params = tree_map(own, model.params)


def _check_hyper(lr, betas, eps, weight_decay):
    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if not (number(lr) and lr >= 0):
        raise InputError(f"lr must be a finite number >= 0, got {lr!r}")
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(number(b) and 0 <= b < 1 for b in betas)):
        raise InputError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if not (number(eps) and eps >= 0):
        raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
    if not (number(weight_decay) and weight_decay >= 0):
        raise InputError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")


__all__ = ["AdamW", "decay_matrices_only", "make_writable"]
