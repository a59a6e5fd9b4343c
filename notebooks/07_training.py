# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Training: one step by hand, then a short fine-tune
#
# Everything before this notebook ran PEGASUS-X forwards. Training needs the other direction: the gradient of
# the loss with respect to every weight. minipegx writes it out by hand, one backward function beside each
# forward one (`layer_norm_forward` / `layer_norm_backward`, `encoder_layer_forward` / `encoder_layer_backward`,
# ...), the way llm.c and CS231n do: the forward keeps what the backward needs in a small named cache, and the
# backward is the chain rule, one line per step. No autograd engine, no tape. The math of each backward is in
# `docs/training.md`.
#
# Here: the loss, computed by hand; the backward pass through one encoder layer, with its block-local attention,
# global tokens and the stagger; a finite-difference check of that gradient in float64; one AdamW step; and a
# short fine-tune of the first (short) demo model on a variant of its task, watching the loss fall and its
# summary change.
#
# **Shape legend** (the same letters in every notebook, docstring and comment of minipegx):
# B batch, T tokens, P tokens padded to whole blocks, S decoder steps, N blocks, K block size,
# G global tokens, H heads, D head dim (M / H), F FFN width, M d_model, V vocabulary.

# %%
import numpy as np

import minipegx
from minipegx.training import loss_and_grads, named_parameters

path = minipegx.demo_model_path("short")               # the first (short) demo model
model = minipegx.from_pretrained(path, dtype="float64")  # float64: gradients can be checked to many digits
tok = minipegx.Tokenizer.from_pretrained(path)
cfg = model.config
doc, summary = minipegx.example_document("short"), minipegx.example_summary("short")
batch = tok([doc], return_tensors="np")                                   # input_ids, attention_mask [B, T]
labels = tok([summary], return_tensors="np")["input_ids"]                 # [B, S], </s> last
print(f"T = {batch['input_ids'].shape[1]} document tokens, S = {labels.shape[1]} summary tokens, "
      f"{sum(p.size for p in named_parameters(model).values()):,} parameters")

# %% [markdown]
# ## 1. The loss
#
# Summarization is trained with teacher forcing: the decoder reads the true summary shifted right by one
# (the start token first) and predicts each next token. The loss is the mean cross entropy over the label
# tokens, `-log softmax(logits)[label]`; a label of -100 (padding) does not count, as in torch.

# %%
out = model(**batch, labels=labels)                                       # the model's own loss
logits = out.logits                                                       # [B, S, V]
shifted = logits - logits.max(axis=-1, keepdims=True)                     # [B, S, V]
logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))      # [B, S, V] log-softmax
by_hand = -np.take_along_axis(logp, labels[..., None], axis=-1).mean()    # mean over the S labels
print(f"loss {float(out.loss):.6f}  by hand {by_hand:.6f}")
assert abs(float(out.loss) - by_hand) < 1e-6    # the forward's loss sums in float32 (model.cross_entropy)

# %% [markdown]
# `loss_and_grads` runs the training forward (each layer keeping its cache), then walks back: cross entropy
# -> LM head -> decoder layers, last first -> the encoder's output -> encoder layers, last first -> the
# embeddings. The token table is tied: it collects three gradients, from the LM head, the decoder's embedding
# and the encoder's. The gradients are keyed by the checkpoint's own names, the ones transformers'
# `named_parameters()` gives.

# %%
loss, grads = loss_and_grads(model, batch["input_ids"], batch["attention_mask"], labels)
assert abs(loss - by_hand) < 1e-9
norms = sorted(((float(np.linalg.norm(g)), name) for name, g in grads.items()), reverse=True)
for norm, name in norms[:5]:
    print(f"{norm:10.4f}  {name}")
assert len(grads) == len(named_parameters(model))

# %% [markdown]
# ## 2. Backward through one encoder layer
#
# Layer 1 of the demo model is staggered (`cfg.is_staggered(1)`): its blocks are shifted by K/2, done by
# padding K/2 positions at both ends before the attention and cutting them off after. The layer is
#
#     h = LN(x);  hg = LN_g(g)                       # tokens [B, P, M], global tokens [B, G, M]
#     h = pad K/2 both ends (staggered layers)       # [B, P+K, M]
#     h, hg = global_local_attention(h, hg)          # blocks of K attend to themselves and the G globals;
#                                                    # the globals attend to everything
#     x = x + h[:, K/2:-K/2];  g = g + hg            # residuals
#     x = x + FFN(LN_f(x));   g = g + FFN(LN_f(g))   # one FFN and final norm shared by tokens and globals
#
# and its backward runs the same lines upwards: the FFN, the residual, then `unstagger_backward` (the
# gradient of a cut is zeros at the ends that were cut), the attention, `stagger_backward` (the gradient of a
# pad drops the padded positions), the layer norms. A global key or value serves every block, so its
# gradient sums the shares of all N blocks; weights shared by tokens and globals accumulate both gradients.
#
# We take layer 1's real inputs (the encoder's training forward with `recompute=True` keeps exactly each
# layer's inputs) on the first 150 tokens of the document, and push a random upstream gradient through.

# %%
from minipegx.encoder import encoder_forward, encoder_layer_backward, encoder_layer_forward

ids, mask = batch["input_ids"][:, :150], batch["attention_mask"][:, :150]
_, enc_cache = encoder_forward(model.params["model"], cfg, ids, mask, recompute=True)
x, g = enc_cache.layers[1]                                 # layer 1's inputs: [B, P, M], [B, G, M]
additive = enc_cache.mask                                  # [B, P]: 0 for tokens, finfo.min for the padding
p1 = model.params["model"]["encoder"]["layers"][1]
(y, yg), cache = encoder_layer_forward(x, g, additive, p1, cfg, staggered=cfg.is_staggered(1))
print("x", x.shape, "g", g.shape, "-> local probabilities", cache.attention.local_probs.shape,
      "global probabilities", cache.attention.global_probs.shape)
K, G = cfg.block_size, cfg.num_global_tokens
assert cache.attention.local_probs.shape[2] == x.shape[1] // K + 1   # staggered: N + 1 blocks over P + K
assert cache.attention.local_probs.shape[-1] == G + K                # each query: G globals + its block

rng = np.random.default_rng(0)
R, Rg = rng.standard_normal(y.shape), rng.standard_normal(yg.shape)  # the upstream gradients dL/dy, dL/dyg
dx, dg, layer_grads = encoder_layer_backward(R, Rg, cache)           # L = sum(y * R) + sum(yg * Rg)
print("dx", dx.shape, "dg", dg.shape, "; gradients of", sorted(layer_grads))

# %% [markdown]
# ## 3. A gradient check
#
# The derivative is the limit of a difference quotient, so a backward can be checked against
# `(L(w + e) - L(w - e)) / 2e` for one entry `w` at a time (CS231n's check). The centred difference is off by
# `e²` times the third derivative, plus the rounding of `L` divided by `e`: `L` here is a float64 sum of
# tens of thousands of terms, rounded at about `1e-12` in all, so with `e = 1e-6` expect relative errors near
# `1e-7`. A wrong backward (a block's share missed, a transposed product, the stagger's ends kept) is off by
# order 1; the check asks for better than `1e-5`.

# %%
def layer_objective():
    (y_, yg_), _ = encoder_layer_forward(x, g, additive, p1, cfg, staggered=True)
    return float((y_ * R).sum() + (yg_ * Rg).sum())


def centred(array, index, e=1e-6):
    keep = array[index]
    array[index] = keep + e
    up = layer_objective()
    array[index] = keep - e
    down = layer_objective()
    array[index] = keep
    return (up - down) / (2 * e)


x, g = x.copy(), g.copy()                                # arrays of our own to perturb
checks = [("x (a token in the first block)", x, (0, 5, 7), dx),
          ("x (a token of the second block)", x, (0, 100, 3), dx),
          ("g (a global token)", g, (0, 2, 9), dg),
          ("self_attn.k_proj.weight", p1["self_attn"]["k_proj"]["weight"], (4, 11),
           layer_grads["self_attn"]["k_proj"]["weight"]),
          ("final_layer_norm.weight", p1["final_layer_norm"]["weight"], (17,),
           layer_grads["final_layer_norm"]["weight"])]
worst = 0.0
for name, array, index, analytic in checks:
    numeric = centred(array, index)
    err = abs(numeric - analytic[index]) / max(abs(numeric), abs(analytic[index]), 1e-12)
    worst = max(worst, err)
    print(f"{name:40s} analytic {analytic[index]: .8e}  numeric {numeric: .8e}  relative error {err:.1e}")
assert worst < 1e-5

# %% [markdown]
# ## 4. One AdamW step
#
# AdamW keeps two running averages per weight, of the gradient (m) and of its square (v), and moves each weight
# by `lr * m̂ / (sqrt(v̂) + eps)` (the hats: bias-corrected for the first steps), after shrinking it by
# `lr * weight_decay` (decoupled decay). `train_step` ties it together: gradients, clipping at a global norm,
# the update, in place. We take one step on the example in float32, the training dtype. On the first step
# `m̂ / sqrt(v̂)` is ±1 for every weight, so each of the million weights moves by about `lr`: a trained model
# wants a small one (1e-3 here makes the loss worse; fine-tuning below warms the rate up from 0).

# %%
from minipegx.training import AdamW, Batch, decay_matrices_only, train_step

model32 = minipegx.from_pretrained(path)                   # float32
opt = AdamW(model32, lr=1e-4, weight_decay=0.01, decay=decay_matrices_only)
stats = train_step(model32, opt, Batch(batch["input_ids"], batch["attention_mask"], labels), max_grad_norm=1.0)
after = float(model32(**batch, labels=labels).loss)
print(f"loss before the step {stats.loss:.4f}, after {after:.4f}; gradient norm {stats.grad_norm:.3f}")
name = "model.encoder.layers.1.self_attn.q_proj.weight"
print(f"{name}: |m| {np.abs(opt.m[name]).mean():.2e}  sqrt(v) {np.sqrt(opt.v[name]).mean():.2e}")
assert after < stats.loss

# %% [markdown]
# ## 5. Fine-tuning on a variant of the task
#
# The demo model learned to restate each key fact whole: "Wendel returned 87 blankets to Ironmere." The variant
# drops the destination: "Wendel returned 87 blankets." We make a few dozen short documents of the same kind
# (filler sentences from the example document, key sentences in the demo's frame) with the variant's summaries
# and fine-tune with `minipegx.training.finetune`, the function behind
#
#     minipegx finetune --train train.jsonl --valid valid.jsonl --model DEMO --out OUT --steps 16 --lr 1e-3
#
# It prints the loss and tokens/s as it goes, and the validation loss and ROUGE at the end.

# %%
import json
import random
import re
import tempfile

NAMES = "Mirela Tobias Anika Bertram Corin Dalia Wendel Una Oskar Fenna".split()
VERBS = "carried sold delivered sent brought shipped lent returned".split()
OBJECTS = "lanterns barrels bells ropes saddles kettles blankets nets chairs".split()
PLACES = "Ostbridge Kellin Marrow Dunhaven Ironmere Yarrow Oakridge Pellworth".split()
FILLER = [s for s in re.split(r"(?<=\.)\s+", doc) if s and "According to" not in s]


def variant_example(rng, n_filler=8, n_facts=3):
    """A short document with n_facts key sentences, and its summary without the destinations."""
    sentences = rng.sample(FILLER, n_filler)
    facts = [(rng.choice(NAMES), rng.choice(VERBS), rng.randint(2, 99), rng.choice(OBJECTS), rng.choice(PLACES))
             for _ in range(n_facts)]
    for slot, (who, verb, n, what, where) in zip(sorted(rng.sample(range(1, n_filler), n_facts)), facts):
        sentences[slot] = f"According to the {rng.choice(['town', 'harbour', 'market'])} ledger, " \
                          f"{who} {verb} {n} {what} to {where}."
    return " ".join(sentences), " ".join(f"{who} {verb} {n} {what}." for who, verb, n, what, _ in facts)


rng = random.Random(0)
work = tempfile.mkdtemp()
for name, count in (("train", 40), ("valid", 4)):
    with open(f"{work}/{name}.jsonl", "w") as f:
        for _ in range(count):
            text, summ = variant_example(rng)
            f.write(json.dumps({"text": text, "summary": summ}) + "\n")
held_out, held_out_summary = variant_example(random.Random(99))
before = minipegx.summarize(held_out, model=path, num_beams=1)
print("true (variant):", held_out_summary)
print("before:        ", before)

# %%
from minipegx.training import finetune

result = finetune(f"{work}/train.jsonl", f"{work}/out", valid=f"{work}/valid.jsonl", model=path, steps=16,
                  lr=1e-3, warmup=2, batch_tokens=2000, eval_every=16, eval_docs=2, max_target_length=64,
                  log_every=4)
losses = [row["loss"] for row in result.history if "loss" in row]
after = minipegx.summarize(held_out, model=f"{work}/out", num_beams=1)
print("after:         ", after)
assert losses[-1] < losses[0] / 10                       # the loss fell more than tenfold
assert " to " in before and " to " not in after          # the summary dropped the destinations
assert after.count(".") == held_out_summary.count(".")   # and still gives every fact

# %% [markdown]
# The loss falls by more than ten times in sixteen steps, and the summary of a document the model never saw
# now restates every fact without its destination. The output folder is an ordinary checkpoint:
# `minipegx.from_pretrained` and transformers' `PegasusXForConditionalGeneration.from_pretrained` both load it,
# and running the same `finetune` call again resumes from its newest checkpoint with the same losses.
