# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · What staggering and global tokens buy
#
# PEGASUS-X's encoder attends **block-locally** (blocks of K = 64 tokens), **staggers** the blocks on
# every other layer (so information can cross a block border, K/2 tokens per layer), and adds G = 16
# **global tokens** that read every token and are read by every token (Phang, Zhao & Liu 2022,
# [arXiv:2208.04347](https://arxiv.org/abs/2208.04347), §3 and the ablations of §4). Here you take them
# away, one at a time, and measure what breaks: on the bundled demo model at inference time (the same
# weights), and with two **siblings** trained with the same recipe without staggering and without global
# tokens. (The siblings stop after phase 2 of the recipe; the shipped demo model trained 8,800 steps more, in
# phase 3. docs/demo_long.md compares all three at the same budget.)
#
# The demo task needs information from far apart. A chronicle introduces its cast early on
# ("In those days the miller Mirela lived near the orchard."); thousands of tokens later, ledger entries
# name only the role ("According to the town ledger, the miller carried 47 lanterns to Ostbridge."), and
# the summary must name the person: "The miller Mirela carried 47 lanterns to Ostbridge."
#
# This notebook is **predict, then run**: before each experiment, write down what you expect.
#
# **Shape legend**: B batch, T tokens, S decoder steps, N blocks, K block size, G global tokens, H heads.

# %%
import json
from importlib import resources

import numpy as np

import minipegx
from minipegx.ablations import ablate
from minipegx.model import demo_model_path

# The long demo model ("main" here) and its siblings (the same recipe, without its phase 3).
tok = minipegx.Tokenizer.from_pretrained(demo_model_path("long"))
models = {name: minipegx.from_pretrained(demo_model_path(bundled))
          for name, bundled in (("main", "long"), ("nostagger", "long_nostagger"), ("noglobal", "long_noglobal"))}
for name, m in models.items():
    c = m.config
    print(f"{name:10s} block_size {c.block_size}  stagger {c.stagger_local_blocks!s:5s}  globals {c.num_global_tokens}")
assert [m.config.num_global_tokens for m in models.values()] == [16, 16, 0]
assert [m.config.stagger_local_blocks for m in models.values()] == [True, False, True]

# Held-out documents the recipe wrote for this notebook (tools/train_demo.py, write_notebook_documents):
# [{"document": ..., "summary": ...}].
docs = json.loads(resources.files("minipegx").joinpath("data/notebook_documents.json").read_text())
print(len(docs), "documents; tokens:", [len(tok.encode(d["document"])) for d in docs])

# %% [markdown]
# ## 1. How far apart is what the summary needs?
#
# For each fact, the entry (with the role) and the introduction (with the name) are in different
# blocks. Count the blocks between them.

# %%
def positions(ids, first, second):
    """Positions p where ids[p], ids[p + 1] == first, second (one token per word in this vocabulary)."""
    return [p for p in range(len(ids) - 1) if ids[p] == first and ids[p + 1] == second]


def facts(summary):
    """The summary's facts as (role, name, rest): "The miller Mirela carried 47 lanterns to Ostbridge." """
    return [tuple(f.rstrip(".").split(" ", 3)[1:]) for f in summary.split(". ")]


def fact_spans(doc):
    """For each fact: (position of the role in the entry, position of the name in the introduction)."""
    ids = tok.encode(doc["document"])
    the = tok.encode("the")[0]
    out = []
    for role_word, name_word, _ in facts(doc["summary"]):
        role, name = tok.encode(role_word)[0], tok.encode(name_word)[0]
        intro = positions(ids, role, name)[0] + 1
        entry = [p + 1 for p in positions(ids, the, role) if p + 1 > intro and ids[p + 2] != name][0]
        out.append((entry, intro))
    return out


K = models["main"].config.block_size
gaps = [(e - i) // K for d in docs for e, i in fact_spans(d)]
print("blocks between introduction and entry: min", min(gaps), "median", int(np.median(gaps)), "max", max(gaps))
assert min(gaps) >= 1

# %% [markdown]
# ## 2. Predict
#
# Six encoders read the same documents: the demo model; the demo model with **stagger off**, with its
# tokens **cut off from the global tokens**, and with **full attention** (every token sees every token —
# an attention it was never trained with); and the two siblings. Write down, for each, the share of
# summaries you expect exactly right, and which slot of a fact (role, name, verb, number, object, place)
# you expect to go wrong first.

# %%
prediction = {"main": None, "stagger_off": None, "globals_cut": None, "full": None,
              "nostagger": None, "noglobal": None}        # your guesses, e.g. 0.9

# %% [markdown]
# ## 3. Run
#
# Greedy summaries (the shipped beam search gives the same picture, more slowly; docs/demo_model.md
# has the full table on 200 documents per length band).

# %%
longest = max(len(tok.encode(d["document"])) for d in docs)
encoders = {"main": models["main"],
            "stagger_off": ablate(models["main"], "stagger_off"),
            "globals_cut": ablate(models["main"], "globals_cut"),
            "full": ablate(models["main"], "full", length=longest),
            "nostagger": models["nostagger"], "noglobal": models["noglobal"]}
batch = tok([d["document"] for d in docs], padding=True, return_tensors="np")
summaries = {}
for name, m in encoders.items():
    out = m.generate(batch["input_ids"], batch["attention_mask"], num_beams=1, max_new_tokens=64)
    summaries[name] = tok.batch_decode(np.asarray(out).tolist(), skip_special_tokens=True)

SLOTS = {"role": 1, "name": 2, "verb": 3, "number": 4, "object": 5, "place": 7}


def scores(preds):
    """Exact match, and per slot the share of facts (aligned by position) with that slot wrong."""
    exact = np.mean([p == d["summary"] for p, d in zip(preds, docs)])
    wrong, n = dict.fromkeys(SLOTS, 0), 0
    for p, d in zip(preds, docs):
        for fp, ft in zip(p.split(". "), d["summary"].split(". ")):
            wp, wt = fp.rstrip(".").split(), ft.rstrip(".").split()
            n += 1
            for slot, i in SLOTS.items():
                wrong[slot] += len(wp) <= i or wp[i] != wt[i]
    return exact, {slot: w / n for slot, w in wrong.items()}


table = {name: scores(preds) for name, preds in summaries.items()}
print(f"{'encoder':12s} {'exact':>6s}  " + "  ".join(f"{s:>6s}" for s in SLOTS) + "   (share of facts with the slot wrong)")
for name, (exact, wrong) in table.items():
    print(f"{name:12s} {exact:6.0%}  " + "  ".join(f"{wrong[s]:6.0%}" for s in SLOTS))

# %% [markdown]
# Compare with your predictions (the table above is printed by the cell; the asserts below pin what the
# text says about it):
#
# - **The demo model needs all of its attention pattern.** Every ablation of its weights, and both
#   siblings, get fewer summaries exactly right than the demo model does (it gets 7 of the 8).
# - **Full attention with the same weights fails worst**: the model never saw a token attend to a token
#   more than a block away, and each token's softmax now spreads over thousands of keys.
# - **Stagger off costs least of the ablations here**, and it costs every slot a little: with the same
#   weights and unstaggered blocks, roles and names (from another block) go wrong in about one fact in
#   nine, as often as objects. (On 50 documents per length band, docs/demo_long.md, stagger off costs most at
#   300-1,000 tokens, 92% -> 32% exact match, and 16-34 points in the longer bands.)
# - **Globals cut off breaks everything**, local slots included: this model routes much of its work
#   through the 16 global tokens, which is what a model trained with them does, not proof that the task
#   needs them.
# - **The siblings answer that second question, with a caveat**: the encoder without staggering and the
#   one without global tokens both stay far below the demo model, but they also trained 8,800 steps less
#   (they stop after phase 2 of the recipe). At the same budget (docs/demo_long.md, the demo model's own
#   checkpoint after phase 2), the gap is smaller and clear only below 4,000 tokens. (These are 8
#   documents; the docs have 50-200 per length band with intervals.)

# %%
exact = {name: t[0] for name, t in table.items()}
assert all(exact["main"] > exact[other] for other in exact if other != "main") and exact["main"] == 7 / 8
assert exact["full"] == min(exact.values())
assert exact["stagger_off"] == max(exact[a] for a in ("stagger_off", "globals_cut", "full"))
assert table["stagger_off"][1]["name"] > table["main"][1]["name"] and min(table["stagger_off"][1].values()) > 0
assert min(table["globals_cut"][1].values()) >= 0.2
assert max(exact["nostagger"], exact["noglobal"]) <= exact["main"] / 2

# %% [markdown]
# ## 4. Where the information is lost: the decoder's cross-attention at the name
#
# Teacher-force the true summary of each document and read the last decoder layer's cross-attention
# (mean over heads) at the step that writes each **name**: how much of it lands on the introduction
# (where the name is) and how much on the ledger entry (where the role and the other slots are)?
# Predict first: does cutting the globals move the decoder's attention, or only what it finds there?

# %%
def name_attention(m, doc):
    """Mean share of the last decoder layer's cross-attention, at the steps that write the names, on the
    introductions and on the entries."""
    ids = tok.encode(doc["document"])
    labels = tok.encode(doc["summary"])                       # ... </s>
    decoder_input = [models["main"].config.decoder_start_token_id] + labels[:-1]
    out = m(np.array([ids]), decoder_input_ids=np.array([decoder_input]), output_attentions=True)
    cross = np.asarray(out.cross_attentions[-1])[0].mean(0)   # [S, T]
    steps = [i for i in range(1, len(labels)) if i % 9 == 2]   # "The role NAME ..." : 9 tokens per fact
    on_intro, on_entry = [], []
    for step, (entry, intro) in zip(steps, fact_spans(doc)):
        on_intro.append(cross[step, intro - 5:intro + 6].sum())  # "In those days the miller Mirela ... ."
        on_entry.append(cross[step, entry - 7:entry + 7].sum())  # "According to the town ledger, the miller ... ."
    return np.mean(on_intro), np.mean(on_entry)


attention = {}
for name in ("main", "stagger_off", "globals_cut", "nostagger", "noglobal"):
    shares = np.array([name_attention(encoders[name], d) for d in docs])
    attention[name] = shares.mean(0)
    print(f"{name:12s} at the name: {attention[name][0]:5.0%} on the introduction, {attention[name][1]:5.0%} on the entry")

# %% [markdown]
# In every encoder the decoder still puts most of its attention, at the step that writes a name, on the
# introduction where the name is (printed above; asserted below): the decoder **looks in the right
# place**. What the ablations change is what it **finds** there — the encoder's representation of the
# introduction, which is built with the staggered blocks and the global tokens. Try it on one fact:
# print `encoders[name]`'s summary of `docs[0]` next to the truth (below). It is the one document of the 8
# the demo model gets wrong, with the typical mistake of the long bands (docs/demo_long.md): two entries
# trade a slot, here the verbs of the last two facts ("Joran delivered", "Elian sent"). With stagger off
# more slots trade places ("43 clocks to Thornbury" for "43 saddles to Redfern"); with the globals cut
# off whole facts are lost or merged.

# %%
assert all(share[0] > 0.7 and share[1] < 0.05 for share in attention.values())
assert summaries["main"][0] != docs[0]["summary"] and "Joran delivered 13 anchors" in summaries["main"][0]
assert "43 clocks to Thornbury" in summaries["stagger_off"][0]
assert summaries["globals_cut"][0].count(".") < docs[0]["summary"].count(".")
print("truth:      ", docs[0]["summary"])
for name in ("main", "stagger_off", "globals_cut"):
    print(f"{name:12s}", summaries[name][0])
