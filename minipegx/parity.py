"""Side-by-side parity with transformers: every intermediate activation, layer by layer and decoding
step by step, with the first place that diverges named.

    report = minipegx.parity.compare("path/to/checkpoint", input_ids, attention_mask, steps=3)
    print(report)            # a table; report.first_divergence -> "model.encoder.layers.1.self_attn"

minipegx records its intermediates in a `trace` dict keyed by the Hugging Face module names; the
reference's are captured with forward hooks on the same modules. A course swaps in a student's layer
with `patch={"minipegx.encoder.global_local_attention": student_fn}` and reads where it diverges.

This is reference tooling: compare imports torch and transformers (the `test` extra), the model never does;
check_function (the course kit, minipegx.course) grades a student's function without them.
Command line: `python -m minipegx.parity CHECKPOINT --text "..." [--steps 3]` (or `minipegx parity`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backend import to_numpy
from .hf_reference import _reference_modules, load_reference  # noqa: F401  (public here too)
from .patching import patched  # noqa: F401  (public here too)
from .tolerances import LONG_INPUTS

# A place diverges when |minipegx - transformers| > ATOL + RTOL * max|transformers|: fp32 summation
# order alone gives ~1e-7 relative per op, so 1e-5 relative plus 1e-4 absolute flags real bugs only.
ATOL, RTOL = LONG_INPUTS.atol, LONG_INPUTS.rtol


@dataclass
class Row:
    name: str
    shape: tuple
    max_abs_err: float
    ref_scale: float
    ok: bool


@dataclass
class ParityReport:
    """What `compare` found: rows, one per intermediate in execution order (name, shape, max_abs_err,
    ref_scale, ok); first_divergence, the first name beyond tolerance (or None); ok; max_abs_err; the
    atol and rtol used. str(report) is a table; notebooks render it as HTML."""
    rows: list = field(default_factory=list)
    atol: float = ATOL
    rtol: float = RTOL

    @property
    def first_divergence(self):
        """Name of the first intermediate (in execution order) beyond tolerance, or None."""
        return next((r.name for r in self.rows if not r.ok), None)

    @property
    def max_abs_err(self) -> float:
        """The largest max|mine - ref| over every row."""
        return max((r.max_abs_err for r in self.rows), default=0.0)

    @property
    def ok(self) -> bool:
        """True when no intermediate is beyond the tolerance."""
        return self.first_divergence is None

    def __str__(self):
        lines = [f"{'intermediate':58s} {'shape':>18s} {'max |err|':>10s} {'max |ref|':>10s}"]
        for r in self.rows:
            flag = "" if r.ok else "   <-- diverges" if r.name == self.first_divergence else "   x"
            lines.append(f"{r.name:58s} {str(r.shape):>18s} {r.max_abs_err:10.2e} {r.ref_scale:10.2e}{flag}")
        verdict = "all within tolerance" if self.ok else f"first divergence: {self.first_divergence}"
        lines.append(f"tolerance |err| <= {self.atol:g} + {self.rtol:g} * max|ref|; {verdict}")
        return "\n".join(lines)

    def _repr_html_(self):  # notebooks
        return "<pre>" + str(self).replace("<", "&lt;") + "</pre>"


def _hook_reference(ref):
    """Forward hooks on every named module; each call's output is appended under its name."""
    captured, handles = {}, []
    for name, module in ref.named_modules():
        def hook(_module, _inputs, output, name=name):
            captured.setdefault(name, []).append(output)
        handles.append(module.register_forward_hook(hook))
    return captured, handles


def _reference_value(captured, key):
    """The reference tensor for a minipegx trace key (the '.global' suffix is the second output)."""
    base, second = (key[:-7], True) if key.endswith(".global") else (key, False)
    outs = captured.get(base)
    if not outs:
        return None
    out = outs[0]
    if isinstance(out, (tuple, list)):
        out = out[1] if second else out[0]
    elif second:
        return None
    return out.detach().float().numpy() if hasattr(out, "detach") else None


def _compare_trace(trace, captured, prefix, report):
    for key, mine in trace.items():
        ref = _reference_value(captured, key)
        if ref is None:
            continue
        mine = to_numpy(mine).astype(np.float64)
        if mine.shape != ref.shape and ref.shape[1:] == mine.shape:   # positions: [T, M] vs [B, T, M]
            ref = ref[0]
        if mine.shape != ref.shape:
            report.rows.append(Row(prefix + key, mine.shape, float("inf"), 0.0, False))
            continue
        err = float(np.abs(mine - ref).max()) if ref.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        report.rows.append(Row(prefix + key, mine.shape, err, scale, err <= report.atol + report.rtol * scale))


def compare(checkpoint, input_ids, attention_mask=None, decoder_input_ids=None, steps=0, model=None,
            reference=None, patch=None, atol=ATOL, rtol=RTOL) -> ParityReport:
    """Run minipegx and transformers on the same input and compare every intermediate.

    checkpoint: a checkpoint directory (both models load from it) — or pass `model` (minipegx) and
    `reference` (a transformers PegasusXForConditionalGeneration) directly.
    decoder_input_ids default to the decoder start token. steps > 0 then decodes that many more
    tokens greedily (the reference's choice, fed to both) with each side's cache, comparing each step.
    """
    torch, transformers = _reference_modules()
    from .model import from_pretrained

    if model is None:
        model = from_pretrained(checkpoint)
    if reference is None:
        reference = load_reference(checkpoint)
    ids = np.asarray(to_numpy(input_ids))
    ids = ids[None] if ids.ndim == 1 else ids
    mask = None if attention_mask is None else np.asarray(to_numpy(attention_mask)).reshape(ids.shape)
    dec = np.full((ids.shape[0], 1), model.config.decoder_start_token_id) if decoder_input_ids is None \
        else np.asarray(to_numpy(decoder_input_ids)).reshape(ids.shape[0], -1)
    tmask = None if mask is None else torch.as_tensor(mask)

    report = ParityReport(atol=atol, rtol=rtol)
    captured, handles = _hook_reference(reference)
    try:
        with patched(patch), torch.no_grad():
            trace = {}
            out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=True, trace=trace)
            ref_out = reference(input_ids=torch.as_tensor(ids), attention_mask=tmask,
                                decoder_input_ids=torch.as_tensor(dec), use_cache=True)
            _compare_trace(trace, captured, "", report)
            cache, past = ref_out.cache, out.past_key_values
            enc = (out.encoder_last_hidden_state,)
            ref_enc = (ref_out.encoder_last_hidden_state,)
            for step in range(1, steps + 1):
                nxt = ref_out.logits[:, -1].argmax(-1, keepdim=True)          # [B, 1]
                captured.clear()
                trace = {}
                out = model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=nxt.numpy(),
                            past_key_values=past, use_cache=True, trace=trace)
                ref_out = reference(encoder_outputs=ref_enc, attention_mask=tmask, decoder_input_ids=nxt,
                                    cache=cache, use_cache=True)
                _compare_trace(trace, captured, f"step {step}: ", report)
                cache, past = ref_out.cache, out.past_key_values
    finally:
        for h in handles:
            h.remove()
    return report


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="minipegx parity", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a PEGASUS-X checkpoint directory (config.json, weights, spiece.model)")
    ap.add_argument("--text", default="PEGASUS-X reads long documents in blocks, with a few global tokens.")
    ap.add_argument("--steps", type=int, default=2, help="greedy decoding steps to compare after the forward")
    args = ap.parse_args(argv)
    from .tokenizer import Tokenizer

    batch = Tokenizer.from_pretrained(args.checkpoint)([args.text], return_tensors="np")
    report = compare(args.checkpoint, batch["input_ids"], batch["attention_mask"], steps=args.steps)
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())


def check_function(name, fn, with_transformers=None, require_own=True):
    """Grade a student's version of a public layer function by its name: minipegx.course.check_function
    (require_own=False grades what a function built on minipegx's own computes, for planted bugs)."""
    from .course import check_function as check

    return check(name, fn, with_transformers=with_transformers, require_own=require_own)
