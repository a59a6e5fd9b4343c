# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Long inputs: cost and scale, measured
#
# Full self-attention costs O(T²) time and memory per layer: at 16 384 tokens one layer's probabilities
# are H · T² floats. PEGASUS-X's encoder costs O(T · (K + G)): each token attends its block of K and
# the G global tokens, and the G global tokens attend all T (the paper's efficiency argument, and the
# reason PEGASUS-X runs 16k-token inputs; Phang, Zhao & Liu 2022,
# [arXiv:2208.04347](https://arxiv.org/abs/2208.04347)).
#
# Here we **measure** the demo-shaped encoder (M = 128, 3 layers, K = 64, G = 16) at 1k–16k tokens,
# look at the real size of its attention tensors, and set both against the cost model
# `viz.encoder_cost` and against full attention. Timings depend on your machine (and on what else runs
# on it); the shapes of the curves do not. The whole notebook runs in well under a minute.
#
# **Shape legend** (the same letters in every notebook, docstring and comment of minipegx):
# B batch, T tokens, P tokens padded to whole blocks, S decoder steps, N blocks, K block size,
# G global tokens, H heads, D head dim (M / H), F FFN width, M d_model, V vocabulary.

# %%
# %matplotlib inline
import dataclasses
import time
import tracemalloc

import numpy as np

import minipegx
from minipegx import viz

model = minipegx.from_pretrained(minipegx.demo_model_path("short"))   # the first (short) demo model
cfg = model.config
tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path("short"))
rng = np.random.default_rng(0)
lengths = [1024, 2048, 4096, 8192, 16384]
M, F, H = cfg.d_model, cfg.encoder_ffn_dim, cfg.encoder_attention_heads
assert (M, cfg.encoder_layers, cfg.block_size, cfg.num_global_tokens) == (128, 3, 64, 16)   # as the text says


def timed(fn, repeat=2):
    """Best wall time of `repeat` runs, and the peak memory NumPy allocated during the first."""
    tracemalloc.start()
    times = [_run(fn)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    times += [_run(fn) for _ in range(repeat - 1)]
    return min(times), peak


def _run(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t

_ = model.encode(rng.integers(105, cfg.vocab_size, size=(1, 512)))      # warm-up

# %% [markdown]
# ## 1. Time and memory of the encoder, 1k to 16k tokens
#
# Random token ids are enough: the cost does not depend on the text. `tracemalloc` sees NumPy's
# allocations, so its peak is the encoder's working memory (weights excluded: they were allocated
# before). Time and memory **per token** stay about constant — linear cost — up to the noise of a
# shared machine (best of 2 runs).

# %%
measured, peaks = {}, {}
print(f"{'tokens':>7} {'seconds':>8} {'us/token':>9} {'peak MiB':>9} {'KiB/token':>10} {'model GFLOP':>12}")
for T in lengths:
    ids = rng.integers(105, cfg.vocab_size, size=(1, T))
    measured[T], peaks[T] = timed(lambda: model.encode(ids))
    print(f"{T:7d} {measured[T]:8.3f} {measured[T] / T * 1e6:9.1f} {peaks[T] / 2**20:9.1f} {peaks[T] / T / 1024:10.1f} "
          f"{viz.encoder_cost(cfg, T)['flops'] / 1e9:12.2f}")
growth = lengths[-1] // lengths[0]
print(f"{growth}x the tokens: {measured[lengths[-1]] / measured[lengths[0]]:.1f}x the time, "
      f"{peaks[lengths[-1]] / peaks[lengths[0]]:.1f}x the memory")
assert 0.75 * growth < peaks[lengths[-1]] / peaks[lengths[0]] < 1.25 * growth   # memory: linear (time: see print)

# %% [markdown]
# ## 2. The attention tensors: measured bytes = the cost model
#
# With `output_attentions=True` the encoder returns each layer's probabilities in their blocked form,
# `local [B, H, N, K, G+K]` and `global [B, H, G, G+P]`. Their size is exactly what `encoder_cost`
# predicts as `score_bytes` (the largest layer: a staggered one, with one block more); full attention
# would need `[B, H, T, T]`.

# %%
print(f"{'tokens':>7} {'measured MiB':>13} {'cost model MiB':>15} {'full attention MiB':>19}")
for T in (1024, 4096, 16384):
    out = model.encode(rng.integers(105, cfg.vocab_size, size=(1, T)), output_attentions=True)
    largest = max(sum(a.nbytes for a in layer.values()) for layer in out.attentions)
    print(f"{T:7d} {largest / 2**20:13.2f} {viz.encoder_cost(cfg, T)['score_bytes'] / 2**20:15.2f} "
          f"{viz.encoder_cost(cfg, T, 'full')['score_bytes'] / 2**20:19.0f}")
    del out

# %% [markdown]
# ## 3. Full attention, measured on short inputs
#
# Full attention is PEGASUS-X with **one block that holds every token** (and no stagger): the same
# code, `block_size = T`. We time it only up to 2k tokens — at 16k one layer's probabilities alone
# would take 4 GiB — and let the cost model extrapolate.

# %%
full_measured = {}
print(f"{'tokens':>7} {'PEGASUS-X s':>12} {'full s':>8} {'full peak MiB':>14}")
for T in (512, 1024, 2048):
    ids = rng.integers(105, cfg.vocab_size, size=(1, T))
    full = dataclasses.replace(model, config=cfg.replace(block_size=T, stagger_local_blocks=False))
    full_measured[T], peak = timed(lambda: full.encode(ids))
    px, _ = timed(lambda: model.encode(ids))
    print(f"{T:7d} {px:12.3f} {full_measured[T]:8.3f} {peak / 2**20:14.1f}")

# %% [markdown]
# ## 4. Against the cost model
#
# `viz.plot_cost` draws the FLOPs and memory of both encoders against length (log-log), and — given
# the measured times — fits one FLOP rate to them and predicts the time of both. PEGASUS-X's line has
# slope 1 (linear in T); full attention's bends to slope 2 once its attention, 4·T²·M FLOPs per layer,
# outgrows the projections and the FFN, 8·T·M² + 4·T·M·F: beyond T ≈ 2M + F, which is 512 tokens for
# this small model and about 4 600 for `pegasus-x-base` (M = 768, F = 3072).

# %%
assert 2 * M + F == 512 and 2 * 768 + 3072 == 4608
viz.plot_cost(cfg, [256, 512] + lengths + [32768], measured=measured)

# %%
print(f"{'tokens':>7} {'PEGASUS-X GFLOP':>16} {'full GFLOP':>11} {'ratio':>6} {'full predicted s':>17} {'full measured s':>16}")
rate = sum(viz.encoder_cost(cfg, T)["flops"] for T in measured) / sum(measured.values())   # FLOP/s, fitted
for T in [512, 1024, 2048] + lengths[2:]:
    px, fu = viz.encoder_cost(cfg, T)["flops"], viz.encoder_cost(cfg, T, "full")["flops"]
    m = f"{full_measured[T]:16.3f}" if T in full_measured else f"{'-':>16}"
    print(f"{T:7d} {px / 1e9:16.2f} {fu / 1e9:11.2f} {fu / px:6.1f} {fu / rate:17.2f} {m}")

# %% [markdown]
# What to take away:
#
# * the encoder's time and its attention memory grow **linearly** with the input: 16× the tokens costs
#   about 16× the time (printed in section 1; plus a little: padding to whole blocks and the staggered
#   layers' extra block);
# * full attention's memory grows with T²: the probabilities of one layer at 16k tokens, H · T² floats,
#   are 4 GiB here (H = 4), 12 GiB for `pegasus-x-base` (H = 12) and 16 GiB for `-large` (H = 16) —
#   which is why PEGASUS-X exists (printed below);
# * the decoder is not in these numbers: it reads the encoder's T tokens through cross-attention,
#   O(S · T) per summary of S tokens, with keys and values computed once per input.
#
# A real checkpoint has M = 768 (base) or 1024 (large), 12 or 16 encoder layers, K = 512 and G = 128
# (their `config.json`); `viz.encoder_cost(real_config, T)` gives its numbers without loading it.

# %%
for name, heads in [("demo", H), ("pegasus-x-base", 12), ("pegasus-x-large", 16)]:
    print(f"{name:16} H = {heads:2d}: one layer's probabilities at 16 384 tokens, {heads * 16384**2 * 4 / 2**30:.0f} GiB")
assert H == 4

# %% [markdown]
# ## Lower precision, layer by layer
#
# Long inputs are where memory matters, so the same model in lower precision: `dtype="float16"` or
# `"bfloat16"` (sums, softmax, layer norm and the residual stream stay float32 — see docs/precision.md for
# why PEGASUS-X overflows fp16 in transformers and not here) and weight-only quantization
# `quantize="int8"` (per output channel) or `"nf4"` (4-bit, blocks of 64, as bitsandbytes). Each row is
# one layer's output, each column the largest error relative to float32's largest value, on the same
# teacher-forced summary.
#
# No error grows steadily with depth, rounding or quantization: down each column the errors stay
# within a factor of 4 of each other (float16: 8; the table's last line prints the factor), and the
# decoder, which starts again from its own embeddings, starts below the encoder's last layer. What
# separates the formats is their level, the same at every layer: float16 stays within 8 roundings of its
# unit 2^-11 (under 3.9e-3, the bound tests/test_precision.py derives), bfloat16 and int8 sit between 1e-3
# and 1e-2, nf4 between 2e-2 and 3e-1, tens of times more (all asserted below the table).
#
# Why float16 gets a wider factor: its layer outputs are rounded to 11 bits, so another machine's BLAS,
# summing in another order, moves a value across a rounding boundary here and there, and float16's
# largest errors (one or two roundings of the largest values) move with it: 1.2e-3 to 1.5e-3 and factors
# of 2.8 to 3.7 on one machine's different kernels. The other formats round the weights only, once, and
# compute in float32: their errors move by a few 1e-7 from kernel to kernel, far inside their bounds.

# %%
batch = tok([minipegx.example_document("short")], return_tensors="np")
ids, mask = batch["input_ids"], batch["attention_mask"]
dec = model.generate(ids, mask, max_new_tokens=48)[:, :-1]        # teacher-force float32's summary
out32 = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_hidden_states=True)


def rel(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return np.abs(a - b).max() / np.abs(b).max()


def outputs(o):   # every layer's output, by name (the encoder's last layer through its final norm)
    enc, dec_ = o.encoder_hidden_states, o.decoder_hidden_states
    named = {f"encoder.layers.{i}": h for i, h in enumerate(enc[1:-1])}
    named["encoder.layer_norm"] = enc[-1][0]
    named.update({f"decoder.layers.{i}": h for i, h in enumerate(dec_[1:-1])})
    named["decoder.layer_norm"], named["logits"] = dec_[-1], o.logits
    return named


ref_layers = outputs(out32)
print(f"{'layer output':22}" + "".join(f"{m:>10}" for m in ("float16", "bfloat16", "int8", "nf4")))
errors = {}
for dtype, quantize in [("float16", None), ("bfloat16", None), ("float32", "int8"), ("float32", "nf4")]:
    low = minipegx.from_pretrained(minipegx.demo_model_path("short"), dtype=dtype, quantize=quantize)
    o = low(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_hidden_states=True)
    errors[quantize or dtype] = np.array([rel(h, ref_layers[n]) for n, h in outputs(o).items()])   # [rows]
for i, n in enumerate(ref_layers):
    print(f"{n:22}" + "".join(f"{e[i]:10.1e}" for e in errors.values()))
print(f"{'largest / smallest':22}" + "".join(f"{e.max() / e.min():10.1f}" for e in errors.values()))
assert all(e.max() / e.min() < (8 if name == "float16" else 4) for name, e in errors.items())   # flat with depth
rows = list(ref_layers)
assert all(e[rows.index("decoder.layers.0")] < e[rows.index("encoder.layer_norm")] for e in errors.values())
assert errors["float16"].max() < 8 * 2.0 ** -11 and errors["nf4"].min() > 2e-2 and errors["nf4"].max() < 3e-1
assert all(1e-3 < e.min() and e.max() < 1e-2 for e in (errors["bfloat16"], errors["int8"]))
