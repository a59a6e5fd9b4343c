"""The forward pass equals transformers' PegasusXForConditionalGeneration.

Tolerance: fp32 logits within 1e-4 absolute (the issue's bound); intermediate activations within
1e-5 (tiny fp32 models: the only differences are summation order in matmuls and softmax, ~1e-7
relative, far below 1e-5 at these magnitudes)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference import max_err, pair, random_batch, t, torch

from minipegx.tolerances import LOGITS, TINY_FP32

LOGITS_TOL = LOGITS.atol      # fp32 logits (minipegx.tolerances: the ladder and its reasons)
ACT_TOL = TINY_FP32.atol      # fp32 activations of tiny models


def run_both(ref, model, ids, mask, dec, **kw):
    with torch.no_grad():
        r = ref(input_ids=t(ids), attention_mask=t(mask), decoder_input_ids=t(dec),
                **{k: t(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()})
    return r, model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, **kw)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=st.integers(1, 3), heads=st.sampled_from([1, 2, 4]), block=st.sampled_from([2, 4, 6, 8]),
       globals_=st.integers(1, 5), stagger=st.booleans(), act=st.sampled_from(["relu", "gelu", "gelu_new", "silu"]),
       scale=st.booleans(), length=st.integers(1, 30), batch=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_logits_match_reference_over_random_tiny_configs(layers, heads, block, globals_, stagger, act, scale,
                                                         length, batch, seed):
    kw = dict(encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
              decoder_attention_heads=heads, block_size=block, num_global_tokens=globals_,
              stagger_local_blocks=stagger, activation_function=act, scale_embedding=scale)
    with tempfile.TemporaryDirectory() as d:
        ref, model = pair(Path(d), seed % 1000, **kw)
    rng = np.random.default_rng(seed)
    ids, mask = random_batch(rng, model.config.vocab_size, batch, length, pad_rows=range(1, batch))
    dec = rng.integers(5, model.config.vocab_size, size=(batch, int(rng.integers(1, 6))))
    r, o = run_both(ref, model, ids, mask, dec, labels=dec)
    assert max_err(o.logits, r.logits) <= LOGITS_TOL
    assert max_err(o.encoder_last_hidden_state, r.encoder_last_hidden_state) <= ACT_TOL
    assert abs(float(o.loss) - r.loss.item()) <= LOGITS_TOL


@pytest.mark.parametrize("length", [3, 4, 8, 13], ids=["below-one-block", "one-block", "two-blocks", "not-a-multiple"])
def test_encoder_matches_at_lengths_around_the_block_size(tmp_path, length):
    ref, model = pair(tmp_path, block_size=4)
    ids, mask = random_batch(np.random.default_rng(length), model.config.vocab_size, 2, length, pad_rows=[1])
    r, o = run_both(ref, model, ids, mask, ids[:, :3])
    assert max_err(o.encoder_last_hidden_state, r.encoder_last_hidden_state) <= ACT_TOL
    assert max_err(o.logits, r.logits) <= LOGITS_TOL


def test_every_hidden_state_matches_including_padded_layer_inputs_and_global_tokens(tmp_path):
    ref, model = pair(tmp_path, encoder_layers=3, decoder_layers=3)
    ids, mask = random_batch(np.random.default_rng(1), model.config.vocab_size, 2, 13, pad_rows=[1])
    r, o = run_both(ref, model, ids, mask, ids[:, :5], output_hidden_states=True)
    assert len(o.encoder_hidden_states) == len(r.encoder_hidden_states) == 4
    for mine, theirs in zip(o.encoder_hidden_states[:-1], r.encoder_hidden_states[:-1]):
        assert mine.shape == tuple(theirs.shape)     # padded to a whole number of blocks
        assert max_err(mine, theirs) <= ACT_TOL
    (tokens, global_tokens), (rt, rg) = o.encoder_hidden_states[-1], r.encoder_hidden_states[-1]
    assert max_err(tokens, rt) <= ACT_TOL and max_err(global_tokens, rg) <= ACT_TOL
    assert len(o.decoder_hidden_states) == len(r.decoder_hidden_states) == 4
    for mine, theirs in zip(o.decoder_hidden_states, r.decoder_hidden_states):
        assert max_err(mine, theirs) <= ACT_TOL


def test_encoder_attentions_have_the_reference_local_and_global_layout(tmp_path):
    ref, model = pair(tmp_path, encoder_layers=2, num_global_tokens=3, block_size=4)
    ids, mask = random_batch(np.random.default_rng(2), model.config.vocab_size, 2, 10, pad_rows=[1])
    r, o = run_both(ref, model, ids, mask, ids[:, :2], output_attentions=True)
    # layer 0: 3 blocks of 4 (10 padded to 12); layer 1 is staggered: one block more.
    assert o.encoder_attentions[0]["local"].shape == (2, 2, 3, 4, 3 + 4)
    assert o.encoder_attentions[1]["local"].shape == (2, 2, 4, 4, 3 + 4)
    assert o.encoder_attentions[1]["global"].shape == (2, 2, 3, 3 + 16)
    for mine, theirs in zip(o.encoder_attentions, r.encoder_attentions):
        assert max_err(mine["local"], theirs["local"]) <= ACT_TOL
        assert max_err(mine["global"], theirs["global"]) <= ACT_TOL


def test_skipping_the_attention_probabilities_changes_no_output(tmp_path):
    # Without output_attentions the encoder never writes out the local probabilities (a speed-up);
    # the block loop is the same, so the outputs must be identical bit for bit (tolerance 0).
    _, model = pair(tmp_path, encoder_layers=2, num_global_tokens=3, block_size=4)
    ids, mask = random_batch(np.random.default_rng(3), model.config.vocab_size, 2, 10, pad_rows=[1])
    with_probs = model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2], output_attentions=True)
    without = model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2])
    assert without.encoder_attentions is None
    assert np.array_equal(with_probs.encoder_last_hidden_state, without.encoder_last_hidden_state)
    assert np.array_equal(with_probs.logits, without.logits)


def test_decoder_self_and_cross_attentions_match(tmp_path):
    ref, model = pair(tmp_path)
    ids, mask = random_batch(np.random.default_rng(3), model.config.vocab_size, 2, 9, pad_rows=[1])
    r, o = run_both(ref, model, ids, mask, ids[:, :4], output_attentions=True)
    for mine, theirs in zip(o.decoder_attentions, r.decoder_attentions):
        assert max_err(mine, theirs) <= ACT_TOL
    for mine, theirs in zip(o.cross_attentions, r.cross_attentions):
        assert mine.shape == tuple(theirs.shape) and max_err(mine, theirs) <= ACT_TOL


def test_loss_ignores_minus_100_labels_and_shifts_labels_right(tmp_path):
    ref, model = pair(tmp_path)
    rng = np.random.default_rng(4)
    ids, mask = random_batch(rng, model.config.vocab_size, 2, 7)
    labels = rng.integers(5, model.config.vocab_size, size=(2, 5))
    labels[1, 3:] = -100
    with torch.no_grad():
        r = ref(input_ids=t(ids), attention_mask=t(mask), labels=t(labels))
    o = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert abs(float(o.loss) - r.loss.item()) <= LOGITS_TOL
    assert max_err(o.logits, r.logits) <= LOGITS_TOL


def test_inputs_embeds_give_the_same_logits_as_input_ids(tmp_path):
    ref, model = pair(tmp_path)
    ids, mask = random_batch(np.random.default_rng(5), model.config.vocab_size, 1, 6)
    with torch.no_grad():
        emb = ref.model.encoder.embed_tokens(t(ids))
        demb = ref.model.decoder.embed_tokens(t(ids[:, :3]))
        r = ref(inputs_embeds=emb, attention_mask=t(mask), decoder_inputs_embeds=demb)
    o = model(inputs_embeds=emb.numpy(), attention_mask=mask, decoder_inputs_embeds=demb.numpy())
    assert max_err(o.logits, r.logits) <= LOGITS_TOL


def test_encoder_outputs_can_be_reused(tmp_path):
    ref, model = pair(tmp_path)
    ids, mask = random_batch(np.random.default_rng(6), model.config.vocab_size, 2, 11, pad_rows=[0])
    enc = model.encode(ids, mask)
    full = model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2])
    reused = model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=ids[:, :2])
    assert np.array_equal(full.logits, reused.logits)
    with torch.no_grad():
        r = ref(encoder_outputs=(t(enc.last_hidden_state),), attention_mask=t(mask), decoder_input_ids=t(ids[:, :2]))
    assert max_err(reused.logits, r.logits) <= LOGITS_TOL


def test_incremental_decoding_with_past_key_values_equals_one_full_pass(tmp_path):
    ref, model = pair(tmp_path)
    ids, mask = random_batch(np.random.default_rng(7), model.config.vocab_size, 2, 9, pad_rows=[1])
    dec = ids[:, :5]
    full = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
    out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec[:, :2], use_cache=True)
    steps = [out.logits]
    for s in range(2, 5):
        out = model(encoder_outputs=(out.encoder_last_hidden_state,), attention_mask=mask,
                    decoder_input_ids=dec[:, s:s + 1], past_key_values=out.past_key_values, use_cache=True)
        steps.append(out.logits)
    assert float(np.abs(np.concatenate(steps, axis=1) - full.logits).max()) <= ACT_TOL


def test_decoder_attention_mask_matches_reference(tmp_path):
    ref, model = pair(tmp_path)
    ids, mask = random_batch(np.random.default_rng(8), model.config.vocab_size, 2, 8)
    dec = ids[:, :4]
    dmask = np.array([[1, 1, 1, 1], [1, 1, 0, 1]])
    r, o = run_both(ref, model, ids, mask, dec, decoder_attention_mask=dmask)
    assert max_err(o.logits, r.logits) <= LOGITS_TOL


def test_checkpoint_class_defaults_are_overridden_by_config_json(tmp_path):
    # Real checkpoints say relu and 128 global tokens while the class defaults to gelu and 32.
    ref, model = pair(tmp_path, activation_function="relu", num_global_tokens=5)
    assert model.config.activation_function == "relu" and model.config.num_global_tokens == 5
    assert model.params["model"]["encoder"]["embed_global"]["weight"].shape == (5, 16)
