# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · PEGASUS-X, one function at a time
#
# PEGASUS-X (Phang, Zhao & Liu 2022, [arXiv:2208.04347](https://arxiv.org/abs/2208.04347)) is PEGASUS
# with an encoder built for long inputs: **block-local attention**, **staggered blocks** on every
# other layer and a few **global tokens** (the "Global-Local" encoder the paper settles on in its
# architecture experiments; staggering is its Figure 2). The decoder is an ordinary Transformer decoder.
#
# In this notebook we run the first (short) bundled demo model, `demo_model_path("short")` (a small
# PEGASUS-X trained by this project: block size 64, 16 global tokens, 3 encoder layers, 2 decoder layers,
# vocabulary 784) **by hand**: every step is a call to one of minipegx's array functions on the model's
# own parameter tree, so you can read the line that does it (`minipegx/layers.py`, `encoder.py`,
# `decoder.py`). At the end we check the result against the full model and, when it is installed,
# against Hugging Face transformers.
#
# **Shape legend** (the same letters in every notebook, docstring and comment of minipegx):
# B batch, T tokens, P tokens padded to whole blocks, S decoder steps, N blocks, K block size,
# G global tokens, H heads, D head dim (M / H), F FFN width, M d_model, V vocabulary.
#
# Everything runs on the CPU with NumPy in a few seconds; nothing is downloaded.

# %%
import math

import numpy as np

import minipegx
from minipegx import decoder as dec, encoder as enc, layers

np.set_printoptions(precision=4, suppress=True, linewidth=110)

model = minipegx.from_pretrained(minipegx.demo_model_path("short"))  # the first (short) demo model
cfg = model.config
tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path("short"))
print(f"d_model M={cfg.d_model}  heads H={cfg.encoder_attention_heads}  head dim D={cfg.encoder_head_dim}  "
      f"block K={cfg.block_size}  global tokens G={cfg.num_global_tokens}")
print(f"encoder layers {cfg.encoder_layers} (staggered: {[i for i in range(cfg.encoder_layers) if cfg.is_staggered(i)]})"
      f"  decoder layers {cfg.decoder_layers}  activation {cfg.activation_function}  vocabulary V={cfg.vocab_size}")
# The numbers the introduction states:
assert (cfg.block_size, cfg.num_global_tokens, cfg.encoder_layers, cfg.decoder_layers, cfg.vocab_size) == (64, 16, 3, 2, 784)

# %% [markdown]
# The parameters are a nested dict with the checkpoint's own names, so the tensor
# `model.encoder.layers.1.self_attn.q_proj.weight` of the `model.safetensors` file is
# `params["model"]["encoder"]["layers"][1]["self_attn"]["q_proj"]["weight"]`.

# %%
tree = model.params["model"]                                # model.params, under the checkpoint's own names
for name in ["shared", "encoder", "decoder"]:
    print(name, "->", list(tree[name]))
print("encoder layer 0 ->", list(tree["encoder"]["layers"][0]))
print("q_proj weight [M, M]:", tree["encoder"]["layers"][1]["self_attn"]["q_proj"]["weight"].shape)

# %% [markdown]
# ## Inputs
#
# Two texts of different lengths, padded to the longer one: the attention mask is 1 on real tokens,
# 0 on padding. Every text ends with `</s>` (id 1); `<pad>` is id 0 (both asserted below).

# %%
paragraphs = minipegx.example_document("short").split("\n\n")
texts = ["\n\n".join(paragraphs[:2]), paragraphs[0]]
batch = tok(texts, padding=True, return_tensors="np")
ids, attention_mask = batch["input_ids"], batch["attention_mask"]
B, T = ids.shape
M, K, G = cfg.d_model, cfg.block_size, cfg.num_global_tokens
H, D = cfg.encoder_attention_heads, cfg.encoder_head_dim
print("input_ids      [B, T] =", ids.shape, "  tokens per row:", attention_mask.sum(1))
print("first tokens:", tok.convert_ids_to_tokens(ids[0, :12].tolist()))
assert (tok.eos_token_id, tok.pad_token_id) == (1, 0)
assert all(row[n - 1] == 1 for row, n in zip(ids, attention_mask.sum(1)))      # each text's last real token is </s>

# %% [markdown]
# ## 1. Token embeddings, scaled by √M
#
# `PegasusXScaledWordEmbedding` multiplies the looked-up rows by √d_model (`scale_embedding`). The
# table is shared by the encoder, the decoder and the LM head (tied weights).

# %%
table = tree["shared"]["weight"]                                  # [V, M]
x_tok = layers.embed_tokens(ids, table, math.sqrt(M))          # [B, T, M]
print("embed_tokens   [B, T, M] =", x_tok.shape, f"  scale sqrt(M) = {math.sqrt(M):.3f}")

# %% [markdown]
# ## 2. Sinusoidal positions: sin half, cos half, frequency with M/2 − 1
#
# PEGASUS-X adds fixed sinusoids (no learned positions, so any length runs). Two details differ from
# the textbook formula of Vaswani et al.:
#
# * the features are not interleaved: the **first half is sin, the second half is cos**;
# * the frequencies are `exp(-ln(10000) · i / (M/2 − 1))` for i = 0 … M/2 − 1: the denominator is
#   **M/2 − 1**, not M/2, so the slowest frequency is exactly 1/10000.
#
# minipegx computes them in float32, as the reference does: at position 16 000 a float64 argument would
# round differently by several 1e-4 (printed below), above the parity tolerance of 1e-4 on these values.

# %%
pos = layers.sinusoidal_positions(0, T, M, np)                 # [T, M]
print("positions      [T, M] =", pos.shape)
half = M // 2
freq = np.exp(-math.log(10000.0) * np.arange(half) / (half - 1))
t = np.arange(T)[:, None]
print("first half is sin(t * freq):", np.abs(pos[:, :half] - np.sin(t * freq)).max() < 1e-4)
print("second half is cos(t * freq):", np.abs(pos[:, half:] - np.cos(t * freq)).max() < 1e-4)
print(f"slowest frequency {freq[-1]:.2e} (M/2 - 1)  vs textbook 10000^(-(M/2-1)/(M/2)) = "
      f"{10000.0 ** (-(half - 1) / half):.2e}")
far = 16000.0 * freq                                           # float64 arguments at position 16 000
drift = np.abs(layers.sinusoidal_positions(16000, 1, M, np)[0] - np.r_[np.sin(far), np.cos(far)]).max()
print(f"position 16 000, float32 (minipegx, transformers) vs float64 arguments: {drift:.1e}")
assert drift > 1e-4
x = x_tok + pos                                                # [B, T, M]

# %% [markdown]
# ## 3. The mask: finfo.min, and padding to whole blocks
#
# The 1/0 mask becomes an **additive** mask: 0 where a token is kept and `np.finfo(float32).min`
# (−3.4e38, not −inf) where it is hidden, as the reference's `masked_fill(..., finfo.min)`. Then the
# tokens are padded with zeros up to P, a multiple of the block size K, and the padding is masked the
# same way.

# %%
mask = layers.additive_mask(attention_mask, np.float32, np)   # [B, T]: 0 or finfo.min
pad = (-T) % K
x = np.pad(x, ((0, 0), (0, pad), (0, 0)))                      # [B, P, M]
mask = np.pad(mask, ((0, 0), (0, pad)), constant_values=np.finfo(np.float32).min)  # [B, P]
P = x.shape[1]
print(f"T={T} padded to P={P} = N*K = {P // K}*{K}")
print("mask values:", np.unique(mask))

# %% [markdown]
# ## 4. Global tokens: learned, no scaling, no positions
#
# The G global tokens are rows of `embed_global`, a learned table — **not** multiplied by √M and
# **without** positions (in the reference they are an `nn.Embedding` looked up by index, nothing
# added). Every input of the batch starts from the same G vectors.

# %%
g = np.broadcast_to(tree["encoder"]["embed_global"]["weight"], (B, G, M))   # [B, G, M]
print("global tokens  [B, G, M] =", g.shape)

# %% [markdown]
# ## 5. One encoder layer: block-local + global attention
#
# Each encoder layer is pre-LayerNorm. Tokens and global tokens get **separate** attention layer norms
# (`self_attn_layer_norm`, `global_self_attn_layer_norm`) but **share** the attention weights and the FFN.
# Inside `global_local_attention`:
#
# * the tokens are cut into N blocks of K; a token attends to the **G global tokens and its own block**
#   (scores `[B, H, N, K, G+K]`, globals first, as in the reference);
# * a global token attends to **all G global tokens and all P tokens** (`[B, H, G, G+P]`);
# * the queries are **pre-scaled** by D^-1/2 before the product (`q_proj(x) * scaling`), unlike the
#   decoder, which scales the scores after the product. Same math, different rounding — and the
#   first thing a re-implementation forgets.

# %%
p0 = tree["encoder"]["layers"][0]
h = layers.layer_norm(x, p0["self_attn_layer_norm"])           # [B, P, M]
hg = layers.layer_norm(g, p0["global_self_attn_layer_norm"])   # [B, G, M]
t_out, g_out, probs = enc.global_local_attention(h, hg, mask, p0["self_attn"], H, K)
print("token output   [B, P, M]        =", t_out.shape)
print("global output  [B, G, M]        =", g_out.shape)
print("local probs    [B, H, N, K, G+K] =", probs["local"].shape)
print("global probs   [B, H, G, G+P]    =", probs["global"].shape)


# %% [markdown]
# Let us recompute the scores of block 0 for head 0 by hand, with the pre-scaled queries, and compare
# with the probabilities the function returned:

# %%
def heads(a):                                                  # [B, P or G, M] -> [B, H, P or G, D]
    return a.reshape(B, -1, H, D).transpose(0, 2, 1, 3)

w = p0["self_attn"]
q = heads(layers.linear(h, w["q_proj"]["weight"]) * D ** -0.5)   # pre-scaled queries [B, H, P, D]
k = heads(layers.linear(h, w["k_proj"]["weight"]))              # [B, H, P, D]
gk = heads(layers.linear(hg, w["k_proj"]["weight"]))            # [B, H, G, D]
b, head, blk = 0, 0, 0
rows = slice(blk * K, (blk + 1) * K)
s = np.concatenate([q[b, head, rows] @ gk[b, head].T,          # [K, G]: the block's queries x global keys
                    q[b, head, rows] @ k[b, head, rows].T], -1)  # [K, K]: x the block's own keys
s = s + np.concatenate([np.zeros(G, np.float32), mask[b, rows]])
mine = np.exp(s - s.max(-1, keepdims=True)); mine /= mine.sum(-1, keepdims=True)
print("by hand == global_local_attention:", np.abs(mine - probs["local"][b, head, blk]).max())
print("each row sums to 1:", np.allclose(probs["local"].sum(-1), 1, atol=1e-5))
padded_keys = (mask[1].reshape(-1, K) < 0)[None, :, None, :]   # [1, N, 1, K] padding of input 1
print("weight input 1 puts on its padding:", float((probs["local"][1][..., G:] * padded_keys).sum(-1).max()))

# %% [markdown]
# The rest of the layer: residual, then the FFN (`fc2(act(fc1(x)))`, ReLU in this model) with its own
# pre-LayerNorm, applied to tokens and global tokens with the same weights. `encoder.encoder_layer`
# does exactly these lines; we check that our hand-made layer equals it.

# %%
x1 = x + t_out
g1 = g + g_out
x1 = x1 + layers.ffn(layers.layer_norm(x1, p0["final_layer_norm"]), p0, cfg.activation_function)
g1 = g1 + layers.ffn(layers.layer_norm(g1, p0["final_layer_norm"]), p0, cfg.activation_function)
x1_ref, g1_ref, _ = enc.encoder_layer(x, g, mask, p0, cfg, staggered=False)
print("layer 0 by hand == encoder_layer:", np.abs(x1 - x1_ref).max(), np.abs(g1 - g1_ref).max())

# %% [markdown]
# ## 6. Staggered blocks (layer 1)
#
# With block-local attention alone, information never crosses a block border (except through the
# global tokens). PEGASUS-X therefore **staggers** every other layer (the paper's Figure 2, "staggered
# block-local attention"):
# the odd layers pad K/2 masked tokens on both sides, so there is **one block more** and each block
# straddles the border of two unstaggered ones. After attention the half-blocks are cut off again.

# %%
p1 = tree["encoder"]["layers"][1]
print("layer 1 staggered:", cfg.is_staggered(1))
h1 = layers.layer_norm(x1, p1["self_attn_layer_norm"])
hs, ms = enc.stagger(h1, mask, K)                              # [B, P+K, M], [B, P+K]
print(f"staggered tokens [B, P+K, M] = {hs.shape}: N+1 = {hs.shape[1] // K} blocks")
print("the K/2 pads on each side are masked:", (ms[:, :K // 2] == np.finfo(np.float32).min).all(),
      (ms[:, -(K // 2):] == np.finfo(np.float32).min).all())
print(f"staggered block 1 holds original tokens {1 * K - K // 2} .. {2 * K - K // 2 - 1}: "
      "the second half of block 0 and the first half of block 1")
x2, g2, probs1 = enc.encoder_layer(x1, g1, mask, p1, cfg, staggered=True)
print("local probs of layer 1 [B, H, N+1, K, G+K] =", probs1["local"].shape)

# %% [markdown]
# ## 7. The last layer and the final layer norm — on tokens only
#
# After the last layer the padding is dropped and the encoder's final `layer_norm` is applied to the
# **tokens only**; the global tokens are discarded (the decoder never sees them) — transformers still
# returns them, un-normalized, in the last entry of `encoder_hidden_states`.

# %%
x3, g3, _ = enc.encoder_layer(x2, g2, mask, tree["encoder"]["layers"][2], cfg, staggered=cfg.is_staggered(2))
encoded = layers.layer_norm(x3[:, :T], tree["encoder"]["layer_norm"])   # [B, T, M]
full = model.encode(ids, attention_mask, output_hidden_states=True)
print("encoder output [B, T, M] =", encoded.shape)
print("by hand == model.encode:", np.abs(encoded - full.last_hidden_state).max())
print("encoder hidden_states: each layer's (padded) input, then (tokens, global tokens):",
      [getattr(s, "shape", tuple(a.shape for a in s)) for s in full.hidden_states])

# %% [markdown]
# ## 8. The decoder: causal self-attention, cross-attention, FFN
#
# The decoder starts from `decoder_start_token_id` (0, the pad token: asserted below), uses the same scaled embeddings
# and sinusoids, and has per layer: causal self-attention (with a key/value cache during generation),
# **cross-attention over the encoder's tokens** (padding masked, global tokens not included), and an
# FFN, each pre-LayerNorm with a residual. Its attention scales the scores *after* `q k^T`.
#
# Cross-attention keys/values are computed once per input (`cross_kv`) and reused for every step.
# We feed three decoder tokens: the start token and the first two tokens of the reference summary.

# %%
assert cfg.decoder_start_token_id == tok.pad_token_id == 0
first_fact = "Wendel returned 87 blankets to Ironmere."                  # the document's first key sentence
assert f"According to the market ledger, {first_fact}" in paragraphs[0]
summary_ids = tok([first_fact], return_tensors="np")["input_ids"]
dec_ids = np.concatenate([np.zeros((1, 1), np.int64), summary_ids[:, :2]], 1).repeat(B, 0)   # [B, S]
S = dec_ids.shape[1]
assert S == 3
y = layers.embed_tokens(dec_ids, table, math.sqrt(M)) + layers.sinusoidal_positions(0, S, M, np)  # [B, S, M]
cross_mask = layers.additive_mask(attention_mask, np.float32, np)[:, None, None, :]   # [B, 1, 1, T]
self_mask = dec.causal_mask(S, 0, np.float32, np)                                     # [1, 1, S, S]
print("decoder input [B, S, M] =", y.shape)
print("causal mask (0 = may attend):\n", (self_mask[0, 0] == 0).astype(int))
dec_states = [y]
for i, lp in enumerate(tree["decoder"]["layers"]):
    kv = dec.cross_kv(encoded, lp["encoder_attn"], cfg.decoder_attention_heads)     # ([B, H, T, D], [B, H, T, D])
    y, cache, self_probs, cross_probs = dec.decoder_layer(y, lp, cfg, self_mask, kv, cross_mask)
    dec_states.append(y)
    print(f"layer {i}: cross k/v {kv[0].shape}  self-attn cache k {cache[0].shape}  "
          f"self probs {self_probs.shape}  cross probs {cross_probs.shape}")
y = layers.layer_norm(y, tree["decoder"]["layer_norm"])           # [B, S, M]

# %% [markdown]
# ## 9. The LM head: the embedding table again
#
# The logits are the final hidden states times the (tied) embedding table: `[B, S, M] @ [M, V]`.
# No bias, no √M here. (The first paragraph we fed holds the document's first key sentence, "According to
# the market ledger, Wendel returned 87 blankets to Ironmere.", and we fed the start of that fact as the
# decoder's input: row 0's predictions should continue it.)

# %%
logits = layers.linear(y, model.lm_head_weight)                # [B, S, V]
print("logits [B, S, V] =", logits.shape)
out = model(input_ids=ids, attention_mask=attention_mask, decoder_input_ids=dec_ids, output_hidden_states=True)
print("by hand == model(...):", np.abs(logits - out.logits).max())
best = logits[0].argmax(-1)
print("predicted next tokens (row 0):", tok.convert_ids_to_tokens(best.tolist()))
print("teacher-forced targets       :", tok.convert_ids_to_tokens(summary_ids[0, :S].tolist()))

# %% [markdown]
# A quirk worth knowing: in `decoder_hidden_states` (as in transformers) each entry is a layer's
# *input*, and the **last entry is the output of the final layer norm**, not the raw output of the last
# layer. So there are `decoder_layers + 1` entries (asserted below).

# %%
hs = out.decoder_hidden_states
print(len(hs), "decoder hidden states for", cfg.decoder_layers, "layers")
assert len(hs) == cfg.decoder_layers + 1
print("entry 0 == embeddings + positions:", np.abs(hs[0] - dec_states[0]).max())
print("entry 1 == output of layer 0     :", np.abs(hs[1] - dec_states[1]).max())
print("last entry == final layer norm   :", np.abs(hs[-1] - y).max(),
      "  (raw output of the last layer differs by", float(np.abs(hs[-1] - dec_states[-1]).max()), ")")

# %% [markdown]
# ## 10. Check against transformers (when installed)
#
# The same checkpoint directory loads in `transformers.PegasusXForConditionalGeneration`. We run both
# on the same inputs and print the largest absolute difference of every output, next to the largest
# value (the scale) and their ratio. They agree to float32 rounding: every row is within the parity
# tolerance `LONG_INPUTS` of `minipegx.tolerances`, 1e-4 + 1e-5 · max|ref| (asserted: a bound that holds on
# any CPU; the ratios themselves, a few 1e-8 to a few 1e-6 when we ran it, change with the machine's BLAS
# kernels). The hidden states grow with depth (and the un-normalized
# global tokens most), so their absolute differences are larger. Only the order of floating-point sums
# differs. If transformers (or torch) is not installed, this cell says so and skips the comparison.

# %%
import minipegx.parity
from minipegx.errors import BackendError

try:
    ref = minipegx.parity.load_reference(minipegx.demo_model_path("short"))   # transformers, quietly
except BackendError as e:
    print(f"skipping the comparison: {e}")
else:
    import torch
    with torch.no_grad():
        r = ref(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(attention_mask),
                decoder_input_ids=torch.as_tensor(dec_ids), output_hidden_states=True, output_attentions=True)
    mine = model(input_ids=ids, attention_mask=attention_mask, decoder_input_ids=dec_ids,
                 output_hidden_states=True, output_attentions=True)

    from minipegx.tolerances import LONG_INPUTS

    within = []

    def row(name, a, b):
        b = b.detach().double().numpy()
        err, scale = np.abs(np.asarray(a, np.float64) - b).max(), np.abs(b).max()
        within.append(LONG_INPUTS.holds(a, b))
        print(f"{name:34s} {str(tuple(a.shape)):>18s}  max |err| {err:8.1e}  max |ref| {scale:8.1e}  ratio {err / scale:8.1e}")

    row("logits", mine.logits, r.logits)
    row("encoder last hidden state", mine.encoder_last_hidden_state, r.encoder_last_hidden_state)
    for i, (a, b_) in enumerate(zip(mine.encoder_hidden_states[:-1], r.encoder_hidden_states[:-1])):
        row(f"encoder hidden state {i} (padded)", a, b_)
    (tk, gl), (rtk, rgl) = mine.encoder_hidden_states[-1], r.encoder_hidden_states[-1]
    row("encoder final tokens", tk, rtk)
    row("encoder final global tokens", gl, rgl)
    for i, (a, b_) in enumerate(zip(mine.encoder_attentions, r.encoder_attentions)):
        row(f"encoder attention {i} local", a["local"], b_["local"])
        row(f"encoder attention {i} global", a["global"], b_["global"])
    for i, (a, b_) in enumerate(zip(mine.decoder_hidden_states, r.decoder_hidden_states)):
        row(f"decoder hidden state {i}", a, b_)
    for i, (a, b_) in enumerate(zip(mine.cross_attentions, r.cross_attentions)):
        row(f"cross-attention {i}", a, b_)
    assert all(within)

# %% [markdown]
# **Next:** `02_attention.ipynb` draws the attention patterns of these layers and the real
# probabilities on the short model's example document.
