"""Write the teaching notebooks (notebooks/*.ipynb) from the cell lists below, without outputs.

    python notebooks/build_notebooks.py            # rewrite all five
    python notebooks/build_notebooks.py 03         # only those whose name contains "03"

The notebooks are generated so that their text stays reviewable as plain Python in one diff and
their outputs are never committed (tests/test_notebooks.py checks both: that each notebook runs
top to bottom and that the committed files carry no outputs). Edit the cells here, not in Jupyter,
then rebuild. Every notebook loads the bundled demo model (`minipegx.from_pretrained(None)`) and
needs no network.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

LEGEND = """**Shape legend** (the same letters in every notebook, docstring and comment of minipegx):
B batch, T tokens, P tokens padded to whole blocks, S decoder steps, N blocks, K block size,
G global tokens, H heads, D head dim (M / H), F FFN width, M d_model, V vocabulary."""


def md(text):
    return new_markdown_cell(text.strip("\n"))


def code(text):
    return new_code_cell(text.strip("\n"))


# ==================================================================================================
# 01 — the architecture, one function at a time
# ==================================================================================================
ARCHITECTURE = [
    md(f"""
# 01 · PEGASUS-X, one function at a time

PEGASUS-X (Phang, Zhao & Liu 2022, [arXiv:2208.04347](https://arxiv.org/abs/2208.04347)) is PEGASUS
with an encoder built for long inputs: **block-local attention**, **staggered blocks** on every
other layer and a few **global tokens** (the "Global-Local" encoder the paper settles on in its
architecture experiments; staggering is its Figure 2). The decoder is an ordinary Transformer decoder.

In this notebook we run the bundled demo model (a small PEGASUS-X trained by this project: block size
64, 16 global tokens, 3 encoder layers, 2 decoder layers, vocabulary 503) **by hand**: every step is a
call to one of minipegx's array functions on the model's own parameter tree, so you can read the line
that does it (`minipegx/layers.py`, `encoder.py`, `decoder.py`). At the end we check the result
against the full model and, when it is installed, against Hugging Face transformers.

{LEGEND}

Everything runs on the CPU with NumPy in a few seconds; nothing is downloaded.
"""),
    code("""
import math

import numpy as np

import minipegx
from minipegx import decoder as dec, encoder as enc, layers

np.set_printoptions(precision=4, suppress=True, linewidth=110)

model = minipegx.from_pretrained(None)                        # None = the bundled demo model
cfg = model.config
tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path())
print(f"d_model M={cfg.d_model}  heads H={cfg.encoder_attention_heads}  head dim D={cfg.encoder_head_dim}  "
      f"block K={cfg.block_size}  global tokens G={cfg.num_global_tokens}")
print(f"encoder layers {cfg.encoder_layers} (staggered: {[i for i in range(cfg.encoder_layers) if cfg.is_staggered(i)]})"
      f"  decoder layers {cfg.decoder_layers}  activation {cfg.activation_function}  vocabulary V={cfg.vocab_size}")
"""),
    md("""
The parameters are a nested dict with the checkpoint's own names, so the tensor
`model.encoder.layers.1.self_attn.q_proj.weight` of the `model.safetensors` file is
`params["model"]["encoder"]["layers"][1]["self_attn"]["q_proj"]["weight"]`.
"""),
    code("""
P = model.params["model"]
for name in ["shared", "encoder", "decoder"]:
    print(name, "->", list(P[name]))
print("encoder layer 0 ->", list(P["encoder"]["layers"][0]))
print("q_proj weight [M, M]:", P["encoder"]["layers"][1]["self_attn"]["q_proj"]["weight"].shape)
"""),
    md("""
## Inputs

Two texts of different lengths, padded to the longer one: the attention mask is 1 on real tokens,
0 on padding. Every text ends with `</s>` (id 1); `<pad>` is id 0.
"""),
    code("""
paragraphs = minipegx.example_document().split("\\n\\n")
texts = ["\\n\\n".join(paragraphs[:2]), paragraphs[0]]
batch = tok(texts, padding=True, return_tensors="np")
ids, attention_mask = batch["input_ids"], batch["attention_mask"]
B, T = ids.shape
M, K, G = cfg.d_model, cfg.block_size, cfg.num_global_tokens
H, D = cfg.encoder_attention_heads, cfg.encoder_head_dim
print("input_ids      [B, T] =", ids.shape, "  tokens per row:", attention_mask.sum(1))
print("first tokens:", tok.convert_ids_to_tokens(ids[0, :12].tolist()))
"""),
    md("""
## 1. Token embeddings, scaled by √M

`PegasusXScaledWordEmbedding` multiplies the looked-up rows by √d_model (`scale_embedding`). The
table is shared by the encoder, the decoder and the LM head (tied weights).
"""),
    code("""
table = P["shared"]["weight"]                                  # [V, M]
x_tok = layers.embed_tokens(ids, table, math.sqrt(M))          # [B, T, M]
print("embed_tokens   [B, T, M] =", x_tok.shape, f"  scale sqrt(M) = {math.sqrt(M):.3f}")
"""),
    md("""
## 2. Sinusoidal positions: sin half, cos half, frequency with M/2 − 1

PEGASUS-X adds fixed sinusoids (no learned positions, so any length runs). Two details differ from
the textbook formula of Vaswani et al.:

* the features are not interleaved: the **first half is sin, the second half is cos**;
* the frequencies are `exp(-ln(10000) · i / (M/2 − 1))` for i = 0 … M/2 − 1: the denominator is
  **M/2 − 1**, not M/2, so the slowest frequency is exactly 1/10000.

minipegx computes them in float32, as the reference does: at position 16 000 a float64 argument would
round differently by ~1e-3, far above parity tolerance.
"""),
    code("""
pos = layers.sinusoidal_positions(0, T, M, np)                 # [T, M]
print("positions      [T, M] =", pos.shape)
half = M // 2
freq = np.exp(-math.log(10000.0) * np.arange(half) / (half - 1))
t = np.arange(T)[:, None]
print("first half is sin(t * freq):", np.abs(pos[:, :half] - np.sin(t * freq)).max() < 1e-4)
print("second half is cos(t * freq):", np.abs(pos[:, half:] - np.cos(t * freq)).max() < 1e-4)
print(f"slowest frequency {freq[-1]:.2e} (M/2 - 1)  vs textbook 10000^(-(M/2-1)/(M/2)) = "
      f"{10000.0 ** (-(half - 1) / half):.2e}")
x = x_tok + pos                                                # [B, T, M]
"""),
    md("""
## 3. The mask: finfo.min, and padding to whole blocks

The 1/0 mask becomes an **additive** mask: 0 where a token is kept and `np.finfo(float32).min`
(−3.4e38, not −inf) where it is hidden, as the reference's `masked_fill(..., finfo.min)`. Then the
tokens are padded with zeros up to P, a multiple of the block size K, and the padding is masked the
same way.
"""),
    code("""
mask = layers.additive_mask(attention_mask, np.float32, np)   # [B, T]: 0 or finfo.min
pad = (-T) % K
x = np.pad(x, ((0, 0), (0, pad), (0, 0)))                      # [B, P, M]
mask = np.pad(mask, ((0, 0), (0, pad)), constant_values=np.finfo(np.float32).min)  # [B, P]
Pn = x.shape[1]
print(f"T={T} padded to P={Pn} = N*K = {Pn // K}*{K}")
print("mask values:", np.unique(mask))
"""),
    md("""
## 4. Global tokens: learned, no scaling, no positions

The G global tokens are rows of `embed_global`, a learned table — **not** multiplied by √M and
**without** positions (in the reference they are an `nn.Embedding` looked up by index, nothing
added). Every input of the batch starts from the same G vectors.
"""),
    code("""
g = np.broadcast_to(P["encoder"]["embed_global"]["weight"], (B, G, M))   # [B, G, M]
print("global tokens  [B, G, M] =", g.shape)
"""),
    md("""
## 5. One encoder layer: block-local + global attention

Each encoder layer is pre-LayerNorm. Tokens and global tokens get **separate** attention layer norms
(`self_attn_layer_norm`, `global_self_attn_layer_norm`) but **share** the attention weights and the FFN.
Inside `global_local_attention`:

* the tokens are cut into N blocks of K; a token attends to the **G global tokens and its own block**
  (scores `[B, H, N, K, G+K]`, globals first, as in the reference);
* a global token attends to **all G global tokens and all P tokens** (`[B, H, G, G+P]`);
* the queries are **pre-scaled** by D^-1/2 before the product (`q_proj(x) * scaling`), unlike the
  decoder, which scales the scores after the product. Same math, different rounding — and the
  first thing a re-implementation forgets.
"""),
    code("""
p0 = P["encoder"]["layers"][0]
h = layers.layer_norm(x, p0["self_attn_layer_norm"])           # [B, P, M]
hg = layers.layer_norm(g, p0["global_self_attn_layer_norm"])   # [B, G, M]
t_out, g_out, probs = enc.global_local_attention(h, hg, mask, p0["self_attn"], H, K)
print("token output   [B, P, M]        =", t_out.shape)
print("global output  [B, G, M]        =", g_out.shape)
print("local probs    [B, H, N, K, G+K] =", probs["local"].shape)
print("global probs   [B, H, G, G+P]    =", probs["global"].shape)
"""),
    md("""
Let us recompute the scores of block 0 for head 0 by hand, with the pre-scaled queries, and compare
with the probabilities the function returned:
"""),
    code("""
def heads(a):                                                  # [B, L, M] -> [B, H, L, D]
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
"""),
    md("""
The rest of the layer: residual, then the FFN (`fc2(act(fc1(x)))`, ReLU in this model) with its own
pre-LayerNorm, applied to tokens and global tokens with the same weights. `encoder.encoder_layer`
does exactly these lines; we check that our hand-made layer equals it.
"""),
    code("""
x1 = x + t_out
g1 = g + g_out
x1 = x1 + layers.ffn(layers.layer_norm(x1, p0["final_layer_norm"]), p0, cfg.activation_function)
g1 = g1 + layers.ffn(layers.layer_norm(g1, p0["final_layer_norm"]), p0, cfg.activation_function)
x1_ref, g1_ref, _ = enc.encoder_layer(x, g, mask, p0, cfg, staggered=False)
print("layer 0 by hand == encoder_layer:", np.abs(x1 - x1_ref).max(), np.abs(g1 - g1_ref).max())
"""),
    md("""
## 6. Staggered blocks (layer 1)

With block-local attention alone, information never crosses a block border (except through the
global tokens). PEGASUS-X therefore **staggers** every other layer (the paper's Figure 2, "staggered
block-local attention"):
the odd layers pad K/2 masked tokens on both sides, so there is **one block more** and each block
straddles the border of two unstaggered ones. After attention the half-blocks are cut off again.
"""),
    code("""
p1 = P["encoder"]["layers"][1]
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
"""),
    md("""
## 7. The last layer and the final layer norm — on tokens only

After the last layer the padding is dropped and the encoder's final `layer_norm` is applied to the
**tokens only**; the global tokens are discarded (the decoder never sees them) — transformers still
returns them, un-normalized, in the last entry of `encoder_hidden_states`.
"""),
    code("""
x3, g3, _ = enc.encoder_layer(x2, g2, mask, P["encoder"]["layers"][2], cfg, staggered=cfg.is_staggered(2))
encoded = layers.layer_norm(x3[:, :T], P["encoder"]["layer_norm"])   # [B, T, M]
full = model.encode(ids, attention_mask, output_hidden_states=True)
print("encoder output [B, T, M] =", encoded.shape)
print("by hand == model.encode:", np.abs(encoded - full.last_hidden_state).max())
print("encoder hidden_states: each layer's (padded) input, then (tokens, global tokens):",
      [getattr(s, "shape", tuple(a.shape for a in s)) for s in full.hidden_states])
"""),
    md("""
## 8. The decoder: causal self-attention, cross-attention, FFN

The decoder starts from `decoder_start_token_id` (0, the pad token), uses the same scaled embeddings
and sinusoids, and has per layer: causal self-attention (with a key/value cache during generation),
**cross-attention over the encoder's tokens** (padding masked, global tokens not included), and an
FFN, each pre-LayerNorm with a residual. Its attention scales the scores *after* `q k^T`.

Cross-attention keys/values are computed once per input (`cross_kv`) and reused for every step.
We feed three decoder tokens: the start token and the first two tokens of the reference summary.
"""),
    code("""
summary_ids = tok(["Wendel returned 87 blankets to Ironmere."], return_tensors="np")["input_ids"]   # the first true fact
dec_ids = np.concatenate([np.zeros((1, 1), np.int64), summary_ids[:, :2]], 1).repeat(B, 0)   # [B, S]
S = dec_ids.shape[1]
y = layers.embed_tokens(dec_ids, table, math.sqrt(M)) + layers.sinusoidal_positions(0, S, M, np)  # [B, S, M]
cross_mask = layers.additive_mask(attention_mask, np.float32, np)[:, None, None, :]   # [B, 1, 1, T]
self_mask = dec.causal_mask(S, 0, np.float32, np)                                     # [1, 1, S, S]
print("decoder input [B, S, M] =", y.shape)
print("causal mask (0 = may attend):\\n", (self_mask[0, 0] == 0).astype(int))
dec_states = [y]
for i, lp in enumerate(P["decoder"]["layers"]):
    kv = dec.cross_kv(encoded, lp["encoder_attn"], cfg.decoder_attention_heads)     # ([B, H, T, D], [B, H, T, D])
    y, cache, self_probs, cross_probs = dec.decoder_layer(y, lp, cfg, self_mask, kv, cross_mask)
    dec_states.append(y)
    print(f"layer {i}: cross k/v {kv[0].shape}  self-attn cache k {cache[0].shape}  "
          f"self probs {self_probs.shape}  cross probs {cross_probs.shape}")
y = layers.layer_norm(y, P["decoder"]["layer_norm"])           # [B, S, M]
"""),
    md("""
## 9. The LM head: the embedding table again

The logits are the final hidden states times the (tied) embedding table: `[B, S, M] @ [M, V]`.
No bias, no √M here. (The first paragraph we fed holds the document's first key sentence, "According to
the market ledger, Wendel returned 87 blankets to Ironmere.", and we fed the start of that fact as the
decoder's input: row 0's predictions should continue it.)
"""),
    code("""
logits = layers.linear(y, model.lm_head_weight)                # [B, S, V]
print("logits [B, S, V] =", logits.shape)
out = model(input_ids=ids, attention_mask=attention_mask, decoder_input_ids=dec_ids, output_hidden_states=True)
print("by hand == model(...):", np.abs(logits - out.logits).max())
best = logits[0].argmax(-1)
print("predicted next tokens (row 0):", tok.convert_ids_to_tokens(best.tolist()))
print("teacher-forced targets       :", tok.convert_ids_to_tokens(summary_ids[0, :S].tolist()))
"""),
    md("""
A quirk worth knowing: in `decoder_hidden_states` (as in transformers) each entry is a layer's
*input*, and the **last entry is the output of the final layer norm**, not the raw output of the last
layer. So there are `decoder_layers + 1` entries.
"""),
    code("""
hs = out.decoder_hidden_states
print(len(hs), "decoder hidden states for", cfg.decoder_layers, "layers")
print("entry 0 == embeddings + positions:", np.abs(hs[0] - dec_states[0]).max())
print("entry 1 == output of layer 0     :", np.abs(hs[1] - dec_states[1]).max())
print("last entry == final layer norm   :", np.abs(hs[-1] - y).max(),
      "  (raw output of the last layer differs by", float(np.abs(hs[-1] - dec_states[-1]).max()), ")")
"""),
    md("""
## 10. Check against transformers (when installed)

The same checkpoint directory loads in `transformers.PegasusXForConditionalGeneration`. We run both
on the same inputs and print the largest absolute difference of every output, next to the largest
value (the scale). They agree to float32 rounding — about 1e-7 to 1e-6 relative to the scale; the
hidden states grow with depth (and the un-normalized global tokens most), so their absolute
differences are larger. Only the order of floating-point sums differs. If transformers (or torch) is not installed, this cell says so
and skips the comparison.
"""),
    code("""
import minipegx.parity
from minipegx.errors import BackendError

try:
    ref = minipegx.parity.load_reference(minipegx.demo_model_path())   # transformers, quietly
except BackendError as e:
    print(f"skipping the comparison: {e}")
else:
    import torch
    with torch.no_grad():
        r = ref(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(attention_mask),
                decoder_input_ids=torch.as_tensor(dec_ids), output_hidden_states=True, output_attentions=True)
    mine = model(input_ids=ids, attention_mask=attention_mask, decoder_input_ids=dec_ids,
                 output_hidden_states=True, output_attentions=True)

    def row(name, a, b):
        b = b.detach().double().numpy()
        err = np.abs(np.asarray(a, np.float64) - b).max()
        print(f"{name:38s} {str(tuple(a.shape)):>18s}  max |err| {err:8.1e}  max |ref| {np.abs(b).max():8.1e}")

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
"""),
    md("""
**Next:** `02_attention.ipynb` draws the attention patterns of these layers and the real
probabilities on the long example document.
"""),
]


# ==================================================================================================
# 02 — attention: the patterns and the real probabilities
# ==================================================================================================
ATTENTION = [
    md(f"""
# 02 · Staggered local and global attention: patterns and real probabilities

The PEGASUS-X encoder never builds the T × T attention matrix. A token attends to the **G global
tokens** and to the **K tokens of its own block**; every other layer the blocks are **staggered** by
K/2 so that information crosses block borders (the paper's Figure 2); a global token attends to
**everything** (Phang, Zhao & Liu 2022, [arXiv:2208.04347](https://arxiv.org/abs/2208.04347),
the architecture ablations on block-local attention, staggering and global tokens).

This notebook draws who *may* attend whom (`viz.attention_pattern`), what the demo model *does*
attend on the long example document (`viz.plot_attention`, `viz.densify`), where the summary looks
(`viz.plot_cross_attention`) and how many layers information needs to travel (`viz.influence_hops`).

{LEGEND}

In every picture the axis is the reference's: **the G global tokens first, then the T tokens**, so
index G + t is token t; rows are queries, columns keys.
"""),
    code("""
%matplotlib inline
import numpy as np

import minipegx
from minipegx import viz

model = minipegx.from_pretrained(None)                        # the bundled demo model
cfg = model.config
tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path())
K, G, H = cfg.block_size, cfg.num_global_tokens, cfg.encoder_attention_heads
print(f"block size K={K}, global tokens G={G}, heads H={H}, encoder layers {cfg.encoder_layers}, "
      f"staggered layers {[i for i in range(cfg.encoder_layers) if cfg.is_staggered(i)]}")
"""),
    md("""
## 1. Who may attend whom

`attention_pattern(config, T, layer)` is a boolean `[G+T, G+T]` matrix. For T = 256 and K = 64 there
are 4 blocks in layer 0 (the diagonal squares), the G global rows and columns are full, and in the
staggered layer 1 the squares are shifted by K/2 = 32 (one block more; the first and last are half
padding).
"""),
    code("""
T = 256
for layer in range(2):
    pat = viz.attention_pattern(cfg, T, layer=layer)          # [G+T, G+T] bool
    print(f"layer {layer}: pattern {pat.shape}, {pat.mean():.1%} of all pairs allowed; "
          f"token 40 sees tokens {np.flatnonzero(pat[G + 40, G:])[[0, -1]]} and {pat[G + 40, :G].sum()} globals")
viz.plot_attention_pattern(cfg, T, layer=0)
"""),
    code("""
viz.plot_attention_pattern(cfg, T, layer=1)
"""),
    md("""
The union over all layers shows what staggering buys: the staggered squares overlap the borders of
the unstaggered ones, so over two layers a token's neighbourhood reaches into the next block.
With an attention mask, padded keys are never attended (grey): here a batch row with 200 real tokens.
"""),
    code("""
mask = np.r_[np.ones(200, int), np.zeros(T - 200, int)]
viz.plot_attention_pattern(cfg, T, layer=None, attention_mask=mask)
"""),
    md("""
## 2. The real probabilities on the long example document

We encode the whole example document (about 2 500 tokens, 40 blocks of 64) with `output_attentions=True`.
Each layer returns the blocked tensors, never a T × T matrix:
`local [B, H, N, K, G+K]` (N + 1 blocks in a staggered layer) and `global [B, H, G, G+P]`.
"""),
    code("""
doc = minipegx.example_document()
batch = tok([doc], return_tensors="np")
ids, attention_mask = batch["input_ids"], batch["attention_mask"]
T = ids.shape[1]
out = model.encode(ids, attention_mask, output_attentions=True)
for i, a in enumerate(out.attentions):
    print(f"layer {i}: local {a['local'].shape}  global {a['global'].shape}  "
          f"({sum(x.nbytes for x in a.values()) / 2**20:.1f} MiB; a dense [B, H, G+T, G+T] would be "
          f"{H * (G + T) ** 2 * 4 / 2**20:.0f} MiB)")
"""),
    md("""
The first 256 tokens, mean over heads, layer 0 then the staggered layer 1. Inside each block the
model mostly attends to nearby tokens and to a few global tokens (the dark columns on the left).
"""),
    code("""
viz.plot_attention(out, cfg, layer=0, region=(0, 256))
"""),
    code("""
viz.plot_attention(out, cfg, layer=1, region=(0, 256))
"""),
    md("""
The whole document at once: `plot_attention` pools tiles of cells (here the max over each tile) from
the blocked tensors, so the picture stays legible and nothing T × T is allocated. The global rows at
the top show that global tokens read the whole document.
"""),
    code("""
viz.plot_attention(out, cfg, layer=2, max_pixels=400, log=True)
"""),
    md("""
`densify` stitches one layer's blocked probabilities into the dense `[H, G+T, G+T]` picture (fine for
a short region; H (G+T)² floats). Two checks a student can do: every row sums to 1, and the
probabilities are non-zero exactly where the pattern allows attention — the padding of the last
block and of the staggered half-blocks gets probability **exactly 0**, because masks use
`finfo(float32).min` and `exp(finfo.min - max)` underflows to 0.
"""),
    code("""
short = tok([doc.split("\\n\\n")[0]], return_tensors="np")["input_ids"]        # one paragraph, ~100 tokens
Ts = short.shape[1]
o = model.encode(short, output_attentions=True)
for layer in range(cfg.encoder_layers):
    dense = viz.densify(o.attentions[layer], cfg, layer, Ts)                 # [H, G+T, G+T]
    pattern = viz.attention_pattern(cfg, Ts, layer=layer)
    print(f"layer {layer}: dense {dense.shape}, rows sum to 1: {np.allclose(dense.sum(-1), 1, atol=1e-5)}, "
          f"non-zero exactly inside the pattern: {np.array_equal(dense.max(0) > 0, pattern)}")
"""),
    md("""
## 3. How much goes through the global tokens?

Per layer and head: the share of a token's attention that goes to the G global tokens, and the share
of a global token's attention that goes to other global tokens (the rest goes to the document).
"""),
    code("""
print("layer  head  token->globals  global->globals")
for layer, a in enumerate(out.attentions):
    local = a["local"][0]                                                  # [H, N, K, G+K]
    shift = K // 2 if cfg.is_staggered(layer) else 0
    N = local.shape[1]
    position = np.arange(N)[:, None] * K + np.arange(K) - shift            # [N, K] token of each query row
    real = (position >= 0) & (position < T)                                # padding queries are ignored
    to_globals = local[..., :G].sum(-1)[:, real].mean(-1)                  # [H]
    g_to_globals = a["global"][0, ..., :G].sum(-1).mean(-1)                # [H]
    for h in range(H):
        print(f"{layer:5d} {h:5d} {to_globals[h]:15.1%} {g_to_globals[h]:16.1%}")
"""),
    md("""
## 4. Where does the summary look? Cross-attention

The decoder reads the encoder's **tokens** (not the global tokens) through cross-attention,
`[B, H, S, T]` per decoder layer. We generate a summary and feed it back teacher-forced with
`output_attentions=True`. Row s is the decoder *input* at step s (the start token, then the summary
shifted right).

How peaked is it? The entropy of a row is ln T ≈ 7.8 nats when the attention is uniform over the
T tokens and 0 when it sits on one token. We pick the most peaked (layer, head) and draw it, keeping
the 40 source tokens that receive the most attention. A model that copies names and numbers from
the document shows bright cells where a summary token meets its source; a model whose entropies sit
near ln T barely looks at the document and writes from its own language model — worth checking for
any summarizer.
"""),
    code("""
summary = model.generate(ids, attention_mask, num_beams=1, max_new_tokens=40)    # [1, S+1], starts with 0
print(tok.decode(summary[0], skip_special_tokens=True))
dec_in = summary[:, :-1]                                                         # the decoder inputs
o = model(input_ids=ids, attention_mask=attention_mask, decoder_input_ids=dec_in, output_attentions=True)
print("cross-attention per decoder layer [B, H, S, T]:", o.cross_attentions[-1].shape)
print(f"mean entropy per (layer, head), uniform would be ln T = {np.log(T):.2f}:")
entropy = np.array([(-(c[0] * np.log(c[0] + 1e-30)).sum(-1)).mean(-1) for c in o.cross_attentions])  # [layers, H]
print(np.round(entropy, 2))
layer, head = np.unravel_index(entropy.argmin(), entropy.shape)
print(f"most peaked: decoder layer {layer}, head {head}")
viz.plot_cross_attention(o, tok.convert_ids_to_tokens(ids[0].tolist()), tok.convert_ids_to_tokens(dec_in[0].tolist()),
                         layer=int(layer), head=int(head), top_k_sources=40)
"""),
    md("""
## 5. How far does information travel? Influence hops

`influence_hops(config, T)[i, j]` is the number of encoder layers after which token j can influence
token i (−1: never within the model's layers). Without global tokens and without staggering, a
token never leaves its block; staggering lets information creep K/2 further per layer; with global
tokens every pair is connected after 2 layers (token → global token → token).
"""),
    code("""
T = 1024
print("fraction of (i, j) pairs connected after all", cfg.encoder_layers, "layers:")
for use_global in (False, True):
    for stagger in (False, True):
        hops = viz.influence_hops(cfg, T, use_global=use_global, stagger=stagger)   # [T, T] int
        print(f"  globals={use_global!s:5}  stagger={stagger!s:5}: {(hops >= 0).mean():6.1%}"
              f"   (token 0 reaches token {np.flatnonzero(hops[:, 0] >= 0).max()})")
viz.plot_influence(cfg, T, use_global=False)
"""),
    md("""
bertviz users: `viz.to_bertviz(out, cfg, tokens)` turns a short input's attentions into the
`[1, H, L, L]` per-layer arrays `model_view` expects (globals first, labels from
`viz.encoder_token_labels`). bertviz itself is not a dependency of minipegx.

**Next:** `03_decoding.ipynb` steps through greedy and beam search.
"""),
]


# ==================================================================================================
# 03 — decoding, one step at a time
# ==================================================================================================
DECODING = [
    md("""
# 03 · Decoding: greedy and beam search, one step at a time

`model.generate` reproduces transformers' `generate()` for an encoder-decoder, option for option.
It is written once, as generators that **yield one small record per step**:
`minipegx.generate.greedy_steps` (a `GreedyStep`: the tokens so far, the chosen token, the top-5
alternatives) and `beam_search_steps` (a `BeamStep`: the alive beams and their scores, the 2×beams
candidates with their fate — kept, finished or pruned — and the finished hypotheses). `generate`
just runs them to the end, so what you see here is exactly what it does.

Shapes in this notebook: B inputs, T encoder tokens, H heads, D head dim, V vocabulary,
L tokens so far (start token included). Careful: in `generate.py` **K counts beams**
(not the block size) and C = 2K candidates.
"""),
    code("""
import os

import numpy as np

import minipegx
from minipegx.generate import beam_search_steps, greedy_steps

model = minipegx.from_pretrained(None)
tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path())
batch = tok([minipegx.example_document()], return_tensors="np")
ids, attention_mask = batch["input_ids"], batch["attention_mask"]
print("input [B, T] =", ids.shape)
print("generation_config.json of the demo model:", model.generation_config)
"""),
    md("""
The defaults come from `generation_config.json` (here 4 beams and `early_stopping: true`), then
`config.json`, then transformers' defaults — the same precedence as transformers. Always pass
`max_new_tokens`: a real PEGASUS-X checkpoint says `max_length: 16384`.

## 1. Greedy search

The encoder runs **once**; the cross-attention keys and values are computed once per input
(`cross_kv_shape`, `[B, H, T, D]`); each step feeds only the last token and the self-attention cache
grows by one. We must say `num_beams=1`, since the model's default is beam search.
"""),
    code("""
def piece(i):
    return tok.convert_ids_to_tokens([int(i)])[0]

print(f"{'step':>4}  {'chosen':<12} {'log p':>7}   top-5 alternatives (log p)")
for st in greedy_steps(model, ids, attention_mask, num_beams=1, max_new_tokens=30):
    alts = "  ".join(f"{piece(t)}({lp:.2f})" for t, lp in zip(st.top_tokens[0][1:], st.top_logprobs[0][1:]))
    print(f"{st.step:4d}  {piece(st.tokens[0]):<12} {st.top_logprobs[0][0]:7.3f}   {alts}")
print("cross-attention keys per decoder layer [B, H, T, D]:", st.cross_kv_shape, "  done:", st.done)
greedy = st.sequences
print(tok.decode(greedy[0], skip_special_tokens=True))
assert np.array_equal(greedy, model.generate(ids, attention_mask, num_beams=1, max_new_tokens=30))
"""),
    md("""
A greedy summary can be locally likely and globally poor: each step commits to one token. If the
last step shows `</s>` with log-prob 0 and every alternative at −inf, that is
`forced_eos_token_id`: at the maximum length transformers forces the end of the sequence.

## 2. Beam search, as transformers does it

Per step, for K beams (transformers' `_beam_search`):

1. every alive beam's next-token log-probs are added to its cumulative score: K × V totals;
2. the best **C = 2K** candidates are taken (two per beam, so that K survive even if K of them end);
3. a candidate ending in `</s>` (or at the maximum length) and ranked in the top K **finishes**: it
   enters the pool of finished hypotheses if it beats the pool's worst, scored
   `sum of log-probs / generated_length ** length_penalty`;
4. the best K candidates that did not finish become the alive beams; the rest are **pruned**;
5. at step 1, beams 1..K−1 start at −1e9, so the K beams are K different first tokens, not K copies.

With `early_stopping=True` the search stops once K hypotheses are finished. The table below shows,
for the first steps, the alive beams (score, last tokens) and every candidate with its fate.
"""),
    code("""
def tail(seq, n=6):
    return "".join(tok.convert_ids_to_tokens([int(i) for i in seq[-n:]])).replace("\\u2581", " ")

def score(s):
    return f"{s:9.4f}" if s > -1e8 else "    -1e9 "    # -1e9: transformers' "no beam here"

def show(st, b=0):
    print(f"--- step {st.step}/{st.max_steps}" + ("   (search over for this input)" if st.done[b] else ""))
    for k, (seq, s) in enumerate(zip(st.beams[b], st.beam_scores[b])):
        print(f"  beam {k}  {score(s)}  ...{tail(seq)!r}")
    for t, p, s, kept, fin in zip(st.candidate_tokens[b], st.candidate_parents[b], st.candidate_scores[b],
                                  st.kept[b], st.finished[b]):
        fate = "kept" if kept else "finished" if fin else "pruned"
        print(f"    candidate: beam {p} + {piece(t)!r:<12} {score(s)}  {fate}")
    done = int(st.hypothesis_done[b].sum())
    print(f"  finished hypotheses: {done}" + (f", best {st.hypothesis_scores[b].max():.4f}" if done else ""))

steps = list(beam_search_steps(model, ids, attention_mask, num_beams=4, max_new_tokens=80))
for st in steps[:3]:
    show(st)
"""),
    md("""
The whole search in one table (every 5th step, and every step where a hypothesis finished): the
best alive score, how many of the C = 8 candidates were kept, finished and pruned, and how many
finished hypotheses the pool holds. When the last step is reached, any beam still alive is forced to
end (`forced_eos_token_id`) and the alive scores show −1e9: no beam is left.
"""),
    code("""
print(f"{'step':>4} {'best alive':>11} {'kept':>5} {'finished':>9} {'pruned':>7} {'pool':>5}")
for st in steps:
    if st.step % 5 and not st.finished[0].any() and st is not steps[-1]:
        continue
    print(f"{st.step:4d} {score(st.beam_scores[0].max()):>11} {int(st.kept[0].sum()):5d} {int(st.finished[0].sum()):9d} "
          f"{int(st.pruned[0].sum()):7d} {int(st.hypothesis_done[0].sum()):5d}")
show(steps[-1])
"""),
    md("""
The result of `generate` is the best finished hypothesis (the pool is sorted, best first), cropped
to its length. With `return_dict_in_generate=True, output_scores=True` it also returns
`sequences_scores`, the length-penalised score.
"""),
    code("""
best = steps[-1].hypotheses[0, 0]
res = model.generate(ids, attention_mask, num_beams=4, max_new_tokens=80, return_dict_in_generate=True,
                     output_scores=True)
print("generate:    ", tok.decode(res.sequences[0], skip_special_tokens=True))
with open(os.path.join(minipegx.demo_model_path(), os.pardir, "example_summary.txt"), encoding="utf-8") as f:
    print("true summary:", f.read().strip())
print("sequences_scores:", res.sequences_scores, " pool's best:", steps[-1].hypothesis_scores[0, 0])
assert np.array_equal(res.sequences[0], best[:res.sequences.shape[1]])
"""),
    md("""
## 3. The length penalty

Finished hypotheses are ranked by `sum log p / length ** length_penalty`. A larger exponent
divides long hypotheses' (negative) sums by more, which favours **longer** outputs; a smaller one
favours shorter ones. Real PEGASUS-X checkpoints use `length_penalty: 0.8`. With
`num_return_sequences=4` we see the whole pool, best first, under two penalties (if all hypotheses
have the same length, the penalty rescales their scores but cannot change their order).
"""),
    code("""
for lp in (0.5, 2.0):
    r = model.generate(ids, attention_mask, num_beams=4, num_return_sequences=4, max_new_tokens=80,
                       length_penalty=lp, return_dict_in_generate=True, output_scores=True)
    print(f"length_penalty {lp}:")
    for seq, s in zip(r.sequences, r.sequences_scores):
        ends = np.flatnonzero(seq[1:] == tok.eos_token_id)        # finished rows are padded with </s>
        n = int(ends[0]) + 1 if len(ends) else len(seq) - 1        # generated tokens, </s> included
        print(f"  {float(s):9.4f}  {n:3d} tokens  {tok.decode(seq, skip_special_tokens=True)}")
"""),
    md("""
## 4. The same ids as transformers (when installed)

transformers' `generate` on the same checkpoint, with the same options, gives the same ids — here on
the document's first eight paragraphs (~670 tokens), which hold two of its facts (transformers' beam
search copies the encoder output for every beam, which makes it slow on all 2 500 tokens).
"""),
    code("""
import minipegx.parity
from minipegx.errors import BackendError

try:
    ref = minipegx.parity.load_reference(minipegx.demo_model_path())   # transformers, quietly
except BackendError as e:
    print(f"skipping the comparison: {e}")
else:
    import torch
    short = tok(["\\n\\n".join(minipegx.example_document().split("\\n\\n")[:8])], return_tensors="np")
    with torch.no_grad():
        ref_ids = ref.generate(torch.as_tensor(short["input_ids"]), attention_mask=torch.as_tensor(short["attention_mask"]),
                               num_beams=4, max_new_tokens=40).numpy()
    mine = model.generate(short["input_ids"], short["attention_mask"], num_beams=4, max_new_tokens=40)
    print("minipegx:    ", tok.decode(mine[0], skip_special_tokens=True))
    print("transformers:", tok.decode(ref_ids[0], skip_special_tokens=True))
    print("identical ids:", np.array_equal(mine, ref_ids))
"""),
]


# ==================================================================================================
# 04 — the parity exercise
# ==================================================================================================
PARITY = [
    md("""
# 04 · Parity testing for a course: write a layer, let the checker find your bug

> **This notebook needs transformers and torch** (the `test` extra:
> `pip install -e ".[test]" "torch==2.13.0"`, CPU build is enough). minipegx itself never imports them;
> here they are the reference we compare against.

`minipegx.parity.compare` runs minipegx and transformers' `PegasusXForConditionalGeneration` on the
same input and compares **every intermediate**: minipegx records its activations in a `trace` dict
under the Hugging Face module names (`model.encoder.layers.1.self_attn`), the reference's are caught
with forward hooks on the same modules. The report lists them in execution order and names the
**first divergence** — the first place beyond `|err| <= atol + rtol * max|ref|` (1e-4 + 1e-5 ·
scale: fp32 summation order alone gives ~1e-7 relative per operation, so only real bugs cross it).

With `patch={"minipegx.encoder.global_local_attention": my_fn}` a student's function replaces
minipegx's for the duration of the comparison. The exercise: write a layer, check it, read where
it diverges, fix it. See `docs/parity.md` for the methodology and tolerances.
"""),
    code("""
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm's notebook hint, from transformers
try:
    import torch
    import transformers
except ImportError as e:
    raise ImportError("this notebook compares with transformers: pip install -e '.[test]' 'torch==2.13.0'") from e
import dataclasses

import numpy as np

import minipegx
from minipegx import layers, parity
from minipegx.layers import linear, softmax

path = minipegx.demo_model_path()
model = minipegx.from_pretrained(path)
reference = parity.load_reference(path)          # transformers, quietly
tok = minipegx.Tokenizer.from_pretrained(path)
text = "\\n\\n".join(minipegx.example_document().split("\\n\\n")[:2])   # ~190 tokens: quick, 4 blocks
batch = tok([text], return_tensors="np")
ids, mask = batch["input_ids"], batch["attention_mask"]
cfg = model.config
print("input [B, T] =", ids.shape, f"-> {-(-ids.shape[1] // cfg.block_size)} blocks of K={cfg.block_size}")

def check(**patch):
    \"\"\"Compare with transformers, with minipegx functions replaced by yours; print the verdict.\"\"\"
    report = parity.compare(None, ids, mask, model=model, reference=reference,
                            patch={f"minipegx.{k.replace('__', '.')}": f for k, f in patch.items()})
    bad = [r for r in report.rows if not r.ok]
    print(f"{len(report.rows)} intermediates compared, {len(bad)} beyond tolerance;",
          "all within tolerance" if report.ok else f"first divergence: {report.first_divergence}")
    return report
"""),
    md("""
First the unmodified model: every intermediate, layer by layer, then two greedy decoding steps
(each side with its own cache).
"""),
    code("""
report = parity.compare(None, ids, mask, model=model, reference=reference, steps=2)
print(report)
"""),
    md("""
Two things to notice. The errors grow with depth: the residual stream of a trained model (never
normalized, only added to) grows layer after layer, and float32 rounding grows with it. And `embed_positions` is not exactly equal: NumPy's and
torch's float32 `exp` and `sin` may differ in the last bit, and at position t a one-ulp difference
in a frequency becomes t times larger. On this 190-token input both stay far below tolerance; on
inputs of thousands of tokens they can cross a fixed tolerance without any bug (see
[docs/parity.md](../docs/parity.md)), so exercises use short inputs.
"""),
    md("""
## Exercise 1 · `layer_norm`

Write `layer_norm(x, p, eps=1e-5)`: normalize over the last axis, then scale by `p["weight"]` and
shift by `p["bias"]`. Shapes: x `[..., M]`, weight and bias `[M]`.

A classic bug, shown below: computing the variance the way `torch.var` does **by default**, with
Bessel's correction (divide by M − 1). `nn.LayerNorm` uses the *biased* variance (divide by M). The
difference is a factor √(M/(M−1)) ≈ 1.004 for M = 128 — small, but far beyond tolerance, and the
report names the very first layer norm of the encoder.

The encoder and decoder modules import `layer_norm` by name, so we patch it in both.
"""),
    code("""
def student_layer_norm(x, p, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).sum(axis=-1, keepdims=True) / (x.shape[-1] - 1)   # BUG: unbiased variance
    return (x - mean) / np.sqrt(var + eps) * p["weight"] + p["bias"]

report = check(encoder__layer_norm=student_layer_norm, decoder__layer_norm=student_layer_norm)
print("\\n".join(str(report).splitlines()[:6]))
"""),
    code("""
def student_layer_norm(x, p, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)                       # fixed: biased variance
    return (x - mean) / np.sqrt(var + eps) * p["weight"] + p["bias"]

report = check(encoder__layer_norm=student_layer_norm, decoder__layer_norm=student_layer_norm)
"""),
    md("""
## Exercise 2 · `global_local_attention`

The heart of PEGASUS-X. Signature and contract (as `minipegx.encoder.global_local_attention`):

```
x    [B, P, M] tokens, P a multiple of K       g [B, G, M] global tokens
mask [B, P] additive (0 or finfo.min)          p {"q_proj", "k_proj", "v_proj", "out_proj"}: {"weight": [M, M]}, no biases
output_attentions: whether the caller wants the probabilities (returning them always is fine too)
returns (token output [B, P, M], global output [B, G, M],
         {"local": [B, H, N, K, G+K], "global": [B, H, G, G+P]} or None)
```

* a token attends the G global tokens and the K tokens of its block (keys: globals first);
* a global token attends all G global tokens and all P tokens;
* both use the same q/k/v/out projections; the queries are multiplied by D^-1/2 **before** the product.

Fill in the scaffold below (it is not run by the checker until you call `check`). Then look at the
buggy version after it.
"""),
    code("""
def my_global_local_attention(x, g, mask, p, num_heads, block_size, output_attentions=True):
    B, P, M = x.shape
    G, H, K = g.shape[1], num_heads, block_size
    N, D = P // K, M // H
    # 1. project tokens and global tokens with p["q_proj"]["weight"] etc. (layers.linear), split heads
    # 2. global rows: scores [B, H, G, G+P] over (global keys, token keys), add the mask, softmax, times values
    # 3. each block: scores [B, H, N, K, G+K] over (global keys, the block's keys), mask, softmax, times values
    # 4. merge heads, out_proj for both outputs
    raise NotImplementedError("your turn: then run check(encoder__global_local_attention=my_global_local_attention)")
"""),
    md("""
A student's version, written with a loop over blocks for readability — and one bug: the queries
are never scaled by D^-1/2. The report points at the first encoder attention.
"""),
    code("""
def student_attention(x, g, mask, p, num_heads, block_size, output_attentions=True, scale_queries=False):
    B, P, M = x.shape
    G, H, K = g.shape[1], num_heads, block_size
    N, D = P // K, M // H
    scale = D ** -0.5 if scale_queries else 1.0                           # the bug when False

    def proj(a, name):                                                    # [B, L, M] -> [B, H, L, D]
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

    def out(a):                                                                   # [B, H, L, D] -> [B, L, M]
        return linear(a.transpose(0, 2, 1, 3).reshape(B, -1, M), p["out_proj"]["weight"])

    return out(t_out), out(g_out), {"local": local_probs, "global": global_probs}

report = check(encoder__global_local_attention=student_attention)
print("\\n".join(str(report).splitlines()[:8]))
"""),
    md("""
Fixed: scale the queries. Note that scaling the *scores* after the product instead would also pass
— it is the same math, only the rounding differs (~1e-7) — but the reference pre-scales the
queries, and matching its order of operations is what keeps fp16/bf16 runs close too.
"""),
    code("""
def fixed_attention(*args, **kwargs):
    return student_attention(*args, **kwargs, scale_queries=True)

report = check(encoder__global_local_attention=fixed_attention)
"""),
    md("""
## Exercise 3 · the stagger

`stagger(x, mask, block_size)` pads K/2 tokens on both sides of the (layer-normed) tokens so the odd
layers see blocks shifted by half a block; the padding must be **masked** with `finfo.min`.
The student below pads the tokens but gives the padded positions a mask of 0 ("keep"): the
half-blocks at both ends then attend to zero vectors. Layer 0 is not staggered, so the report
agrees on all of layer 0 and names **layer 1**, the first staggered layer.
"""),
    code("""
def student_stagger(x, mask, block_size):
    h = block_size // 2
    x = np.pad(x, ((0, 0), (h, h), (0, 0)))
    mask = np.pad(mask, ((0, 0), (h, h)))                     # BUG: padding "kept" (0) instead of finfo.min
    return x, mask

report = check(encoder__stagger=student_stagger)
"""),
    code("""
def student_stagger(x, mask, block_size):
    h = block_size // 2
    x = np.pad(x, ((0, 0), (h, h), (0, 0)))
    mask = np.pad(mask, ((0, 0), (h, h)), constant_values=np.finfo(mask.dtype).min)   # fixed
    return x, mask

report = check(encoder__stagger=student_stagger)
"""),
    md("""
And forgetting the stagger altogether — a model whose config turns `stagger_local_blocks` off —
diverges at the same place:
"""),
    code("""
unstaggered = dataclasses.replace(model, config=cfg.replace(stagger_local_blocks=False))
report = parity.compare(None, ids, mask, model=unstaggered, reference=reference)
print("first divergence:", report.first_divergence)
"""),
    md("""
## Exercise 4 · decoding with a cache

`compare(..., steps=n)` also decodes n more tokens greedily (the reference's choice fed to both
sides, each with its own cache) and compares every intermediate at every step. A common cache bug:
the positions of a new token restart at 0 instead of continuing after the cached steps. Step 0 (the
full forward) agrees; the report names the first cached step.
"""),
    code("""
def student_positions(start, length, dim, xp, dtype="float32"):
    return layers.sinusoidal_positions(0, length, dim, xp, dtype)        # BUG: ignores `start`

report = parity.compare(None, ids, mask, model=model, reference=reference, steps=2,
                        patch={"minipegx.decoder.sinusoidal_positions": student_positions})
print("first divergence:", report.first_divergence)
"""),
    md("""
**For a course:** hand out this notebook with the fixed versions removed; a student's function
passes when `check(...)` prints "all within tolerance". The same checker runs on a real checkpoint
(`parity.compare("path/to/pegasus-x-base", ...)`, or `minipegx parity path/to/pegasus-x-base` on the
command line) — see `docs/real_checkpoints.md`.
"""),
]


# ==================================================================================================
# 05 — long inputs: cost and scale, measured
# ==================================================================================================
LONG_INPUTS = [
    md(f"""
# 05 · Long inputs: cost and scale, measured

Full self-attention costs O(T²) time and memory per layer: at 16 384 tokens one layer's probabilities
are H · T² floats. PEGASUS-X's encoder costs O(T · (K + G)): each token attends its block of K and
the G global tokens, and the G global tokens attend all T (the paper's efficiency argument, and the
reason PEGASUS-X runs 16k-token inputs; Phang, Zhao & Liu 2022,
[arXiv:2208.04347](https://arxiv.org/abs/2208.04347)).

Here we **measure** the demo-shaped encoder (M = 128, 3 layers, K = 64, G = 16) at 1k–16k tokens,
look at the real size of its attention tensors, and set both against the cost model
`viz.encoder_cost` and against full attention. Timings depend on your machine (and on what else runs
on it); the shapes of the curves do not. The whole notebook runs in well under a minute.

{LEGEND}
"""),
    code("""
%matplotlib inline
import dataclasses
import time
import tracemalloc

import numpy as np

import minipegx
from minipegx import viz

model = minipegx.from_pretrained(None)
cfg = model.config
rng = np.random.default_rng(0)
lengths = [1024, 2048, 4096, 8192, 16384]

def timed(fn, repeat=2):
    \"\"\"Best wall time of `repeat` runs, and the peak memory NumPy allocated during the first.\"\"\"
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
"""),
    md("""
## 1. Time and memory of the encoder, 1k to 16k tokens

Random token ids are enough: the cost does not depend on the text. `tracemalloc` sees NumPy's
allocations, so its peak is the encoder's working memory (weights excluded: they were allocated
before). Time and memory **per token** stay about constant — linear cost — up to the noise of a
shared machine (best of 2 runs).
"""),
    code("""
measured, peaks = {}, {}
print(f"{'tokens':>7} {'seconds':>8} {'us/token':>9} {'peak MiB':>9} {'KiB/token':>10} {'model GFLOP':>12}")
for T in lengths:
    ids = rng.integers(105, cfg.vocab_size, size=(1, T))
    measured[T], peaks[T] = timed(lambda: model.encode(ids))
    print(f"{T:7d} {measured[T]:8.3f} {measured[T] / T * 1e6:9.1f} {peaks[T] / 2**20:9.1f} {peaks[T] / T / 1024:10.1f} "
          f"{viz.encoder_cost(cfg, T)['flops'] / 1e9:12.2f}")
"""),
    md("""
## 2. The attention tensors: measured bytes = the cost model

With `output_attentions=True` the encoder returns each layer's probabilities in their blocked form,
`local [B, H, N, K, G+K]` and `global [B, H, G, G+P]`. Their size is exactly what `encoder_cost`
predicts as `score_bytes` (the largest layer: a staggered one, with one block more); full attention
would need `[B, H, T, T]`.
"""),
    code("""
print(f"{'tokens':>7} {'measured MiB':>13} {'cost model MiB':>15} {'full attention MiB':>19}")
for T in (1024, 4096, 16384):
    out = model.encode(rng.integers(105, cfg.vocab_size, size=(1, T)), output_attentions=True)
    largest = max(sum(a.nbytes for a in layer.values()) for layer in out.attentions)
    print(f"{T:7d} {largest / 2**20:13.2f} {viz.encoder_cost(cfg, T)['score_bytes'] / 2**20:15.2f} "
          f"{viz.encoder_cost(cfg, T, 'full')['score_bytes'] / 2**20:19.0f}")
    del out
"""),
    md("""
## 3. Full attention, measured on short inputs

Full attention is PEGASUS-X with **one block that holds every token** (and no stagger): the same
code, `block_size = T`. We time it only up to 2k tokens — at 16k one layer's probabilities alone
would take 4 GiB — and let the cost model extrapolate.
"""),
    code("""
full_measured = {}
print(f"{'tokens':>7} {'PEGASUS-X s':>12} {'full s':>8} {'full peak MiB':>14}")
for T in (512, 1024, 2048):
    ids = rng.integers(105, cfg.vocab_size, size=(1, T))
    full = dataclasses.replace(model, config=cfg.replace(block_size=T, stagger_local_blocks=False))
    full_measured[T], peak = timed(lambda: full.encode(ids))
    px, _ = timed(lambda: model.encode(ids))
    print(f"{T:7d} {px:12.3f} {full_measured[T]:8.3f} {peak / 2**20:14.1f}")
"""),
    md("""
## 4. Against the cost model

`viz.plot_cost` draws the FLOPs and memory of both encoders against length (log-log), and — given
the measured times — fits one FLOP rate to them and predicts the time of both. PEGASUS-X's line has
slope 1 (linear in T); full attention's bends to slope 2 once its attention, 4·T²·M FLOPs per layer,
outgrows the projections and the FFN, 8·T·M² + 4·T·M·F: beyond T ≈ 2M + F, which is 512 tokens for
this small model and about 4 600 for `pegasus-x-base` (M = 768, F = 3072).
"""),
    code("""
viz.plot_cost(cfg, [256, 512] + lengths + [32768], measured=measured)
"""),
    code("""
print(f"{'tokens':>7} {'PEGASUS-X GFLOP':>16} {'full GFLOP':>11} {'ratio':>6} {'full predicted s':>17} {'full measured s':>16}")
rate = sum(viz.encoder_cost(cfg, T)["flops"] for T in measured) / sum(measured.values())   # FLOP/s, fitted
for T in [512, 1024, 2048] + lengths[2:]:
    px, fu = viz.encoder_cost(cfg, T)["flops"], viz.encoder_cost(cfg, T, "full")["flops"]
    m = f"{full_measured[T]:16.3f}" if T in full_measured else f"{'-':>16}"
    print(f"{T:7d} {px / 1e9:16.2f} {fu / 1e9:11.2f} {fu / px:6.1f} {fu / rate:17.2f} {m}")
"""),
    md("""
What to take away:

* the encoder's time and its attention memory grow **linearly** with the input: 16× the tokens costs
  about 16× the time (plus a little: padding to whole blocks and the staggered layers' extra block);
* full attention's memory grows with T²: the probabilities of one layer at 16k tokens, H · T² floats,
  are 4 GiB here (H = 4), 12 GiB for `pegasus-x-base` (H = 12) and 16 GiB for `-large` (H = 16) —
  which is why PEGASUS-X exists;
* the decoder is not in these numbers: it reads the encoder's T tokens through cross-attention,
  O(S · T) per summary of S tokens, with keys and values computed once per input.

A real checkpoint has M = 768 (base) or 1024 (large), 12 or 16 encoder layers, K = 512 and G = 128;
`viz.encoder_cost(real_config, T)` gives its numbers without loading it.
"""),
    md("""
## Lower precision, layer by layer

Long inputs are where memory matters, so the same model in lower precision: `dtype="float16"` or
`"bfloat16"` (sums, softmax, layer norm and the residual stream stay float32 — see docs/precision.md for
why PEGASUS-X overflows fp16 in transformers and not here) and weight-only quantization
`quantize="int8"` (per output channel) or `"nf4"` (4-bit, blocks of 64, as bitsandbytes). Each row is
one layer's output, each column the largest error relative to float32's largest value, on the same
teacher-forced summary. Rounding errors stay flat with depth; quantization errors grow layer by layer.
"""),
    code('import numpy as np\nimport minipegx\n\npath = minipegx.demo_model_path()\ntok = minipegx.Tokenizer.from_pretrained(path)\nbatch = tok([minipegx.example_document()], return_tensors="np")\nids, mask = batch["input_ids"], batch["attention_mask"]\nref = minipegx.from_pretrained(path)\ndec = ref.generate(ids, mask, max_new_tokens=48)[:, :-1]          # teacher-force float32\'s summary\nout32 = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_hidden_states=True)\n\ndef rel(a, b):\n    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)\n    return np.abs(a - b).max() / np.abs(b).max()\n\ndef outputs(o):   # every layer\'s output, by name (the encoder\'s last layer through its final norm)\n    enc, dec_ = o.encoder_hidden_states, o.decoder_hidden_states\n    named = {f"encoder.layers.{i}": h for i, h in enumerate(enc[1:-1])}\n    named["encoder.layer_norm"] = enc[-1][0]\n    named.update({f"decoder.layers.{i}": h for i, h in enumerate(dec_[1:-1])})\n    named["decoder.layer_norm"], named["logits"] = dec_[-1], o.logits\n    return named\n\nref_layers = outputs(out32)\nprint(f"{\'layer output\':22}" + "".join(f"{m:>10}" for m in ("float16", "bfloat16", "int8", "nf4")))\nerrors = {}\nfor dtype, quantize in [("float16", None), ("bfloat16", None), ("float32", "int8"), ("float32", "nf4")]:\n    model = minipegx.from_pretrained(path, dtype=dtype, quantize=quantize)\n    o = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_hidden_states=True)\n    errors[quantize or dtype] = {n: rel(h, ref_layers[n]) for n, h in outputs(o).items()}\nfor n in ref_layers:\n    print(f"{n:22}" + "".join(f"{errors[m][n]:10.1e}" for m in errors))\n'),
]


# ==================================================================================================
NOTEBOOKS = {
    "01_architecture.ipynb": ARCHITECTURE,
    "02_attention.ipynb": ATTENTION,
    "03_decoding.ipynb": DECODING,
    "04_parity_exercise.ipynb": PARITY,
    "05_long_inputs.ipynb": LONG_INPUTS,
}


def build(name, cells, out_dir=HERE):
    """Write notebook `name` (cells without outputs, stable cell ids) into out_dir."""
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"          # stable ids: rebuilding gives the same file
    nbformat.validate(nb)
    nbformat.write(nb, Path(out_dir) / name)


def main(argv=None):
    wanted = (argv if argv is not None else sys.argv[1:]) or [""]
    for name, cells in NOTEBOOKS.items():
        if any(w in name for w in wanted):
            build(name, cells)
            print("wrote", HERE / name)


if __name__ == "__main__":
    main()
