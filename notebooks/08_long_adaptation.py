# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Adapting to long inputs: the short model and the long model side by side
#
# The PEGASUS-X paper's second lesson (Phang, Zhao & Liu 2022, [arXiv:2208.04347](https://arxiv.org/abs/2208.04347),
# its section on adapting models to long inputs): a model pretrained on short inputs can be adapted to long
# ones with a comparatively short phase of training on long inputs; the architecture does not change.
#
# The two bundled demo models are such a pair. The **short** model (`demo_model_path("short")`,
# docs/demo_model.md) was trained on documents of 1,000-4,000 tokens. The **long** model
# (`demo_model_path("long")`, docs/demo_long.md) *is* the short model trained further: its phase 1 is the
# short model, then phases 2 and 3 trained on documents of up to 16,300 tokens. One caveat from the start,
# because it shapes every comparison below: the long phases also changed the **task**. The short model's
# documents name each person in the ledger entry itself ("According to the market ledger, Wendel returned 87
# blankets to Ironmere."); the long model's entries name only a role ("..., the miller carried 47 lanterns
# to Ostbridge.") and the summary must fetch the name from an introduction thousands of tokens earlier. So
# we compare what both models had to learn: **finding the ledger entries**, wherever they sit.
#
# Each section asks you to **predict** before you run it.

# %%
# %matplotlib inline
import dataclasses
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minipegx
from minipegx.checkpoint import flatten_params

models, toks = {}, {}
for name in ("short", "long"):
    models[name] = minipegx.from_pretrained(minipegx.demo_model_path(name))
    toks[name] = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path(name))

# Four held-out documents of the long model's task, about 1,500, 4,000, 7,000 and 12,000 tokens
# (tools/demo_data.make_example with the seeds stored beside them; a test keeps them equal).
docs = json.loads(Path("data/08_documents.json").read_text(encoding="utf-8"))
print([d["tokens"] for d in docs])

# %% [markdown]
# ## 1. What differs between the two models?
#
# **Predict**: which configuration fields differ? How far did the weights move in the long phases?

# %%
short_cfg, long_cfg = models["short"].config, models["long"].config
differ = {f.name: (getattr(short_cfg, f.name), getattr(long_cfg, f.name)) for f in dataclasses.fields(short_cfg)
          if getattr(short_cfg, f.name) != getattr(long_cfg, f.name)}
print("fields that differ (short, long):", differ)
assert differ == {"vocab_size": (784, 800)}
assert (long_cfg.block_size, long_cfg.num_global_tokens) == (64, 16)

# Relative change of each tensor, ||long - short|| / ||short|| (the embeddings' first 784 rows: the words both know)
before, after = flatten_params(models["short"].params), flatten_params(models["long"].params)
change = {}
for name, w in before.items():
    w2 = after[name][: w.shape[0]] if after[name].shape != w.shape else after[name]
    change[name] = float(np.linalg.norm(w2 - w) / np.linalg.norm(w))
for part in ("model.shared", "model.encoder.embed_global", "model.encoder.layers.0.self_attn.q_proj",
             "model.decoder.layers.1.encoder_attn.q_proj"):
    keys = [k for k in change if k.startswith(part)]
    print(f"{part:48s} moved by {np.mean([change[k] for k in keys]):.0%} of its norm")
print(f"all {len(change)} tensors: median {np.median(list(change.values())):.0%}")

# %% [markdown]
# The same architecture, field for field, except 16 new words (the roles) appended to the vocabulary; the
# same tensors, each moved part of the way. Nothing in the encoder was added for length: the blocks of 64,
# the staggering and the 16 global tokens were already there at 1,000 tokens. What changed is what the
# weights learned from long documents.
#
# ## 2. Accuracy against length
#
# **Predict**: on a 1,500-token document, how many ledger entries does each model report? On a 12,000-token
# one? (The short model never saw the role form, so expect wrong names from it; count the entries, the
# action "carried 47 lanterns to Ostbridge" with or without the right person.)

# %%
def actions(summary):
    """Each fact's action: 'The miller Mirela carried 47 lanterns to Ostbridge.' -> 'carried 47 lanterns to Ostbridge'."""
    return [fact.rstrip(".").split(" ", 3)[3] for fact in summary.split(". ")]


def summarize(name, document):
    tok, model = toks[name], models[name]
    batch = tok([document], return_tensors="np")
    ids = model.generate(batch["input_ids"], batch["attention_mask"], num_beams=1, max_new_tokens=60)
    return batch, ids, tok.decode(ids[0], skip_special_tokens=True)


results = {}
for d in docs:
    for name in models:
        batch, ids, text = summarize(name, d["document"])
        found = [a in text for a in actions(d["summary"])]
        results[d["tokens"], name] = (batch, ids, text, found)
        print(f"{d['tokens']:>6} tokens  {name:5s}  entries found {sum(found)}/{len(found)}  "
              f"exact {text == d['summary']!s:5s}  {text[:90]}")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for name, style in (("short", "o--"), ("long", "s-")):
    share = [np.mean(results[d["tokens"], name][3]) for d in docs]
    ax.plot([d["tokens"] for d in docs], share, style, label=f"{name} model")
ax.set(xlabel="document length (tokens)", ylabel="ledger entries found", ylim=(-0.05, 1.05), xscale="log")
ax.legend()
plt.show()
short_found = [np.mean(results[d["tokens"], "short"][3]) for d in docs]
long_found = [np.mean(results[d["tokens"], "long"][3]) for d in docs]
assert short_found[0] >= 0.6 and short_found[-1] <= 0.25 and min(long_found) >= 0.75

# %% [markdown]
# Four documents are an illustration, not a measurement (docs/demo_long.md has 200 documents per band). The
# pattern is the one measured there: the short model finds most entries in a short document and almost none
# in the longest, while the long model keeps finding them. The short model's names are wrong throughout,
# since it never learned the role task: that part is the changed task, not the length.
#
# ## 3. Where in a long document do the short model's misses fall?
#
# **Predict**: are the entries the short model misses spread evenly, or at one end of the document?

# %%
def entry_positions(name, d):
    """The token position of each ledger entry's action in the document (this model's tokenizer)."""
    tok, text = toks[name], d["document"]
    return [len(tok.encode(text[: text.index(a)])) for a in actions(d["summary"])]


fig, ax = plt.subplots(figsize=(7, 2.8))
rows = []
for i, d in enumerate(docs):
    n = results[d["tokens"], "short"][0]["input_ids"].shape[1]
    for j, name in enumerate(models):
        y = 2 * i + 0.6 * j
        pos, found = entry_positions(name, d), results[d["tokens"], name][3]
        ax.plot([0, 1], [y, y], color="0.85", lw=1)
        for p, ok in zip(pos, found):
            ax.plot(p / n, y, "o", color="C0" if name == "short" else "C1", mfc=None if ok else "white")
            rows.append((name, p / n, ok))
ax.set(xlabel="position of the entry in its document (share of its length); hollow = missed",
       yticks=[2 * i + 0.3 for i in range(len(docs))], yticklabels=[f"{d['tokens']} tok" for d in docs])
ax.plot([], [], "o", color="C0", label="short model")
ax.plot([], [], "o", color="C1", label="long model")
ax.legend(loc="upper left", fontsize=8)
plt.show()
missed = [p for name, p, ok in rows if name == "short" and not ok]
found = [p for name, p, ok in rows if name == "short" and ok]
print(f"short model: entries found at mean position {np.mean(found):.2f}, missed at {np.mean(missed):.2f} of the document")
assert np.mean(missed) > np.mean(found)

# %% [markdown]
# The short model's misses tend to lie later in the document than its hits: trained on up to 4,000 tokens,
# it stops writing early, and docs/demo_model.md records the same on its own task (at 6,000-8,000 tokens it
# stops after the first facts in most documents). On the longest document it misses every entry.
#
# ## 4. Where do they look? Cross-attention on the longest document
#
# The decoder's cross-attention says which input tokens each summary token reads. Summed over the summary
# and averaged over heads (last decoder layer), it gives one weight per input token.
#
# **Predict**: where will the short model's cross-attention go on the 12,000-token document?

# %%
d = docs[-1]
fig, axes = plt.subplots(2, 1, figsize=(8, 4), sharex=True)
intro = {}
for ax, name in zip(axes, models):
    batch, ids, text, found = results[d["tokens"], name]
    out = models[name](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=ids[:, :-1], output_attentions=True)
    reads = out.cross_attentions[-1][0].mean(axis=0).sum(axis=0)               # [T]: heads averaged, steps summed
    ax.plot(reads, lw=0.7, color="C0" if name == "short" else "C1")
    for p in entry_positions(name, d):
        ax.axvline(p, color="k", ls=":", lw=1)
    intro[name] = reads[: int(0.4 * len(reads))].max()            # the highest peak in the first 40%: the cast
    print(f"{name}: {ids.shape[1] - 1} summary tokens; highest peak in the first 40% of the input {intro[name]:.2f}")
    ax.set(ylabel="attention", title=f"{name} model: cross-attention over the input (dotted: the ledger entries)")
axes[-1].set_xlabel("input token")
plt.tight_layout()
plt.show()
assert intro["long"] > 0.5 > 0.1 > intro["short"]

# %% [markdown]
# Both models find the entries here: the short model's cross-attention has its peaks on them too. But it
# writes only a few tokens and stops, and it does not look anywhere else. The long model's also peaks
# in the first 40% of the document, where the cast is introduced: that is where it reads the name each
# entry's role refers to. Finding the entries far into a long document and linking them to a sentence
# thousands of tokens away is what the long phases taught; the attention machinery (the same blocks, the
# same staggering and global tokens) was there from the start.
#
# ## Questions
#
# 1. The long model reads 16,384 tokens with the same 64-token blocks and 16 global tokens as the short
#    model. What, then, could 16,000-token training teach that 4,000-token training could not? (Think of
#    positions: which sinusoid positions did the short model ever see?)
# 2. Section 2 counts entries, not exact summaries. Why would exact match be an unfair measure of the short
#    model here, and what would you need to measure the effect of length alone?
# 3. docs/demo_long.md reports that phase 3 was *mixed* lengths, and that a branch trained on long documents
#    only did worse at every length. Give one reason from the notebook's numbers why short documents still
#    help a long-input model.
