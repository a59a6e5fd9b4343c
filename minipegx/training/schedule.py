"""Learning-rate schedules: linear warmup, then cosine or linear decay (transformers' get_*_schedule_with_warmup).

    sched = Schedule(lr=1e-3, warmup_steps=100, total_steps=1000, kind="cosine")
    opt.lr = sched(step)        # step = 0, 1, ... : the lr of the step about to be taken

With min_lr_ratio = 0 the factors are transformers' exactly (get_cosine_schedule_with_warmup,
get_linear_schedule_with_warmup, get_constant_schedule_with_warmup, as LambdaLR applies them):

    warmup      step < W:  step / W
    cosine      0.5 * (1 + cos(pi * progress))          progress = (step - W) / (total - W), in [0, 1]
    linear      1 - progress
    constant    1

min_lr_ratio = r keeps a floor: factor' = r + (1 - r) * factor after warmup (tools/train_demo.py decays to 5%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError

KINDS = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class Schedule:
    lr: float
    warmup_steps: int = 0
    total_steps: int = 1
    kind: str = "cosine"
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise InputError(f"the schedule's lr must be a finite number >= 0, got {self.lr!r}")
        if self.kind not in KINDS:
            raise InputError(f"unknown schedule kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        for name in ("warmup_steps", "total_steps"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                raise InputError(f"{name} must be a whole number >= 0, got {v!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise InputError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")

    def factor(self, step: int) -> float:
        """The multiplier of lr at `step` (0-based, the step about to be taken)."""
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        if self.kind == "cosine":
            f = max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        else:
            f = max(0.0, 1.0 - progress)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * f if self.min_lr_ratio else f

    def __call__(self, step: int) -> float:
        return self.lr * self.factor(step)


__all__ = ["Schedule", "KINDS"]
