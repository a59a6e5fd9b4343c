"""Where a patched model first differs from minipegx's own: the parity report without torch.

    report = minipegx.course.diverge.compare_with_minipegx(model, ids, mask, patch={...}, steps=2)
    print(report); report.first_divergence

The same report as minipegx.parity.compare (every intermediate of the `trace`, in execution order, then each
cached decoding step), with minipegx's unpatched run as the reference instead of transformers. minipegx's
own run is what the test suite checks against transformers and the committed goldens, so a course runs
this without torch; parity.compare is the same comparison with transformers as the reference.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..parity import ATOL, RTOL, ParityReport, Row
from ..patching import patched


def _run(model, ids, mask, steps, feed=None):
    """Traces of the forward pass and of `steps` cached greedy steps (fed `feed`'s tokens when given)."""
    dec = np.full((ids.shape[0], 1), model.config.decoder_start_token_id)
    trace = {}
    out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=True, trace=trace)
    traces, tokens = [trace], []
    for step in range(steps):
        nxt = feed[step] if feed is not None else np.asarray(to_numpy(out.logits))[:, -1].argmax(-1)[:, None]  # [B, 1]
        tokens.append(nxt)
        trace = {}
        out = model(encoder_outputs=(out.encoder_last_hidden_state,), attention_mask=mask, decoder_input_ids=nxt,
                    past_key_values=out.past_key_values, use_cache=True, trace=trace)
        traces.append(trace)
    return traces, tokens


def compare_with_minipegx(model, input_ids, attention_mask=None, patch=None, steps=0, atol=ATOL,
                          rtol=RTOL) -> ParityReport:
    """Every intermediate of `model` with `patch` applied against the same model without it."""
    ids = np.asarray(input_ids)
    ids = ids[None] if ids.ndim == 1 else ids
    mask = None if attention_mask is None else np.asarray(attention_mask).reshape(ids.shape)
    reference, tokens = _run(model, ids, mask, steps)
    with patched(patch):
        mine, _ = _run(model, ids, mask, steps, feed=tokens)
    report = ParityReport(atol=atol, rtol=rtol)
    for step, (ours, ref) in enumerate(zip(mine, reference)):
        prefix = f"step {step}: " if step else ""
        for key, want in ref.items():
            want = np.asarray(to_numpy(want), np.float64)
            got = ours.get(key)
            got = None if got is None else np.asarray(to_numpy(got), np.float64)
            if got is None or got.shape != want.shape:
                report.rows.append(Row(prefix + key, want.shape, float("inf"), 0.0, False))
                continue
            err = float(np.nan_to_num(np.abs(got - want), nan=np.inf).max()) if want.size else 0.0
            scale = float(np.abs(want).max()) if want.size else 0.0
            report.rows.append(Row(prefix + key, want.shape, err, scale, err <= atol + rtol * scale))
    return report
