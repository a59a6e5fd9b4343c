# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Parity testing for a course: plant a bug, let the report find it
#
# > **No torch needed.** The reference here is minipegx's own, unmodified model, which this project's test
# > suite checks against Hugging Face transformers and against committed reference outputs. With
# > transformers and torch installed (`pip install -e ".[test]" "torch==2.13.0"`), the last section also
# > compares with transformers itself; without them it says so and skips.
#
# A parity report runs two models on the same input and compares **every intermediate**: minipegx records
# its activations in a `trace` dict under the Hugging Face module names (`model.encoder.layers.1.self_attn`).
# The report lists them in execution order and names the **first divergence**: the first place beyond
# `|err| <= atol + rtol * max|ref|` (1e-4 + 1e-5 · scale, asserted below; fp32 summation order alone gives
# ~1e-7 relative per operation, so only real bugs cross it).
#
# With `patch={"minipegx.layers.softmax": my_fn}` your function replaces minipegx's wherever the model calls
# it. The worked bugs below are in functions the graded exercises do **not** ask for (softmax, the causal
# mask, the decoder's positions); at the end you use the same tool on your own exercise functions.

# %%
import numpy as np

import minipegx
from minipegx import layers
from minipegx.course.check import has_transformers
from minipegx.course.diverge import compare_with_minipegx

path = minipegx.demo_model_path("short")
model = minipegx.from_pretrained(path)
tok = minipegx.Tokenizer.from_pretrained(path)
text = "\n\n".join(minipegx.example_document("short").split("\n\n")[:2])   # two paragraphs: quick, 4 blocks
batch = tok([text], return_tensors="np")
ids, mask = batch["input_ids"], batch["attention_mask"]
cfg = model.config
print("input [B, T] =", ids.shape, f"-> {-(-ids.shape[1] // cfg.block_size)} blocks of K={cfg.block_size}")
assert ids.shape[1] == 193 and -(-ids.shape[1] // cfg.block_size) == 4


def check(steps=2, **patch):
    """Compare the model with minipegx functions replaced by yours against minipegx's own; print the verdict."""
    report = compare_with_minipegx(model, ids, mask, steps=steps,
                                   patch={f"minipegx.{k.replace('__', '.')}": f for k, f in patch.items()})
    bad = [r for r in report.rows if not r.ok]
    print(f"{len(report.rows)} intermediates compared, {len(bad)} beyond tolerance;",
          "all within tolerance" if report.ok else f"first divergence: {report.first_divergence}")
    return report


# %% [markdown]
# First nothing replaced: the forward pass, layer by layer, then two greedy decoding steps (each reusing
# the cache). Everything agrees exactly.

# %%
report = check()
assert report.ok and report.max_abs_err == 0.0 and (report.atol, report.rtol) == (1e-4, 1e-5)
print("\n".join(str(report).splitlines()[:8]))

# %% [markdown]
# Look at the `max |ref|` column: the residual stream of a trained model (never normalized, only added to)
# grows layer after layer, and float32 rounding is relative to it; that is why the tolerance has a relative
# part.

# %%
rows = {r.name: r for r in report.rows}
layer_outputs = [rows[f"model.encoder.layers.{i}"] for i in range(cfg.encoder_layers)]
print("encoder layer outputs, max |ref|:", [f"{r.ref_scale:.1f}" for r in layer_outputs])
assert all(a.ref_scale < b.ref_scale for a, b in zip(layer_outputs, layer_outputs[1:]))   # grows with depth

# %% [markdown]
# ## Bug 1 · a softmax over the wrong axis
#
# Scores are `[..., queries, keys]`: each query's row must sum to 1 over the **keys**, the last axis. A
# softmax over axis -2 makes each *key's* column sum to 1 instead.
#
# **Predict** before running: which intermediate diverges first, and why not the embeddings or the layer
# norms before it?

# %%
def softmax_over_queries(s):
    e = np.exp(s - s.max(axis=-2, keepdims=True))
    return e / e.sum(axis=-2, keepdims=True)                  # BUG: normalized over the queries


report = check(layers__softmax=softmax_over_queries)
assert report.first_divergence == "model.encoder.layers.0.self_attn"

# %% [markdown]
# The first attention of the encoder: everything before it (embeddings, positions, the layer norms) does
# not call softmax. Now fix it (one axis) and run the check again; it should print "all within tolerance".

# %% [markdown]
# ## Bug 2 · a causal mask that hides the step itself
#
# The decoder's self-attention lets step i see steps 0 … i. `causal_mask(S, past, dtype, xp)` returns the
# additive mask `[1, 1, S, past+S]`. Below, `<` instead of `<=`: a step no longer sees itself.
#
# **Predict**: does the first decoder pass (one start token, nothing cached) diverge?

# %%
def causal_mask_strict(S, past, dtype, xp, decoder_attention_mask=None):
    C = past + S
    allowed = xp.arange(C)[None, :] < (past + xp.arange(S))[:, None]      # BUG: < hides the step itself
    return xp.where(allowed[None, None], 0.0, xp.finfo(dtype).min).astype(dtype)   # [1, 1, S, C]


report = check(decoder__causal_mask=causal_mask_strict)
assert report.first_divergence == "step 1: model.decoder.layers.0.self_attn"

# %% [markdown]
# No: at the first step the start token's only key is itself, every score is masked alike, and a softmax
# over equal scores still gives that one key all the weight. The bug shows at the first cached step, where
# a step should see two keys and sees one. A test on a single decoding step would have missed it.
#
# ## Bug 3 · positions that restart after the cache
#
# A new decoding step's position continues after the cached steps (`start` = the number of cached steps).
# Ignoring `start` gives every step position 0.

# %%
def positions_from_zero(start, length, dim, xp, dtype="float32"):
    return layers.sinusoidal_positions(0, length, dim, xp, dtype)        # BUG: ignores `start`


report = check(decoder__sinusoidal_positions=positions_from_zero)
assert report.first_divergence == "step 1: model.decoder.embed_positions"

# %% [markdown]
# ## Your turn: your exercise functions in the model
#
# The graded exercises (`exercises/pegasus_x_exercises_student.ipynb`) ask for `layer_norm`, `ffn`,
# `sinusoidal_positions`, `global_local_attention`, `stagger`, `encoder_layer`, the decoder's attention and
# `beam_step`. Their check cells say where your function differs on small inputs; this report says where the
# whole model first differs with it in place. Paste one of your functions into a cell below and run, e.g.
#
#     check(layers__layer_norm=layer_norm)
#     check(encoder__global_local_attention=global_local_attention)
#     check(encoder__stagger=stagger)
#
# The name after `check(` is the module and the function, joined by two underscores. A bug in
# `global_local_attention` shows at `model.encoder.layers.0.self_attn`; one that only the staggered layers
# meet (a wrong `stagger`), at layer 1.

# %% [markdown]
# ## With transformers as the reference
#
# `minipegx.parity.compare` makes the same report with transformers' `PegasusXForConditionalGeneration` as
# the reference (its intermediates caught with forward hooks on the same modules). It needs torch and
# transformers.

# %%
if has_transformers():
    from minipegx import parity

    reference = parity.load_reference(path)
    report = parity.compare(None, ids, mask, model=model, reference=reference, steps=2)
    print("\n".join(str(report).splitlines()[:6]), "\n...\n", str(report).splitlines()[-1])
    assert report.ok
else:
    print("torch and transformers are not installed: this comparison is skipped (everything above ran without them)")
