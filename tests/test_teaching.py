"""docs/teaching.md's answers are true of the first (short) bundled demo model, demo_model_path("short"):
every number it states is computed here from the model and must appear in the page as written, so a
retrained model cannot leave a stale answer."""

import math
import random
from pathlib import Path

import numpy as np
import pytest

import minipegx
from minipegx import blocks, viz
from minipegx.checkpoint import flatten_params
from minipegx.course.grade import RUBRIC
from tools.demo_data import make_named_example as make_example  # the short demo model's task

DOC = (Path(__file__).resolve().parents[1] / "docs" / "teaching.md").read_text(encoding="utf-8")


def stated(*phrases):
    missing = [p for p in phrases if p not in DOC]
    assert not missing, f"docs/teaching.md should say {missing}"


@pytest.fixture(scope="module")
def demo():
    model = minipegx.from_pretrained(minipegx.demo_model_path("short"))
    return model, model.config, minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path("short"))


@pytest.fixture(scope="module")
def example(demo):
    model, _, tok = demo
    ids = tok([minipegx.example_document("short")], return_tensors="np")["input_ids"]
    return ids, model.encode(ids, output_attentions=True)


def test_the_model_shape_the_answers_assume(demo):
    _, cfg, _ = demo
    shape = (cfg.d_model, cfg.encoder_attention_heads, cfg.block_size, cfg.num_global_tokens, cfg.encoder_layers,
             [i for i in range(cfg.encoder_layers) if cfg.is_staggered(i)], cfg.decoder_layers, cfg.vocab_size)
    assert shape == (128, 4, 64, 16, 3, [1], 2, 784)
    stated("(M = 128, H = 4, K = 64, G = 16, 3 encoder layers with\nlayer 1 staggered, 2 decoder layers, V = 784)")


def test_the_rubric_table_totals(demo):
    stated(f"{sum(RUBRIC.values())} points in all", *(f"`{name}` ({points})" for name, points in RUBRIC.items()))


def test_01_query_scale_blocks_and_padding(demo, example):
    _, cfg, _ = demo
    D = cfg.d_model // cfg.encoder_attention_heads
    stated(f"D = M / H = {D}, so by D^-1/2 ≈ {D ** -0.5:.3f}")
    T, K = example[0].shape[1], cfg.block_size
    P = blocks.padded_length(T, K)
    stated(f"{T:,} tokens", f"P = {P:,} positions ({P - T} masked), {blocks.num_blocks(T, K, False)} blocks of {K}",
           f"{K // 2} masked positions at each end make {blocks.num_blocks(T, K, True)} blocks")


def test_01_a_padded_key_gets_exactly_zero(demo):
    model, cfg, tok = demo
    doc = minipegx.example_document("short").split("\n\n")
    batch = tok([doc[0], doc[1][:100]], padding=True, return_tensors="np")
    out = model.encode(batch["input_ids"], batch["attention_mask"], output_attentions=True)
    K, G = cfg.block_size, cfg.num_global_tokens
    T = batch["input_ids"].shape[1]
    padded = np.r_[batch["attention_mask"][1] == 0, np.ones(blocks.padded_length(T, K) - T, bool)]  # [P] row 1
    local = out.attentions[0]["local"][1][..., G:]                      # [H, N, K, K] keys of each block
    assert padded.any() and np.all(local[:, padded.reshape(-1, K)[:, None, :].repeat(K, 1)] == 0.0)
    stated("Exactly 0.0")


def test_01_sinusoid_frequencies_and_global_parameters(demo):
    model, cfg, _ = demo
    half = cfg.d_model // 2
    slowest = math.exp(-math.log(10000.0) * (half - 1) / (half - 1))
    stated(f"exactly 1/10000 ({slowest:.1e})", f"10000^(−{half - 1}/{half}) = {10000.0 ** (-(half - 1) / half):.2e}")
    G, M = model.params["model"]["encoder"]["embed_global"]["weight"].shape
    total = sum(a.size for a in flatten_params(model.params).values())
    stated(f"G × M = {G} × {M} = {G * M:,}", f"{G * M / total:.1%} of the demo model's {total:,}")


def test_01_decoder_hidden_states(demo):
    model, cfg, _ = demo
    out = model(input_ids=[[5, 6, 1]], decoder_input_ids=[[0, 5]], output_hidden_states=True)
    stated(f"have {len(out.decoder_hidden_states)} entries for {cfg.decoder_layers} decoder layers")


def test_02_pattern_memory_and_reach(demo, example):
    _, cfg, _ = demo
    dense = [viz.attention_pattern(cfg, 256, layer=i).mean() for i in (0, 1)]
    stated(f"{dense[0]:.1%} in layer 0 and {dense[1]:.1%} in layer 1")
    ids, out = example
    H, G, T = cfg.encoder_attention_heads, cfg.num_global_tokens, ids.shape[1]
    mib = [sum(a.nbytes for a in layer.values()) / 2**20 for layer in out.attentions]
    assert mib[0] == mib[2]
    stated(f"{mib[0]:.2f} MiB in layers 0 and 2 and {mib[1]:.2f} MiB in the staggered layer 1",
           f"{H * (G + T) ** 2 * 4 / 2**20:.1f} MiB for a dense")
    reach = {}
    for use_global in (False, True):
        for stagger in (False, True):
            hops = viz.influence_hops(cfg, 1024, use_global=use_global, stagger=stagger)
            reach[use_global, stagger] = (int(np.flatnonzero(hops[:, 0] >= 0).max()), (hops >= 0).mean(), hops.max())
    stated(f"to token {reach[False, False][0]} ({reach[False, False][1]:.1%} of all pairs",
           f"Staggering alone reaches token {reach[False, True][0]} ({reach[False, True][1]:.1%})")
    assert reach[True, False][1] == reach[True, True][1] == 1.0 and reach[True, True][2] == 2
    stated("every pair is connected,\nwithin 2 layers")


def test_02_the_global_tokens_share_of_attention(demo, example):
    _, cfg, _ = demo
    ids, out = example
    K, G, T = cfg.block_size, cfg.num_global_tokens, ids.shape[1]
    shares = []
    for layer, a in enumerate(out.attentions):
        local = a["local"][0].mean(0)                                      # [N, K, G+K] mean over heads
        shift = blocks.stagger_shift(K, cfg.is_staggered(layer))
        position = np.arange(local.shape[0])[:, None] * K + np.arange(K) - shift   # [N, K] token of each query
        rows = local[(position >= 0) & (position < T)]                     # real queries [T, G+K]
        shares.append(rows[:, :G].sum(-1).mean())
        assert rows[:, :G].mean() < rows.max() / 10                       # each global cell: pale
    stated(f"{shares[0]:.0%} of their attention in layer 0, {shares[1]:.0%} in layer 1 and\n{shares[2]:.0%} in layer 2")


def test_03_greedy_beam_and_the_length_penalty(demo):
    model, _, tok = demo
    document, summary = make_example(random.Random(32), 150)              # notebook 03's document
    batch = tok([document], return_tensors="np")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    greedy = tok.decode(model.generate(ids, mask, num_beams=1, max_new_tokens=60)[0], skip_special_tokens=True)
    beam = tok.decode(model.generate(ids, mask, num_beams=4, max_new_tokens=60)[0], skip_special_tokens=True)
    assert greedy != beam and summary not in (greedy, beam)
    stated(f"writes {greedy.count('.')} sentences", f"a finished {beam.count('.')}-sentence hypothesis")

    def pool(lp):
        r = model.generate(ids, mask, num_beams=4, num_return_sequences=4, max_new_tokens=60, length_penalty=lp,
                           return_dict_in_generate=True, output_scores=True)
        rows = {}
        for seq, s in zip(r.sequences, r.sequences_scores):
            n = int(np.flatnonzero(seq[1:] == 1)[0]) + 1                  # generated tokens, </s> included
            rows.setdefault(tok.decode(seq, skip_special_tokens=True), (float(s), n))
        return rows

    short, long_ = pool(0.3), pool(1.0)
    best_short, best_long = max(short, key=lambda t: short[t][0]), max(long_, key=lambda t: long_[t][0])
    assert best_short == summary and best_long == beam
    (s03, n_true), (s03_long, n_long) = short[summary], short[beam]
    stated(f"a {n_true}-token hypothesis (the true summary, sum of log-probs −{-long_[summary][0] * n_true:.2f})",
           f"a\n{n_long}-token one (mixed-up facts, −{-long_[beam][0] * n_long:.2f})",
           f"(−{-s03:.3f} against −{-s03_long:.3f})",
           f"(−{-long_[beam][0]:.3f} against −{-long_[summary][0]:.3f} per token)")


def test_05_crossover_and_the_size_of_attention(demo):
    _, cfg, _ = demo
    M, F, H = cfg.d_model, cfg.encoder_ffn_dim, cfg.encoder_attention_heads
    stated(f"T ≈ 2M + F = {2 * M + F} tokens here, and {2 * 768 + 3072:,} for `pegasus-x-base`")
    stated(f"{H * 16384 ** 2 * 4 / 2**30:.0f} GiB for this model (H = {H})",
           f"{viz.encoder_cost(cfg, 16384)['score_bytes'] / 2**20:.1f} MiB for the demo model's largest",
           f"K + G = {cfg.block_size + cfg.num_global_tokens} keys")


def test_the_example_message_is_what_check_function_says():
    from test_course import unbiased_layer_norm

    from minipegx.course import check_function

    message = check_function("layer_norm", unbiased_layer_norm, with_transformers=False).message
    stated("\n".join("       " + line for line in message.splitlines()))
