"""Generated ids asserted exactly must not hang on a near-tie that another CPU's kernels could flip (issue 24).

Another BLAS sums in another order, so two machines' logits differ by up to the tolerance ladder's bound for
them, and a log-prob (a logit minus the log-sum-exp of all of them) by up to twice that: `logprob_noise`.
`minipegx.generation.margins.flip_threshold` gives the smallest per-step log-prob error that could change
any decision of a search. When it is larger than the noise, the ids are the same on every machine whose
logits stay within the ladder, and asserting them exactly is safe; when it is not, a test must assert what
is robust instead (`assert_same_unless_tied`).
"""

from __future__ import annotations

import numpy as np

from minipegx.generation.margins import flip_threshold
from minipegx.tolerances import LONG_INPUTS


def logprob_noise(model, input_ids, attention_mask=None, rung=LONG_INPUTS):
    """2 x the rung's bound on logits at this input's scale: how far one log-prob may move between machines.
    The scale is max |logit| of the first decoding step (a model's logits keep their scale along a summary)."""
    start = [[model.config.decoder_start_token_id]] * np.asarray(input_ids).shape[0]
    logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=start).logits
    return 2 * rung.bound(logits)


def assert_no_near_tie(model, input_ids, attention_mask=None, rung=LONG_INPUTS, **options):
    """The search's decisions survive any per-step log-prob error the rung allows, so its ids are a fact about
    the model, not about one machine's rounding."""
    threshold = flip_threshold(model, input_ids, attention_mask, **options)
    noise = logprob_noise(model, input_ids, attention_mask, rung)
    assert threshold > noise, (
        f"a decision of this search ({options}) flips under a log-prob error of {threshold:.2e}, within the "
        f"{noise:.2e} two machines' kernels may differ by: assert something robust (a margin, an edit distance) "
        "instead of these exact ids, or choose an input without a near-tie")


def assert_same_unless_tied(mine, theirs, model, input_ids, attention_mask=None, rung=LONG_INPUTS, **options):
    """minipegx's ids equal the reference's; where they do not, the only acceptable reason is a decision within
    the noise (a tie two libraries' rounding may break differently), and the message says which it was."""
    mine, theirs = np.asarray(mine).tolist(), np.asarray(theirs).tolist()
    if mine == theirs:
        return
    threshold = flip_threshold(model, input_ids, attention_mask, **options)
    noise = logprob_noise(model, input_ids, attention_mask, rung)
    assert threshold <= noise, (
        f"generated ids differ from the reference's although no decision is within the noise "
        f"(smallest flip threshold {threshold:.2e} > {noise:.2e}):\n  minipegx     {mine}\n  reference    {theirs}")
