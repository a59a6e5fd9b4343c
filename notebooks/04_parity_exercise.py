# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Parity testing for a course: write a layer, let the checker find your bug
#
# > **This notebook needs transformers and torch** (the `test` extra:
# > `pip install -e ".[test]" "torch==2.13.0"`, CPU build is enough). minipegx itself never imports them;
# > here they are the reference we compare against.
#
# `minipegx.parity.compare` runs minipegx and transformers' `PegasusXForConditionalGeneration` on the
# same input and compares **every intermediate**: minipegx records its activations in a `trace` dict
# under the Hugging Face module names (`model.encoder.layers.1.self_attn`), the reference's are caught
# with forward hooks on the same modules. The report lists them in execution order and names the
# **first divergence** — the first place beyond `|err| <= atol + rtol * max|ref|` (1e-4 + 1e-5 ·
# scale, asserted below: fp32 summation order alone gives ~1e-7 relative per operation, so only real
# bugs cross it).
#
# With `patch={"minipegx.encoder.global_local_attention": my_fn}` a student's function replaces
# minipegx's for the duration of the comparison. The exercise: write a layer, check it, read where
# it diverges, fix it. See `docs/parity.md` for the methodology and tolerances.

# %%
import dataclasses

import numpy as np

import minipegx
from minipegx import layers, parity
from minipegx.layers import linear, softmax

path = minipegx.demo_model_path("short")
model = minipegx.from_pretrained(path)
reference = parity.load_reference(path)          # transformers, quietly; BackendError says what to install
tok = minipegx.Tokenizer.from_pretrained(path)
text = "\n\n".join(minipegx.example_document("short").split("\n\n")[:2])   # two paragraphs: quick, 4 blocks
batch = tok([text], return_tensors="np")
ids, mask = batch["input_ids"], batch["attention_mask"]
cfg = model.config
print("input [B, T] =", ids.shape, f"-> {-(-ids.shape[1] // cfg.block_size)} blocks of K={cfg.block_size}")
assert ids.shape[1] == 193 and -(-ids.shape[1] // cfg.block_size) == 4


def check(**patch):
    """Compare with transformers, with minipegx functions replaced by yours; print the verdict."""
    report = parity.compare(None, ids, mask, model=model, reference=reference,
                            patch={f"minipegx.{k.replace('__', '.')}": f for k, f in patch.items()})
    bad = [r for r in report.rows if not r.ok]
    print(f"{len(report.rows)} intermediates compared, {len(bad)} beyond tolerance;",
          "all within tolerance" if report.ok else f"first divergence: {report.first_divergence}")
    return report


# %% [markdown]
# First the unmodified model: every intermediate, layer by layer, then two greedy decoding steps
# (each side with its own cache).

# %%
report = parity.compare(None, ids, mask, model=model, reference=reference, steps=2)
print(report)
assert (report.atol, report.rtol) == (1e-4, 1e-5)


# %% [markdown]
# Two things to notice. The largest errors sit where the largest values are: the residual stream of
# a trained model (never normalized, only added to) grows layer after layer (the `max |ref|` of the
# encoder layers' outputs, printed below), and float32 rounding is relative to it, so a layer's output
# carries a larger absolute error than the layer norm that reads it. And `embed_positions` need not be
# exactly equal: NumPy's and torch's float32 `exp` and `sin` may differ in the last bit, and at
# position t a one-ulp difference in a frequency becomes t times larger. On this 193-token input both
# stay far below tolerance; on inputs of thousands of tokens they can cross a fixed tolerance without
# any bug (see [docs/parity.md](../docs/parity.md)), so exercises use short inputs.

# %%
rows = {r.name: r for r in report.rows}
layer_outputs = [rows[f"model.encoder.layers.{i}"] for i in range(cfg.encoder_layers)]
print("encoder layer outputs, max |ref|:", [f"{r.ref_scale:.1f}" for r in layer_outputs],
      " max |err|:", [f"{r.max_abs_err:.1e}" for r in layer_outputs])
print(f"embed_positions max |err|: {rows['model.encoder.embed_positions'].max_abs_err:.1e}")
assert all(a.ref_scale < b.ref_scale for a, b in zip(layer_outputs, layer_outputs[1:]))   # grows with depth

# %% [markdown]
# ## Exercise 1 · `layer_norm`
#
# Write `layer_norm(x, p, eps=1e-5)`: normalize over the last axis, then scale by `p["weight"]` and
# shift by `p["bias"]`. Shapes: x `[..., M]`, weight and bias `[M]`.
#
# A classic bug, shown below: computing the variance the way `torch.var` does **by default**, with
# Bessel's correction (divide by M − 1). `nn.LayerNorm` uses the *biased* variance (divide by M). The
# difference is a factor √(M/(M−1)) ≈ 1.004 for M = 128 (asserted below) — small, but far beyond
# tolerance, and the report names the very first layer norm of the encoder.
#
# The encoder and decoder modules import `layer_norm` by name, so we patch it in both.

# %%
def student_layer_norm(x, p, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).sum(axis=-1, keepdims=True) / (x.shape[-1] - 1)   # BUG: unbiased variance
    return (x - mean) / np.sqrt(var + eps) * p["weight"] + p["bias"]

M = cfg.d_model
assert M == 128 and round(float(np.sqrt(M / (M - 1))), 3) == 1.004
report = check(encoder__layer_norm=student_layer_norm, decoder__layer_norm=student_layer_norm)
print("\n".join(str(report).splitlines()[:6]))
assert report.first_divergence == "model.encoder.layers.0.self_attn_layer_norm"


# %%
def student_layer_norm(x, p, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)                       # fixed: biased variance
    return (x - mean) / np.sqrt(var + eps) * p["weight"] + p["bias"]

report = check(encoder__layer_norm=student_layer_norm, decoder__layer_norm=student_layer_norm)


# %% [markdown]
# ## Exercise 2 · `global_local_attention`
#
# The heart of PEGASUS-X. Signature and contract (as `minipegx.encoder.global_local_attention`):
#
# ```
# x    [B, P, M] tokens, P a multiple of K       g [B, G, M] global tokens
# mask [B, P] additive (0 or finfo.min)          p {"q_proj", "k_proj", "v_proj", "out_proj"}: {"weight": [M, M]}, no biases
# output_attentions: whether the caller wants the probabilities (returning them always is fine too)
# returns (token output [B, P, M], global output [B, G, M],
#          {"local": [B, H, N, K, G+K], "global": [B, H, G, G+P]} or None)
# ```
#
# * a token attends the G global tokens and the K tokens of its block (keys: globals first);
# * a global token attends all G global tokens and all P tokens;
# * both use the same q/k/v/out projections; the queries are multiplied by D^-1/2 **before** the product.
#
# Fill in the scaffold below (it is not run by the checker until you call `check`). Then look at the
# buggy version after it.

# %%
def my_global_local_attention(x, g, mask, p, num_heads, block_size, output_attentions=True):
    B, P, M = x.shape                                  # noqa: F841 (the shapes, for your code)
    G, H, K = g.shape[1], num_heads, block_size        # noqa: F841
    N, D = P // K, M // H                              # noqa: F841
    # 1. project tokens and global tokens with p["q_proj"]["weight"] etc. (layers.linear), split heads
    # 2. global rows: scores [B, H, G, G+P] over (global keys, token keys), add the mask, softmax, times values
    # 3. each block: scores [B, H, N, K, G+K] over (global keys, the block's keys), mask, softmax, times values
    # 4. merge heads, out_proj for both outputs
    raise NotImplementedError("your turn: then run check(encoder__global_local_attention=my_global_local_attention)")


# %% [markdown]
# A student's version, written with a loop over blocks for readability — and one bug: the queries
# are never scaled by D^-1/2. The report points at the first encoder attention.

# %%
def student_attention(x, g, mask, p, num_heads, block_size, output_attentions=True, scale_queries=False):
    B, P, M = x.shape
    G, H, K = g.shape[1], num_heads, block_size
    N, D = P // K, M // H
    scale = D ** -0.5 if scale_queries else 1.0                           # the bug when False

    def proj(a, name):                                                    # [B, P or G, M] -> [B, H, P or G, D]
        return linear(a, p[name]["weight"]).reshape(B, -1, H, D).transpose(0, 2, 1, 3)

    q, k, v = proj(x, "q_proj") * scale, proj(x, "k_proj"), proj(x, "v_proj")
    gq, gk, gv = proj(g, "q_proj") * scale, proj(g, "k_proj"), proj(g, "v_proj")
    zeros = np.zeros((B, G), mask.dtype)

    # global tokens: every global token and every token
    keys, values = np.concatenate([gk, k], 2), np.concatenate([gv, v], 2)           # [B, H, G+P, D]
    global_probs = softmax(gq @ keys.swapaxes(-1, -2) + np.concatenate([zeros, mask], 1)[:, None, None])
    g_out = global_probs @ values                                                 # [B, H, G, D]

    # tokens: block by block, the global keys in front of the block's keys
    t_out, local_probs = np.empty_like(q), np.empty((B, H, N, K, G + K), q.dtype)
    for n in range(N):
        blk = slice(n * K, (n + 1) * K)
        keys = np.concatenate([gk, k[:, :, blk]], 2)                             # [B, H, G+K, D]
        values = np.concatenate([gv, v[:, :, blk]], 2)
        s = q[:, :, blk] @ keys.swapaxes(-1, -2) + np.concatenate([zeros, mask[:, blk]], 1)[:, None, None]
        local_probs[:, :, n] = softmax(s)                                         # [B, H, K, G+K]
        t_out[:, :, blk] = local_probs[:, :, n] @ values

    def out(a):                                                                   # [B, H, P or G, D] -> [B, P or G, M]
        return linear(a.transpose(0, 2, 1, 3).reshape(B, -1, M), p["out_proj"]["weight"])

    return out(t_out), out(g_out), {"local": local_probs, "global": global_probs}

report = check(encoder__global_local_attention=student_attention)
print("\n".join(str(report).splitlines()[:8]))


# %% [markdown]
# Fixed: scale the queries. Note that scaling the *scores* after the product instead would also pass
# — it is the same math, only the rounding differs (~1e-7) — but the reference pre-scales the
# queries, and matching its order of operations is what keeps fp16/bf16 runs close too.

# %%
def fixed_attention(*args, **kwargs):
    return student_attention(*args, **kwargs, scale_queries=True)

report = check(encoder__global_local_attention=fixed_attention)


# %% [markdown]
# ## Exercise 3 · the stagger
#
# `stagger(x, mask, block_size)` pads K/2 tokens on both sides of the (layer-normed) tokens so the odd
# layers see blocks shifted by half a block; the padding must be **masked** with `finfo.min`.
# The student below pads the tokens but gives the padded positions a mask of 0 ("keep"): the
# half-blocks at both ends then attend to zero vectors. Layer 0 is not staggered, so the report
# agrees on all of layer 0 and names **layer 1**, the first staggered layer.

# %%
def student_stagger(x, mask, block_size):
    h = block_size // 2
    x = np.pad(x, ((0, 0), (h, h), (0, 0)))
    mask = np.pad(mask, ((0, 0), (h, h)))                     # BUG: padding "kept" (0) instead of finfo.min
    return x, mask

report = check(encoder__stagger=student_stagger)


# %%
def student_stagger(x, mask, block_size):
    h = block_size // 2
    x = np.pad(x, ((0, 0), (h, h), (0, 0)))
    mask = np.pad(mask, ((0, 0), (h, h)), constant_values=np.finfo(mask.dtype).min)   # fixed
    return x, mask

report = check(encoder__stagger=student_stagger)

# %% [markdown]
# And forgetting the stagger altogether — a model whose config turns `stagger_local_blocks` off —
# diverges at the same place:

# %%
unstaggered = dataclasses.replace(model, config=cfg.replace(stagger_local_blocks=False))
report = parity.compare(None, ids, mask, model=unstaggered, reference=reference)
print("first divergence:", report.first_divergence)


# %% [markdown]
# ## Exercise 4 · decoding with a cache
#
# `compare(..., steps=n)` also decodes n more tokens greedily (the reference's choice fed to both
# sides, each with its own cache) and compares every intermediate at every step. A common cache bug:
# the positions of a new token restart at 0 instead of continuing after the cached steps. Step 0 (the
# full forward) agrees; the report names the first cached step.

# %%
def student_positions(start, length, dim, xp, dtype="float32"):
    return layers.sinusoidal_positions(0, length, dim, xp, dtype)        # BUG: ignores `start`

report = parity.compare(None, ids, mask, model=model, reference=reference, steps=2,
                        patch={"minipegx.decoder.sinusoidal_positions": student_positions})
print("first divergence:", report.first_divergence)

# %% [markdown]
# **For a course:** hand out this notebook with the fixed versions removed; a student's function
# passes when `check(...)` prints "all within tolerance". The same checker runs on a real checkpoint
# (`parity.compare("path/to/pegasus-x-base", ...)`, or `minipegx parity path/to/pegasus-x-base` on the
# command line) — see `docs/real_checkpoints.md`.
