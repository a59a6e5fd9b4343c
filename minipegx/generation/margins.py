"""How close a search came to deciding otherwise: the smallest error in the log-probs that could flip one of
its decisions.

Two machines compute the same logits up to rounding (another BLAS sums in another order: the tolerance
ladder of minipegx.tolerances bounds it), and a search decides by comparing scores. Where two candidates
are nearly tied, one machine may keep one and the other machine the other: then "the generated ids equal
X" is a statement about one machine's rounding, not about the model. This module measures, along the
search this machine runs, the smallest per-step log-prob error that could change any decision
(`flip_threshold`). A test that asserts generated ids exactly first asserts that this threshold is above
the error the ladder allows (tests/ties.py); where it is not, the test must assert something robust instead.

Greedy search decides at each step between the best and the second-best token: their log-probs differ by
`gap`, and if each can be off by e, the choice can flip only when 2 e >= gap, so the step's threshold is
gap / 2. Beam search compares cumulative scores, sums of `step` log-probs each: two candidates' scores can
move apart by 2 e step, so each comparison's threshold is gap / (2 step). The comparisons that matter are
the ones whose outcome changes something: adjacent candidates (sorted by score) of different fates (kept,
finished, pruned), the best finished hypothesis against the second (the one returned), and the
early-stopping test (the best alive beam against the worst finished hypothesis). Scores that share their
first tokens share those log-probs to the last bit, so only the steps since two sequences parted count. Comparisons against the
(C+1)-th continuation, which no step record keeps, are not counted.
Shape legend: B inputs, W beams, C candidates per input.
"""

from __future__ import annotations

import math

from ..backend import array_module, to_numpy
from .beam import beam_search_steps
from .options import fail, resolve_options
from .search import greedy_steps


def greedy_thresholds(steps):
    """Per step, per row [N], the smallest log-prob error that could flip that row's greedy choice:
    (top-1 - top-2) / 2 for the rows still generating (a row that chooses EOS now counts), inf for the rows
    fed pad after their EOS. `steps` are greedy_steps(...) records."""
    out, generating = [], None
    for s in steps:
        lp = to_numpy(s.top_logprobs)                                # [N, 5] best first
        xp = array_module(lp)
        if generating is None:
            generating = xp.ones(len(lp), dtype=bool)                # [N]
        gaps = lp[:, 0] - lp[:, 1] if lp.shape[1] > 1 else xp.full(len(lp), xp.inf)   # [N]
        out.append(xp.where(generating, gaps / 2, xp.inf))          # [N]
        generating = ~to_numpy(s.finished)
    return out


def diverged(a, b):
    """Generated tokens since two sequences [..., S] (start token first) parted: the steps whose log-probs
    are not shared. Shared steps hold the very same numbers in both scores, so their error cancels."""
    same = (a == b).cumprod(axis=-1).sum(axis=-1)                    # [...] common prefix, start token in
    return a.shape[-1] - same


def beam_thresholds(steps, length_penalty, early_stopping, max_length, returned=1):
    """Per step, the smallest per-step log-prob error that could flip a beam-search decision (see the
    module's docstring), then the ranking of the `returned` best hypotheses (and the next). `steps` are
    beam_search_steps(...) records; everything is brought to the host once per step."""
    out, beams, last = [], None, None
    for s in steps:
        n = s.step
        scores = to_numpy(s.candidate_scores)                        # [B, C] cumulative log-probs, best first
        xp = array_module(scores)
        if beams is None:
            beams = to_numpy(s.beams)[:, :, :1]                      # [B, W, 1] the start token
        parents, tokens = to_numpy(s.candidate_parents), to_numpy(s.candidate_tokens)      # [B, C]
        extended = xp.take_along_axis(beams, parents[:, :, None], axis=1)                  # [B, C, n]
        cand = xp.concatenate([extended, tokens[:, :, None]], axis=-1)                     # [B, C, n+1]
        fate = to_numpy(s.kept).astype(int) + 2 * to_numpy(s.finished)  # [B, C] 0 pruned, 1 kept, 2 finished
        differ = fate[:, 1:] != fate[:, :-1]                         # [B, C-1] adjacent pairs of other fates
        apart = diverged(cand[:, 1:], cand[:, :-1])                  # [B, C-1] steps not shared
        counted = differ & xp.isfinite(scores[:, 1:])               # a -inf candidate (masked) ties nothing
        ratios = (scores[:, :-1][counted] - scores[:, 1:][counted]) / (2 * apart[counted])
        worst = float(ratios.min()) if ratios.size else math.inf

        beams = to_numpy(s.beams)                                    # [B, W, n+1] alive after this step
        alive_scores = to_numpy(s.beam_scores)                       # [B, W]
        pool, done, hyps = to_numpy(s.hypothesis_scores), to_numpy(s.hypothesis_done), to_numpy(s.hypotheses)
        if early_stopping is not True:                               # can the best alive beam still win?
            norm = ((max_length - 1) if (early_stopping == "never" and length_penalty > 0) else n) ** length_penalty
            for b in xp.flatnonzero(done.all(axis=1)):
                w = int(pool[b].argmin())
                k = min(beams.shape[-1], hyps.shape[-1])
                gap = abs(alive_scores[b, 0] / norm - pool[b, w]) * norm
                worst = min(worst, float(gap) / (2 * max(1, int(diverged(beams[b, 0, :k], hyps[b, w, :k])))))
        out.append(worst)
        last = (pool, done, hyps, n)
    if last is not None:                     # the returned hypotheses' ranking, and the first one not returned
        pool, done, hyps, n = last
        order = (-pool).argsort(axis=1)                              # [B, W] best first
        for b in range(len(pool)):
            for r in range(min(returned, pool.shape[1] - 1)):
                i, j = order[b, r], order[b, r + 1]
                if done[b, i] and done[b, j]:
                    gap = float(pool[b, i] - pool[b, j]) * n ** length_penalty
                    out.append(gap / (2 * max(1, int(diverged(hyps[b, i], hyps[b, j])))))
    return out


def flip_threshold(model, input_ids, attention_mask=None, **options) -> float:
    """The smallest per-step error in the log-probs that could change what `generate` returns for these
    inputs and options (greedy or beam search; not sampling). Decisions that no such error reaches are
    the same on every machine whose logits agree with this one's within that error."""
    opts = resolve_options(model, options)
    if opts.do_sample:
        fail("flip_threshold measures greedy and beam search; sampling draws, it does not compare: "
             "pass do_sample=False")
    if opts.num_beams == 1:
        rows = greedy_thresholds(greedy_steps(model, input_ids, attention_mask, **options))
        return min((float(r.min()) for r in rows), default=math.inf)
    steps = beam_search_steps(model, input_ids, attention_mask, **options)
    return min(beam_thresholds(steps, opts.length_penalty, opts.early_stopping, opts.max_length,
                               opts.num_return_sequences), default=math.inf)
