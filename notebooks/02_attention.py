# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Staggered local and global attention: patterns and real probabilities
#
# The PEGASUS-X encoder never builds the T × T attention matrix. A token attends to the **G global
# tokens** and to the **K tokens of its own block**; every other layer the blocks are **staggered** by
# K/2 so that information crosses block borders (the paper's Figure 2); a global token attends to
# **everything** (Phang, Zhao & Liu 2022, [arXiv:2208.04347](https://arxiv.org/abs/2208.04347),
# the architecture ablations on block-local attention, staggering and global tokens).
#
# This notebook draws who *may* attend whom (`viz.attention_pattern`), what the first (short) demo
# model *does* attend on its example document, `example_document("short")` (`viz.plot_attention`,
# `viz.densify`), where the summary looks (`viz.plot_cross_attention`) and how many layers information
# needs to travel (`viz.influence_hops`).
#
# **Shape legend** (the same letters in every notebook, docstring and comment of minipegx):
# B batch, T tokens, P tokens padded to whole blocks, S decoder steps, N blocks, K block size,
# G global tokens, H heads, D head dim (M / H), F FFN width, M d_model, V vocabulary.
#
# In every picture the axis is the reference's: **the G global tokens first, then the T tokens**, so
# index G + t is token t; rows are queries, columns keys.

# %%
# %matplotlib inline
import numpy as np

import minipegx
from minipegx import viz

model = minipegx.from_pretrained(minipegx.demo_model_path("short"))  # the first (short) demo model
cfg = model.config
tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path("short"))
K, G, H = cfg.block_size, cfg.num_global_tokens, cfg.encoder_attention_heads
print(f"block size K={K}, global tokens G={G}, heads H={H}, encoder layers {cfg.encoder_layers}, "
      f"staggered layers {[i for i in range(cfg.encoder_layers) if cfg.is_staggered(i)]}")

# %% [markdown]
# ## 1. Who may attend whom
#
# `attention_pattern(config, T, layer)` is a boolean `[G+T, G+T]` matrix. For T = 256 and K = 64 there
# are 4 blocks in layer 0 (the diagonal squares), the G global rows and columns are full, and in the
# staggered layer 1 the squares are shifted by K/2 = 32 (one block more; the first and last are half
# padding).

# %%
T = 256
assert (T // K, K // 2) == (4, 32)
for layer in range(2):
    pat = viz.attention_pattern(cfg, T, layer=layer)          # [G+T, G+T] bool
    print(f"layer {layer}: pattern {pat.shape}, {pat.mean():.1%} of all pairs allowed; "
          f"token 40 sees tokens {np.flatnonzero(pat[G + 40, G:])[[0, -1]]} and {pat[G + 40, :G].sum()} globals")
viz.plot_attention_pattern(cfg, T, layer=0)

# %%
viz.plot_attention_pattern(cfg, T, layer=1)

# %% [markdown]
# The union over all layers shows what staggering buys: the staggered squares overlap the borders of
# the unstaggered ones, so over two layers a token's neighbourhood reaches into the next block.
# With an attention mask, padded keys are never attended (grey): here a batch row with 200 real tokens.

# %%
mask = np.r_[np.ones(200, int), np.zeros(T - 200, int)]
viz.plot_attention_pattern(cfg, T, layer=None, attention_mask=mask)

# %% [markdown]
# ## 2. The real probabilities on the example document
#
# We encode the whole example document (2 498 tokens, 40 blocks of 64) with `output_attentions=True`.
# Each layer returns the blocked tensors, never a T × T matrix:
# `local [B, H, N, K, G+K]` (N + 1 blocks in a staggered layer) and `global [B, H, G, G+P]`.

# %%
doc = minipegx.example_document("short")
batch = tok([doc], return_tensors="np")
ids, attention_mask = batch["input_ids"], batch["attention_mask"]
T = ids.shape[1]
assert (T, -(-T // K), K) == (2498, 40, 64)
out = model.encode(ids, attention_mask, output_attentions=True)
for i, a in enumerate(out.attentions):
    print(f"layer {i}: local {a['local'].shape}  global {a['global'].shape}  "
          f"({sum(x.nbytes for x in a.values()) / 2**20:.1f} MiB; a dense [B, H, G+T, G+T] would be "
          f"{H * (G + T) ** 2 * 4 / 2**20:.0f} MiB)")

# %% [markdown]
# The first 256 tokens, mean over heads, layer 0 then the staggered layer 1. Inside each block the
# model mostly attends to nearby tokens (the diagonal). The G global columns on the left look pale,
# yet tokens give the globals a large share of their attention (about a quarter in layer 0, 40% in
# layer 1, printed after the pictures): that share is spread over G = 16 columns and averaged over
# heads, so a global cell holds a few percent on average, the order of an ordinary key of the block,
# while the brightest cells of the layer reach about half. Only a few single cells of the global
# columns stand out.

# %%
viz.plot_attention(out, cfg, layer=0, region=(0, 256))

# %%
viz.plot_attention(out, cfg, layer=1, region=(0, 256))


# %%
def real_queries(layer, N):
    """[N, K] bool: which query rows of a layer's blocked attention are tokens, not padding."""
    shift = K // 2 if cfg.is_staggered(layer) else 0
    position = np.arange(N)[:, None] * K + np.arange(K) - shift            # [N, K] token of each query row
    return (position >= 0) & (position < T)


print("layer  to the globals  per global cell  per key of the block  brightest cell")
for layer in (0, 1):
    local = out.attentions[layer]["local"][0].mean(0)                      # [N, K, G+K], mean over heads
    rows = local[real_queries(layer, local.shape[0])]                      # [T, G+K]
    globals_, block = rows[:, :G], rows[:, G:]
    share, per_global = globals_.sum(-1).mean(), globals_.mean()
    print(f"{layer:5d} {share:15.1%} {per_global:16.1%} {block[block > 0].mean():21.1%} {rows.max():15.1%}")
    assert abs(share - {0: 0.25, 1: 0.40}[layer]) < 0.05 and G == 16            # the shares the text states
    assert per_global < 0.05 and per_global < rows.max() / 10 and 0.4 < rows.max() < 0.6   # pale, not dark

# %% [markdown]
# The whole document at once: `plot_attention` pools tiles of cells (here the max over each tile) from
# the blocked tensors, so the picture stays legible and nothing T × T is allocated. The global rows at
# the top show that global tokens read the whole document.

# %%
viz.plot_attention(out, cfg, layer=2, max_pixels=400, log=True)

# %% [markdown]
# `densify` stitches one layer's blocked probabilities into the dense `[H, G+T, G+T]` picture (fine for
# a short region; H (G+T)² floats). Two checks a student can do: every row sums to 1, and the
# probabilities are non-zero exactly where the pattern allows attention — the padding of the last
# block and of the staggered half-blocks gets probability **exactly 0**, because masks use
# `finfo(float32).min` and `exp(finfo.min - max)` underflows to 0.

# %%
short = tok([doc.split("\n\n")[0]], return_tensors="np")["input_ids"]        # one paragraph
Ts = short.shape[1]
print(f"{Ts} tokens")
o = model.encode(short, output_attentions=True)
for layer in range(cfg.encoder_layers):
    dense = viz.densify(o.attentions[layer], cfg, layer, Ts)                 # [H, G+T, G+T]
    pattern = viz.attention_pattern(cfg, Ts, layer=layer)
    print(f"layer {layer}: dense {dense.shape}, rows sum to 1: {np.allclose(dense.sum(-1), 1, atol=1e-5)}, "
          f"non-zero exactly inside the pattern: {np.array_equal(dense.max(0) > 0, pattern)}")

# %% [markdown]
# ## 3. How much goes through the global tokens?
#
# Per layer and head: the share of a token's attention that goes to the G global tokens, and the share
# of a global token's attention that goes to other global tokens (the rest goes to the document).

# %%
print("layer  head  token->globals  global->globals")
for layer, a in enumerate(out.attentions):
    local = a["local"][0]                                                  # [H, N, K, G+K]
    real = real_queries(layer, local.shape[1])                             # padding queries are ignored
    to_globals = local[..., :G].sum(-1)[:, real].mean(-1)                  # [H]
    g_to_globals = a["global"][0, ..., :G].sum(-1).mean(-1)                # [H]
    for h in range(H):
        print(f"{layer:5d} {h:5d} {to_globals[h]:15.1%} {g_to_globals[h]:16.1%}")

# %% [markdown]
# ## 4. Where does the summary look? Cross-attention
#
# The decoder reads the encoder's **tokens** (not the global tokens) through cross-attention,
# `[B, H, S, T]` per decoder layer. We generate a summary and feed it back teacher-forced with
# `output_attentions=True`. Row s is the decoder *input* at step s (the start token, then the summary
# shifted right).
#
# How peaked is it? The entropy of a row is ln T ≈ 7.8 nats when the attention is uniform over the
# T tokens and 0 when it sits on one token. We pick the most peaked (layer, head) and draw it, keeping
# the 40 source tokens that receive the most attention. A model that copies names and numbers from
# the document shows bright cells where a summary token meets its source; a model whose entropies sit
# near ln T barely looks at the document and writes from its own language model — worth checking for
# any summarizer.

# %%
summary = model.generate(ids, attention_mask, num_beams=1, max_new_tokens=40)    # [1, S+1], starts with 0
print(tok.decode(summary[0], skip_special_tokens=True))
dec_in = summary[:, :-1]                                                         # the decoder inputs
o = model(input_ids=ids, attention_mask=attention_mask, decoder_input_ids=dec_in, output_attentions=True)
print("cross-attention per decoder layer [B, H, S, T]:", o.cross_attentions[-1].shape)
print(f"mean entropy per (layer, head), uniform would be ln T = {np.log(T):.2f}:")
assert round(np.log(T), 1) == 7.8
entropy = np.array([(-(c[0] * np.log(c[0] + 1e-30)).sum(-1)).mean(-1) for c in o.cross_attentions])  # [layers, H]
print(np.round(entropy, 2))
layer, head = np.unravel_index(entropy.argmin(), entropy.shape)
print(f"most peaked: decoder layer {layer}, head {head}")
viz.plot_cross_attention(o, tok.convert_ids_to_tokens(ids[0].tolist()), tok.convert_ids_to_tokens(dec_in[0].tolist()),
                         layer=int(layer), head=int(head), top_k_sources=40)

# %% [markdown]
# ## 5. How far does information travel? Influence hops
#
# `influence_hops(config, T)[i, j]` is the number of encoder layers after which token j can influence
# token i (−1: never within the model's layers). Without global tokens and without staggering, a
# token never leaves its block; staggering lets information creep K/2 further per layer; with global
# tokens every pair is connected after 2 layers (token → global token → token).

# %%
T = 1024
print("fraction of (i, j) pairs connected after all", cfg.encoder_layers, "layers:")
for use_global in (False, True):
    for stagger in (False, True):
        hops = viz.influence_hops(cfg, T, use_global=use_global, stagger=stagger)   # [T, T] int
        print(f"  globals={use_global!s:5}  stagger={stagger!s:5}: {(hops >= 0).mean():6.1%}"
              f"   (token 0 reaches token {np.flatnonzero(hops[:, 0] >= 0).max()})")
        if use_global:
            assert hops.min() >= 0 and hops.max() == 2                     # every pair, after 2 layers
viz.plot_influence(cfg, T, use_global=False)

# %% [markdown]
# ## 6. One token at the real scale: what it attends, what it can reach
#
# The pictures above are at T = 256 or pooled. `minipegx.explore` computes per-token views straight from the
# blocked probabilities, never a T × T matrix (`minipegx.views` holds the arrays), so they run at 16k tokens.
#
# At this scale we switch models. The short model read documents of up to 4,000 tokens in training and
# **fails on long ones**: at 6,000-8,000 tokens it stops after the first facts in most documents
# (docs/demo_model.md measures it; notebook 08 shows where its misses fall). Its attention at 15k tokens
# would be a picture of a model out of its depth. So this section uses the **long** demo model
# (`demo_model_path("long")`, the short model trained further on documents of up to 16,300 tokens) on its own
# 12,000-token example, `example_document("long")`.
#
# `explore.document` encodes it once, and `explore.figure(doc, token, layer)` draws, for one token, (1) its
# receptive field layer by layer from the structure alone (dark: through local blocks; light: only through a
# global token), (2) the same weighted by the model's probabilities (attention rollout), (3) its attention in
# every layer, (4) what each global token reads (key sentences shaded), (5) block-local against full
# attention with the same weights. `explore.widget(doc)` adds a slider to pick the token; `minipegx explore
# FILE --out page.html` writes the same views as one self-contained page (docs/explore.md).

# %%
from minipegx import explore, views

long_model = minipegx.from_pretrained(minipegx.demo_model_path("long"))
long_tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path("long"))
assert long_model.config.block_size == K and long_model.config.num_global_tokens == G   # the same shape
doc = explore.document(minipegx.example_document("long"), long_model, long_tok)
T_long = len(doc.tokens)
query = doc.spans[0][0] + 5                                   # a token inside the first ledger entry
print(f"{T_long} tokens in {-(-T_long // K)} blocks, {len(doc.spans)} key sentences; "
      f"token {query} is {doc.tokens[query]!r}")
reach = views.reach_structure(long_model.config, T_long, query)   # int8 [layers+1, T]: 2 local, 1 via a global
for layer, row in enumerate(reach):
    print(f"after {layer} layers: {np.count_nonzero(row == 2):5} tokens through local blocks, "
          f"{np.count_nonzero(row >= 1):5} in all")
assert 11_000 < T_long < 13_000 and (reach[2:] >= 1).all()    # globals: every token after 2 layers
assert np.count_nonzero(reach[1] == 2) == K                   # one layer: the token's own block

# %%
explore.figure(doc, query, layer=1)

# %% [markdown]
# bertviz users: `viz.to_bertviz(out, cfg, tokens)` turns a short input's attentions into the
# `[1, H, G+T, G+T]` per-layer arrays `model_view` expects (globals first, labels from
# `viz.encoder_token_labels`). bertviz itself is not a dependency of minipegx.
#
# **Next:** `03_decoding.ipynb` steps through greedy and beam search.
