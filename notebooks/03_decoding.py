# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Decoding: greedy and beam search, one step at a time
#
# `model.generate` reproduces transformers' `generate()` for an encoder-decoder, option for option.
# It is written once, as generators that **yield one small record per step**:
# `minipegx.generate.greedy_steps` (a `GreedyStep`: the tokens so far, the chosen token, the top-5
# alternatives) and `beam_search_steps` (a `BeamStep`: the alive beams and their scores, the 2×beams
# candidates with their fate — kept, finished or pruned — and the finished hypotheses). `generate`
# just runs them to the end, so what you see here is exactly what it does.
#
# Shapes in this notebook: B inputs, T encoder tokens, H heads, D head dim, V vocabulary,
# L tokens so far (start token included). Careful: in `generate.py` **K counts beams**
# (not the block size) and C = 2K candidates.

# %%
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


# %% [markdown]
# The defaults come from `generation_config.json` (here 4 beams and `early_stopping: true`), then
# `config.json`, then transformers' defaults — the same precedence as transformers. Always pass
# `max_new_tokens`: a real PEGASUS-X checkpoint says `max_length: 16384`.
#
# ## 1. Greedy search
#
# The encoder runs **once**; the cross-attention keys and values are computed once per input
# (`cross_kv_shape`, `[B, H, T, D]`); each step feeds only the last token and the self-attention cache
# grows by one. We must say `num_beams=1`, since the model's default is beam search.

# %%
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


# %% [markdown]
# A greedy summary can be locally likely and globally poor: each step commits to one token. If the
# last step shows `</s>` with log-prob 0 and every alternative at −inf, that is
# `forced_eos_token_id`: at the maximum length transformers forces the end of the sequence.
#
# ## 2. Beam search, as transformers does it
#
# Per step, for K beams (transformers' `_beam_search`):
#
# 1. every alive beam's next-token log-probs are added to its cumulative score: K × V totals;
# 2. the best **C = 2K** candidates are taken (two per beam, so that K survive even if K of them end);
# 3. a candidate ending in `</s>` (or at the maximum length) and ranked in the top K **finishes**: it
#    enters the pool of finished hypotheses if it beats the pool's worst, scored
#    `sum of log-probs / generated_length ** length_penalty`;
# 4. the best K candidates that did not finish become the alive beams; the rest are **pruned**;
# 5. at step 1, beams 1..K−1 start at −1e9, so the K beams are K different first tokens, not K copies.
#
# With `early_stopping=True` the search stops once K hypotheses are finished. The table below shows,
# for the first steps, the alive beams (score, last tokens) and every candidate with its fate.

# %%
def tail(seq, n=6):
    return "".join(tok.convert_ids_to_tokens([int(i) for i in seq[-n:]])).replace("\u2581", " ")

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

# %% [markdown]
# The whole search in one table (every 5th step, and every step where a hypothesis finished): the
# best alive score, how many of the C = 8 candidates were kept, finished and pruned, and how many
# finished hypotheses the pool holds. When the last step is reached, any beam still alive is forced to
# end (`forced_eos_token_id`) and the alive scores show −1e9: no beam is left.

# %%
print(f"{'step':>4} {'best alive':>11} {'kept':>5} {'finished':>9} {'pruned':>7} {'pool':>5}")
for st in steps:
    if st.step % 5 and not st.finished[0].any() and st is not steps[-1]:
        continue
    print(f"{st.step:4d} {score(st.beam_scores[0].max()):>11} {int(st.kept[0].sum()):5d} {int(st.finished[0].sum()):9d} "
          f"{int(st.pruned[0].sum()):7d} {int(st.hypothesis_done[0].sum()):5d}")
show(steps[-1])

# %% [markdown]
# The result of `generate` is the best finished hypothesis (the pool is sorted, best first), cropped
# to its length. With `return_dict_in_generate=True, output_scores=True` it also returns
# `sequences_scores`, the length-penalised score.

# %%
best = steps[-1].hypotheses[0, 0]
res = model.generate(ids, attention_mask, num_beams=4, max_new_tokens=80, return_dict_in_generate=True,
                     output_scores=True)
print("generate:    ", tok.decode(res.sequences[0], skip_special_tokens=True))
with open(os.path.join(minipegx.demo_model_path(), os.pardir, "example_summary.txt"), encoding="utf-8") as f:
    print("true summary:", f.read().strip())
print("sequences_scores:", res.sequences_scores, " pool's best:", steps[-1].hypothesis_scores[0, 0])
assert np.array_equal(res.sequences[0], best[:res.sequences.shape[1]])

# %% [markdown]
# ## 3. The length penalty
#
# Finished hypotheses are ranked by `sum log p / length ** length_penalty`. A larger exponent
# divides long hypotheses' (negative) sums by more, which favours **longer** outputs; a smaller one
# favours shorter ones. Real PEGASUS-X checkpoints use `length_penalty: 0.8`. With
# `num_return_sequences=4` we see the whole pool, best first, under two penalties (if all hypotheses
# have the same length, the penalty rescales their scores but cannot change their order).

# %%
for lp in (0.5, 2.0):
    r = model.generate(ids, attention_mask, num_beams=4, num_return_sequences=4, max_new_tokens=80,
                       length_penalty=lp, return_dict_in_generate=True, output_scores=True)
    print(f"length_penalty {lp}:")
    for seq, s in zip(r.sequences, r.sequences_scores):
        ends = np.flatnonzero(seq[1:] == tok.eos_token_id)        # finished rows are padded with </s>
        n = int(ends[0]) + 1 if len(ends) else len(seq) - 1        # generated tokens, </s> included
        print(f"  {float(s):9.4f}  {n:3d} tokens  {tok.decode(seq, skip_special_tokens=True)}")

# %% [markdown]
# ## 4. The same ids as transformers (when installed)
#
# transformers' `generate` on the same checkpoint, with the same options, gives the same ids — here on
# the document's first eight paragraphs (~670 tokens), which hold two of its facts (transformers' beam
# search copies the encoder output for every beam, which makes it slow on all 2 500 tokens).

# %%
import minipegx.parity
from minipegx.errors import BackendError

try:
    ref = minipegx.parity.load_reference(minipegx.demo_model_path())   # transformers, quietly
except BackendError as e:
    print(f"skipping the comparison: {e}")
else:
    import torch
    short = tok(["\n\n".join(minipegx.example_document().split("\n\n")[:8])], return_tensors="np")
    with torch.no_grad():
        ref_ids = ref.generate(torch.as_tensor(short["input_ids"]), attention_mask=torch.as_tensor(short["attention_mask"]),
                               num_beams=4, max_new_tokens=40).numpy()
    mine = model.generate(short["input_ids"], short["attention_mask"], num_beams=4, max_new_tokens=40)
    print("minipegx:    ", tok.decode(mine[0], skip_special_tokens=True))
    print("transformers:", tok.decode(ref_ids[0], skip_special_tokens=True))
    print("identical ids:", np.array_equal(mine, ref_ids))
