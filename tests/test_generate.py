"""generate() equals transformers' generate(): greedy, beam search and every option, token for token.

Models: tiny random PegasusX (tests/reference.py) with init_std=0.4, so the next-token distributions
depend on the input and are peaked enough (top-2 log-prob gaps ~1e-3 and up) that fp32 summation-order
noise (~1e-6) cannot reorder candidates. EOS is a token the model really produces (taken from its own
greedy output), so hypotheses finish at different lengths and the finished-beam logic is exercised.
Every comparison passes the options explicitly to both sides, with do_sample=False.

Tolerance, stated once: sequences_scores within 1e-4 + 1e-5 * |score|. Scores are sums of ~10 fp32
log-softmax values whose logits differ from the reference's by ~1e-6 (matmul summation order); the
relative term covers scores made large by repetition_penalty or length_penalty < 0 (up to ~200, where
one fp32 ulp is already 1.5e-5).

Not compared: settings where transformers' answer hangs on torch.topk's order among exactly tied
scores (-inf or the -1e9 placeholders), e.g. num_return_sequences > 1 when forced tokens leave fewer
real hypotheses than that; those rows are impossible hypotheses and torch orders such ties differently
on CPU and GPU.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reference import hf_model, random_batch, save, t, torch

import minipegx.decoder as D
import minipegx.model as mm
from minipegx.errors import GenerationConfigError, MiniPegxWarning
from minipegx.generate import (BeamStep, GreedyStep, beam_search_steps, generate, greedy_steps,
                               resolve_options)
from minipegx.tolerances import SCORES

SCORE_ATOL, SCORE_RTOL = SCORES.atol, SCORES.rtol  # minipegx.tolerances
V = 163  # tests/reference.py's tiny vocabulary

# Tiny configs: block sizes 2/4/6, 1-3 global tokens, stagger on and off.
CONFIGS = [dict(seed=0), dict(seed=1, block_size=2, num_global_tokens=1),
           dict(seed=2, stagger_local_blocks=False, num_global_tokens=3), dict(seed=3, block_size=6)]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """transformers' generate on a tiny model is ~50x faster single-threaded on 2 shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Case:
    """A transformers model, its minipegx twin, a padded batch (3 inputs, row 1 shorter), an unpadded
    batch (2 inputs) and EOS choices the model really produces."""

    def __init__(self, directory, seed=0, gen=None, **overrides):
        self.ref = hf_model(seed, init_std=0.4, **overrides)
        if gen:
            for k, v in gen.items():
                setattr(self.ref.generation_config, k, v)
        self.model = mm.from_pretrained(save(self.ref, directory))
        rng = np.random.default_rng(seed)
        self.ids, self.mask = random_batch(rng, V, 3, 13, pad_rows=(1,))
        self.ids2, _ = random_batch(rng, V, 2, 9)
        if not gen:
            out = generate(self.model, self.ids, self.mask, max_new_tokens=8, eos_token_id=None,
                           forced_eos_token_id=None)
            toks = sorted(set(out[:, 2:].ravel().tolist()))
            self.eos = [toks[0], toks[-1]]

    def inputs(self, padded):
        return (self.ids, self.mask) if padded else (self.ids2, None)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    made = {}

    def get(i):
        if i not in made:
            made[i] = Case(tmp_path_factory.mktemp(f"gen{i}"), **CONFIGS[i])
        return made[i]
    return get


def reference_generate(ref, ids, mask, **opts):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ref.generate(t(ids), attention_mask=None if mask is None else t(mask), do_sample=False,
                            return_dict_in_generate=True, output_scores=True, **opts)


def assert_same(case, padded=True, **opts):
    """Same ids as transformers (and same sequences_scores, for beam search); returns the score error."""
    ids, mask = case.inputs(padded)
    want = reference_generate(case.ref, ids, mask, **opts)
    got = generate(case.model, ids, mask, do_sample=False, return_dict_in_generate=True, output_scores=True,
                   **opts)
    np.testing.assert_array_equal(got.sequences, want.sequences.numpy(), err_msg=str(opts))
    if getattr(want, "sequences_scores", None) is None:                  # greedy has none
        assert got.sequences_scores is None
        return 0.0
    ws = want.sequences_scores.numpy()
    np.testing.assert_allclose(got.sequences_scores, ws, atol=SCORE_ATOL, rtol=SCORE_RTOL, err_msg=str(opts))
    np.testing.assert_array_equal(got.beam_indices, want.beam_indices.numpy())
    return float(np.abs(got.sequences_scores - ws).max())


# ---------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_greedy_ids_match_transformers_with_and_without_padding(cases, i):
    c = cases(i)
    for padded in (True, False):
        assert_same(c, padded, max_new_tokens=12)                                # config's EOS 1, forced EOS 1
        for eos in c.eos:
            assert_same(c, padded, max_new_tokens=12, eos_token_id=eos, forced_eos_token_id=None)


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_beam_search_ids_and_sequences_scores_match_transformers(cases, i):
    c = cases(i)
    for padded in (True, False):
        for beams in (2, 3, 4):
            assert_same(c, padded, num_beams=beams, max_new_tokens=10, eos_token_id=c.eos[beams % 2],
                        forced_eos_token_id=None)
        assert_same(c, padded, num_beams=3, max_new_tokens=10)                   # config's EOS, forced EOS


@pytest.mark.parametrize("length_penalty", [-1.0, 0.0, 0.5, 0.8, 2.0])
def test_length_penalty_matches_transformers(cases, length_penalty):
    for i in (0, 1):
        c = cases(i)
        for eos in c.eos:
            assert_same(c, num_beams=3, length_penalty=length_penalty, max_new_tokens=10, eos_token_id=eos,
                        forced_eos_token_id=None)


# (model, length_penalty, beams): settings where the three modes do not all give the same answer.
EARLY_STOPPING_CASES = [(0, 0.5, 4), (0, 1.5, 4), (1, 1.5, 3), (2, 1.0, 4), (2, 1.5, 4)]


def test_early_stopping_true_false_and_never_match_transformers(cases):
    differ = set()
    for i, lp, beams in EARLY_STOPPING_CASES:
        c = cases(i)
        outs = {}
        for mode in (True, False, "never"):
            assert_same(c, num_beams=beams, early_stopping=mode, length_penalty=lp, max_new_tokens=12,
                        eos_token_id=c.eos[0], forced_eos_token_id=None)
            outs[mode] = generate(c.model, c.ids, c.mask, num_beams=beams, early_stopping=mode, length_penalty=lp,
                                  max_new_tokens=12, eos_token_id=c.eos[0], forced_eos_token_id=None).tolist()
        differ |= {(a, b) for a in outs for b in outs if outs[a] != outs[b]}
    assert (True, False) in differ and (False, "never") in differ     # the modes were really exercised


def test_min_new_tokens_and_min_length_match_transformers(cases):
    c = cases(1)
    for extra in (dict(min_new_tokens=6), dict(min_length=5), dict(min_new_tokens=3, min_length=9)):
        assert_same(c, max_new_tokens=10, eos_token_id=c.eos[0], **extra)
        assert_same(c, num_beams=3, max_new_tokens=10, eos_token_id=c.eos[0], **extra)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_size_matches_transformers(cases, n):
    c = cases(0)
    assert_same(c, max_new_tokens=12, no_repeat_ngram_size=n)
    assert_same(c, num_beams=3, max_new_tokens=12, no_repeat_ngram_size=n, eos_token_id=c.eos[1])


@pytest.mark.parametrize("n", [1, 2])
def test_encoder_no_repeat_ngram_size_matches_transformers(cases, n):
    """Inputs that contain the tokens the model likes to generate, so the ban really bites."""
    for i in (0, 2):
        c = cases(i)
        greedy = generate(c.model, c.ids, c.mask, max_new_tokens=6)
        ids = c.ids.copy()
        ids[:, 2:6] = greedy[:, 1:5]                 # inside every row's unpadded part
        for opts in (dict(), dict(num_beams=3, eos_token_id=c.eos[0])):
            for padded in (True, False):
                copy = Case.__new__(Case)
                copy.ref, copy.model, copy.ids, copy.mask, copy.ids2 = c.ref, c.model, ids, c.mask, ids[[0, 2]]
                assert_same(copy, padded, max_new_tokens=10, encoder_no_repeat_ngram_size=n, **opts)
        banned = generate(c.model, ids, c.mask, max_new_tokens=10, encoder_no_repeat_ngram_size=n)
        assert (banned != generate(c.model, ids, c.mask, max_new_tokens=10)).any()


def test_repetition_penalty_matches_transformers_on_logits_and_on_log_probs(cases):
    c = cases(2)
    for p in (0.7, 1.5):
        assert_same(c, max_new_tokens=10, repetition_penalty=p)                  # greedy: raw logits
        assert_same(c, num_beams=3, max_new_tokens=10, repetition_penalty=p)     # beams: log-probs


def test_forced_eos_token_id_matches_transformers(cases):
    c = cases(3)
    for forced in (c.eos[1], 7, [7, 9]):
        assert_same(c, max_new_tokens=6, forced_eos_token_id=forced)
        assert_same(c, num_beams=2, max_new_tokens=6, forced_eos_token_id=forced, eos_token_id=c.eos[0])


def test_forced_bos_token_id_matches_transformers(cases):
    c = cases(0)
    assert_same(c, max_new_tokens=6, forced_bos_token_id=11)
    assert_same(c, num_beams=3, max_new_tokens=6, forced_bos_token_id=11, eos_token_id=c.eos[1])


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_num_return_sequences_matches_transformers(cases, n):
    c = cases(1)
    assert_same(c, num_beams=4, num_return_sequences=n, max_new_tokens=8, eos_token_id=c.eos[1])


def test_max_length_and_max_new_tokens_match_transformers(cases):
    c = cases(0)
    assert_same(c, max_length=7)                        # counts the decoder start token
    assert_same(c, max_new_tokens=6)
    assert_same(c, max_length=30, max_new_tokens=4)     # max_new_tokens wins
    assert_same(c, num_beams=2, max_length=5, eos_token_id=c.eos[0])
    assert_same(c)                                      # neither: 20 new tokens
    assert_same(c, num_beams=2, eos_token_id=c.eos[0])


def test_defaults_come_from_generation_config_json_as_in_transformers(tmp_path):
    gen = dict(num_beams=3, length_penalty=0.6, max_length=9, no_repeat_ngram_size=2, eos_token_id=5)
    c = Case(tmp_path, seed=4, gen=gen)
    assert c.model.generation_config["num_beams"] == 3
    want = reference_generate(c.ref, c.ids, c.mask)
    got = generate(c.model, c.ids, c.mask, return_dict_in_generate=True, output_scores=True)
    np.testing.assert_array_equal(got.sequences, want.sequences.numpy())
    np.testing.assert_allclose(got.sequences_scores, want.sequences_scores.numpy(), atol=SCORE_ATOL,
                               rtol=SCORE_RTOL)
    # A call option beats the file, as in transformers.
    np.testing.assert_array_equal(generate(c.model, c.ids, c.mask, num_beams=1),
                                  reference_generate(c.ref, c.ids, c.mask, num_beams=1).sequences.numpy())


def test_finished_hypotheses_are_padded_like_transformers(cases):
    """transformers pads with `pad_token_id or eos_token_id[0]`: PEGASUS's pad id 0 falls through to EOS."""
    c = cases(0)
    for pad in (None, 0, 3):
        opts = dict(num_beams=4, num_return_sequences=4, max_new_tokens=10, eos_token_id=c.eos[0],
                    forced_eos_token_id=None, pad_token_id=pad)
        assert_same(c, **opts)
    out = generate(c.model, c.ids, c.mask, **opts)
    lengths = [len(row) for row in out.tolist()]
    assert len(set(lengths)) == 1


def test_model_generate_delegates_to_generate(cases):
    c = cases(0)
    np.testing.assert_array_equal(c.model.generate(c.ids, attention_mask=c.mask, num_beams=2, max_new_tokens=5),
                                  generate(c.model, c.ids, c.mask, num_beams=2, max_new_tokens=5))


@st.composite
def option_sets(draw):
    """Random combinations of every option compared, on one of the CONFIGS models."""
    beams = draw(st.integers(1, 4))
    opts = {"max_new_tokens": draw(st.integers(1, 12))} if draw(st.booleans()) else \
        {"max_length": draw(st.integers(2, 13))}
    if beams > 1:
        opts.update(num_beams=beams, length_penalty=draw(st.sampled_from([-1.0, 0.0, 0.5, 0.8, 1.0, 2.0])),
                    early_stopping=draw(st.sampled_from([True, False, "never"])),
                    num_return_sequences=draw(st.integers(1, beams)))
    opts["forced_eos_token_id"] = draw(st.sampled_from([None, None, 1, 7]))
    for name, values in (("min_new_tokens", st.integers(0, 4)), ("no_repeat_ngram_size", st.integers(1, 3)),
                         ("encoder_no_repeat_ngram_size", st.integers(1, 2)),
                         ("repetition_penalty", st.sampled_from([0.8, 1.3])), ("pad_token_id", st.just(3))):
        if draw(st.integers(0, 3)) == 0:
            opts[name] = draw(values)
    return draw(st.integers(0, len(CONFIGS) - 1)), draw(st.booleans()), draw(st.integers(0, 2)), opts


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=option_sets())
def test_random_option_combinations_match_transformers(cases, drawn):
    i, padded, eos, opts = drawn
    c = cases(i)
    opts["eos_token_id"] = [1, *c.eos][eos]
    steps = opts.get("max_new_tokens", opts.get("max_length", 0) - 1)
    assume(opts.get("min_new_tokens", 0) + 1 <= steps + 1)
    # One step with several returned sequences leaves tied -1e9 placeholders in the answer (module doc).
    assume(steps > 1 or opts.get("num_return_sequences", 1) == 1)
    assert_same(c, padded, **opts)


# ---------------------------------------------------------------------------------------- caches
@pytest.mark.parametrize("opts", [dict(), dict(num_beams=3), dict(num_beams=4, num_return_sequences=2),
                                  dict(no_repeat_ngram_size=2)])
def test_static_cache_gives_the_same_ids_and_scores_as_the_dynamic_cache(cases, opts):
    c = cases(1)
    for padded in (True, False):
        ids, mask = c.inputs(padded)
        kw = dict(max_new_tokens=10, eos_token_id=c.eos[0], return_dict_in_generate=True, output_scores=True,
                  **opts)
        dyn = generate(c.model, ids, mask, **kw)
        static = generate(c.model, ids, mask, static_cache=True, **kw)
        np.testing.assert_array_equal(static.sequences, dyn.sequences)
        if dyn.sequences_scores is not None:
            np.testing.assert_allclose(static.sequences_scores, dyn.sequences_scores, atol=1e-6)


@pytest.mark.parametrize("static_cache", [False, True])
def test_encoder_and_cross_keys_run_once_and_beams_share_them(cases, monkeypatch, static_cache):
    c = cases(0)
    calls = {"encode": 0, "cross_kv": 0, "rows": set()}
    encode, cross_kv, cross_attention = c.model.encode, D.cross_kv, D.cross_attention

    def spy_encode(*a, **k):
        calls["encode"] += 1
        return encode(*a, **k)

    def spy_cross_kv(*a, **k):
        calls["cross_kv"] += 1
        return cross_kv(*a, **k)

    def spy_cross_attention(x, kv, *a, **k):
        calls["rows"].add((x.shape[0], kv[0].shape[0], kv[1].shape[0]))
        return cross_attention(x, kv, *a, **k)

    monkeypatch.setattr(c.model, "encode", spy_encode)
    monkeypatch.setattr(D, "cross_kv", spy_cross_kv)
    monkeypatch.setattr(D, "cross_attention", spy_cross_attention)
    B, K = c.ids.shape[0], 4
    steps = list(beam_search_steps(c.model, c.ids, c.mask, num_beams=K, max_new_tokens=6,
                                   static_cache=static_cache))
    assert calls["encode"] == 1
    assert calls["cross_kv"] == c.model.config.decoder_layers
    assert calls["rows"] == {(B * K, B, B)}       # queries per beam, keys/values per input
    H, T = c.model.config.decoder_attention_heads, c.ids.shape[1]
    assert all(s.cross_kv_shape == (B, H, T, c.model.config.d_model // H) for s in steps)


# ---------------------------------------------------------------------------------------- steps
def test_beam_search_steps_show_candidates_kept_finished_pruned_and_end_at_generate(cases):
    c = cases(2)
    opts = dict(num_beams=3, max_new_tokens=10, eos_token_id=c.eos[0], forced_eos_token_id=None,
                num_return_sequences=3)
    steps = list(beam_search_steps(c.model, c.ids, c.mask, **opts))
    B, K = c.ids.shape[0], 3
    finished_any = False
    for n, s in enumerate(steps, 1):
        assert isinstance(s, BeamStep) and s.step == n and s.max_steps == 10
        assert s.beams.shape == (B, K, n + 1) and s.candidate_tokens.shape == (B, 2 * K)
        fate = s.kept.astype(int) + s.finished.astype(int) + s.pruned.astype(int)
        assert (fate == 1).all()                                                    # a partition
        assert (np.diff(s.candidate_scores, axis=1) <= 0).all()                     # best first
        assert (s.kept.sum(axis=1) <= K).all()
        finished_any |= bool(s.finished.any())
        assert s.finished_all == (n == len(steps))
        assert "cand beam" in s.table(0)
    assert finished_any
    got = generate(c.model, c.ids, c.mask, return_dict_in_generate=True, output_scores=True, **opts)
    last = steps[-1]
    np.testing.assert_array_equal(got.sequences_scores, last.hypothesis_scores.reshape(-1))
    np.testing.assert_array_equal(got.sequences, last.hypotheses.reshape(B * K, -1)[:, :got.sequences.shape[1]])
    assert (last.hypothesis_lengths.reshape(-1) <= got.sequences.shape[1] - 1).all()


def test_greedy_steps_yield_each_token_and_end_at_generate(cases):
    c = cases(3)
    steps = list(greedy_steps(c.model, c.ids, c.mask, max_new_tokens=8, eos_token_id=c.eos[1]))
    assert all(isinstance(s, GreedyStep) for s in steps)
    out = generate(c.model, c.ids, c.mask, max_new_tokens=8, eos_token_id=c.eos[1])
    np.testing.assert_array_equal(steps[-1].sequences, out)
    for s in steps:
        np.testing.assert_array_equal(s.tokens, s.sequences[:, -1])
        np.testing.assert_array_equal(s.top_tokens[:, 0], np.argmax(s.scores, axis=-1))
    assert steps[-1].done and not any(s.done for s in steps[:-1])


def test_progress_is_called_after_every_step(cases):
    c = cases(0)
    seen = []
    out = generate(c.model, c.ids, c.mask, max_new_tokens=9, progress=lambda *a: seen.append(a))
    assert [s[0] for s in seen] == list(range(1, out.shape[1]))
    assert {s[1] for s in seen} == {9}
    seen.clear()
    steps = list(beam_search_steps(c.model, c.ids, c.mask, num_beams=3, max_new_tokens=9, eos_token_id=c.eos[0],
                                   forced_eos_token_id=None, progress=lambda *a: seen.append(a)))
    assert len(seen) == len(steps)
    alive = [s[2] for s in seen]
    assert alive == sorted(alive, reverse=True) and alive[0] == 3 * c.ids.shape[0]


def test_each_input_of_a_padded_batch_generates_as_it_would_alone(cases):
    c = cases(3)
    for opts in (dict(), dict(num_beams=3)):
        batch = generate(c.model, c.ids, c.mask, max_new_tokens=8, eos_token_id=c.eos[0], **opts)
        for b in range(c.ids.shape[0]):
            alone = generate(c.model, c.ids[b:b + 1, :int(c.mask[b].sum())], max_new_tokens=8,
                             eos_token_id=c.eos[0], **opts)
            np.testing.assert_array_equal(batch[b, :alone.shape[1]], alone[0])


# ---------------------------------------------------------------------------------------- sampling
def test_sampling_with_top_k_1_is_greedy(cases):
    c = cases(0)
    greedy = generate(c.model, c.ids, c.mask, max_new_tokens=10)
    for seed in (0, 1):
        np.testing.assert_array_equal(
            generate(c.model, c.ids, c.mask, max_new_tokens=10, do_sample=True, top_k=1, seed=seed), greedy)


def test_sampling_at_a_tiny_temperature_is_greedy(cases):
    c = cases(1)
    greedy = generate(c.model, c.ids, c.mask, max_new_tokens=10)
    np.testing.assert_array_equal(generate(c.model, c.ids, c.mask, max_new_tokens=10, do_sample=True,
                                           temperature=1e-5, top_k=0, seed=3), greedy)


def test_sampling_picks_only_tokens_inside_the_top_p_nucleus(cases):
    """Each sampled token is in the nucleus computed independently from the model's forward logits:
    transformers' rule, drop the least likely tokens holding at most 1 - top_p of the mass."""
    c = cases(2)
    top_p = 0.6
    for seed in range(3):
        out = generate(c.model, c.ids, c.mask, max_new_tokens=8, do_sample=True, top_p=top_p, top_k=0,
                       seed=seed, eos_token_id=None, forced_eos_token_id=None)
        logits = c.model(input_ids=c.ids, attention_mask=c.mask, decoder_input_ids=out[:, :-1]).logits
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)                                     # [B, S, V]
        for b, s in np.ndindex(*out[:, 1:].shape):
            p = probs[b, s]
            order = np.argsort(p)
            tail = order[np.cumsum(p[order]) <= 1 - top_p]
            assert out[b, s + 1] not in set(tail.tolist()), (seed, b, s)


def test_sampling_follows_the_model_distribution(cases):
    """800 samples of the first token (temperature 0.5, top_k off) against the model's softmax(logits / 0.5):
    every frequency within 5 binomial standard deviations (+1 sample)."""
    c = cases(0)
    n, temp = 800, 0.5
    ids = c.ids[:1]
    out = generate(c.model, ids, max_new_tokens=1, do_sample=True, top_k=0, temperature=temp, seed=0,
                   num_return_sequences=n, eos_token_id=None, forced_eos_token_id=None)
    logits = c.model(input_ids=ids, decoder_input_ids=[[0]]).logits[0, 0] / temp
    p = np.exp(logits - logits.max())
    p /= p.sum()
    freq = np.bincount(out[:, 1], minlength=V) / n
    assert (np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1 / n).all()


def test_sampling_is_reproducible_from_a_seed_or_a_generator(cases):
    c = cases(0)
    kw = dict(max_new_tokens=10, do_sample=True, eos_token_id=None, forced_eos_token_id=None)
    a = generate(c.model, c.ids, c.mask, seed=7, **kw)
    np.testing.assert_array_equal(generate(c.model, c.ids, c.mask, seed=7, **kw), a)
    np.testing.assert_array_equal(generate(c.model, c.ids, c.mask, seed=np.random.default_rng(7), **kw), a)
    others = [generate(c.model, c.ids, c.mask, seed=s, **kw) for s in (8, 9)]
    assert any((o != a).any() for o in others)


def test_sampling_returns_num_return_sequences_rows_per_input(cases):
    c = cases(0)
    B = c.ids.shape[0]
    out = generate(c.model, c.ids, c.mask, max_new_tokens=6, do_sample=True, num_return_sequences=3, seed=0)
    assert out.shape[0] == 3 * B and (out[:, 0] == 0).all()
    out = generate(c.model, c.ids, c.mask, max_new_tokens=6, do_sample=True, num_beams=3, num_return_sequences=2,
                   seed=0)
    assert out.shape[0] == 2 * B


# ---------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("opts, name", [
    (dict(num_beams=0), "num_beams"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=-3), "max_new_tokens"),
    (dict(max_length=1), "max_length"),
    (dict(min_new_tokens=-1), "min_new_tokens"),
    (dict(min_length=-2), "min_length"),
    (dict(min_new_tokens=9, max_new_tokens=5), "min_new_tokens"),
    (dict(min_length=12, max_length=8), "min_length"),
    (dict(do_sample=True, top_p=0.0), "top_p"),
    (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(do_sample=True, top_k=-1), "top_k"),
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(do_sample=True, temperature=-1.0), "temperature"),
    (dict(early_stopping="sometimes"), "early_stopping"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
    (dict(eos_token_id=10 ** 6), "eos_token_id"),
    (dict(forced_eos_token_id=-1), "forced_eos_token_id"),
    (dict(do_sample=True, seed="seven"), "seed"),
    (dict(progress=5), "progress"),
])
def test_invalid_options_raise_generation_config_error_naming_the_option(cases, opts, name):
    c = cases(0)
    with pytest.raises(GenerationConfigError, match=name):
        generate(c.model, c.ids, c.mask, **opts)


def test_unknown_options_are_named_with_the_known_ones(cases):
    c = cases(0)
    with pytest.raises(GenerationConfigError, match="num_beam") as e:
        generate(c.model, c.ids, c.mask, num_beam=3)
    assert "did you mean 'num_beams'" in str(e.value) and "length_penalty" in str(e.value)


def test_real_checkpoint_defaults_are_read_and_a_long_run_warns(cases):
    """google/pegasus-x-large's generation_config.json: 8 beams, length_penalty 0.8, max_length 16384."""
    c = cases(0)
    saved = c.model.generation_config
    c.model.generation_config = dict(num_beams=8, length_penalty=0.8, max_length=16384, decoder_start_token_id=0,
                                     eos_token_id=1, forced_eos_token_id=1, pad_token_id=0)
    try:
        with pytest.warns(MiniPegxWarning, match="max_new_tokens"):
            o = resolve_options(c.model, {})
        assert (o.num_beams, o.length_penalty, o.max_length, o.forced_eos_token_ids) == (8, 0.8, 16384, (1,))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            o = resolve_options(c.model, dict(max_new_tokens=32, num_beams=2))
        assert (o.max_length, o.num_beams, o.length_penalty) == (33, 2, 0.8)
    finally:
        c.model.generation_config = saved


def test_defaults_fall_back_to_config_json_then_transformers_defaults(cases):
    c = cases(0)
    saved = c.model.generation_config
    c.model.generation_config = {}
    try:
        o = resolve_options(c.model, {})
    finally:
        c.model.generation_config = saved
    assert (o.decoder_start_token_id, o.eos_token_ids, o.pad_token_id, o.forced_eos_token_ids) == (0, (1,), 0, (1,))
    assert (o.num_beams, o.length_penalty, o.early_stopping, o.min_length, o.top_k) == (1, 1.0, False, 0, 50)
    assert o.max_length == 21                       # 20 new tokens after the start token
