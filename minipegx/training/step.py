"""One optimizer step: gradients of one or more micro-batches, clipping by global norm, a scheduled AdamW update.

    opt = AdamW(model, lr=3e-4, decay=decay_matrices_only)
    sched = Schedule(3e-4, warmup_steps=20, total_steps=500)
    stats = train_step(model, opt, [batch_a, batch_b], schedule=sched, max_grad_norm=1.0)
    stats.loss, stats.grad_norm, stats.lr

Gradient accumulation weights each micro-batch by its share of the label tokens. The loss is a mean over the
tokens whose label is not -100, so for micro-batches i with n_i such tokens (N in all)

    loss = sum_i (n_i / N) loss_i          grads = sum_i (n_i / N) grads_i

which is the loss and the gradient of the whole batch at once, one micro-batch's activations in memory at a time.

Clipping is torch.nn.utils.clip_grad_norm_'s: the norm of all gradients as one vector, ||g||, and every gradient
times min(1, max_norm / (||g|| + 1e-6)).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..backend import array_module
from ..errors import InputError, NumericalError


@dataclass(frozen=True)
class Batch:
    """One (micro-)batch: input_ids / attention_mask [B, T], labels [B, S] (-100: ignored), optional
    decoder_attention_mask [B, S]."""
    input_ids: object
    attention_mask: object
    labels: object
    decoder_attention_mask: object = None

    @property
    def label_tokens(self) -> int:
        """Labels that count in the loss (not -100)."""
        return int((self.labels != -100).sum())


@dataclass(frozen=True)
class StepStats:
    loss: float            # the (token-weighted) mean loss of the step's batches, before the update
    grad_norm: float       # the global gradient norm before clipping
    lr: float              # the learning rate of the update
    label_tokens: int      # tokens that counted in the loss
    input_tokens: int      # real (unpadded) encoder tokens
    seconds: float


def global_norm(grads: dict) -> float:
    """sqrt of the sum of squares of every gradient entry (torch's total_norm with norm_type 2: the norm of the
    per-tensor norms). The sums stay on the device; one number comes back."""
    if not grads:
        return 0.0
    xp = array_module(next(iter(grads.values())))
    squares = xp.stack([xp.sum(g * g) for g in grads.values()])       # [number of tensors]
    return float(xp.sqrt(squares.sum()))


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale every gradient in place by min(1, max_norm / (norm + 1e-6)); returns the norm before clipping."""
    norm = global_norm(grads)
    coef = min(1.0, max_norm / (norm + 1e-6))
    if coef < 1.0:                        # torch multiplies by 1.0 too; skipping it changes no bit
        for g in grads.values():
            g *= coef
    return norm


def accumulate(total: dict | None, grads: dict, weight: float) -> dict:
    """total + weight * grads, in place in `total` (None: start from weight * grads)."""
    if total is None:
        return {name: g * weight for name, g in grads.items()}
    for name, g in grads.items():
        if name in total:
            total[name] += g * weight
        else:
            total[name] = g * weight
    return total


def as_batches(batches) -> list[Batch]:
    """A Batch, a dict with its fields, or a list of either -> [Batch]."""
    if isinstance(batches, (Batch, dict)):
        batches = [batches]
    out = []
    for b in batches:
        if isinstance(b, dict):
            unknown = set(b) - {"input_ids", "attention_mask", "labels", "decoder_attention_mask"}
            if unknown:
                raise InputError(f"a batch has unknown field(s) {sorted(unknown)}; give input_ids, attention_mask, "
                                 "labels and optionally decoder_attention_mask")
            b = Batch(**b)
        if not isinstance(b, Batch):
            raise InputError(f"a batch must be a minipegx.training.Batch or a dict, got {type(b).__name__}")
        out.append(b)
    if not out:
        raise InputError("train_step needs at least one batch")
    return out


def train_step(model, optimizer, batches, *, schedule=None, max_grad_norm: float | None = 1.0,
               label_smoothing: float = 0.0, recompute: bool = False) -> StepStats:
    """Gradients of `batches` (one batch, or several accumulated), clipped, then one AdamW update in place.

    schedule: a callable step -> lr (e.g. Schedule), asked with the optimizer's step count before the update;
    None keeps optimizer.lr. max_grad_norm: None or 0 turns clipping off (the norm is still reported)."""
    from .loss import loss_and_grads   # the backward pass

    t0 = time.perf_counter()
    batches = as_batches(batches)
    counts = [b.label_tokens for b in batches]
    n = sum(counts)
    if n == 0:
        raise InputError("every label of this step is -100: there is nothing to learn from")
    loss, grads = 0.0, None
    for b, k in zip(batches, counts):
        if k == 0:
            continue
        loss_i, grads_i = loss_and_grads(model, b.input_ids, b.attention_mask, b.labels,
                                         decoder_attention_mask=b.decoder_attention_mask,
                                         label_smoothing=label_smoothing, recompute=recompute)
        loss += loss_i * (k / n)
        grads = accumulate(grads, grads_i, k / n) if len(batches) > 1 else grads_i
    if not math.isfinite(loss):
        raise NumericalError(f"the loss is {loss} at step {optimizer.steps + 1}; lower the learning rate, or "
                             "check the data (labels outside the vocabulary?)")
    norm = clip_grad_norm(grads, max_grad_norm) if max_grad_norm else global_norm(grads)
    if not math.isfinite(norm):
        raise NumericalError(f"the gradient norm is {norm} at step {optimizer.steps + 1}; lower the learning rate")
    if schedule is not None:
        optimizer.lr = float(schedule(optimizer.steps))
    optimizer.step(grads)
    input_tokens = sum(int(b.attention_mask.sum()) for b in batches)
    return StepStats(float(loss), norm, optimizer.lr, n, input_tokens, time.perf_counter() - t0)


__all__ = ["Batch", "StepStats", "train_step", "clip_grad_norm", "global_norm", "accumulate", "as_batches"]
