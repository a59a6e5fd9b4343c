"""minipegx.parity: the layer-by-layer comparison a course uses to check a student's layer."""

import numpy as np

from reference import pair, random_batch

import minipegx.encoder
import minipegx.parity as parity


def test_every_intermediate_is_within_tolerance_through_decoding_steps(tmp_path):
    ref, model = pair(tmp_path)
    ids, mask = random_batch(np.random.default_rng(0), model.config.vocab_size, 2, 9, pad_rows=[1])
    report = parity.compare(None, ids, mask, steps=2, model=model, reference=ref)
    assert report.ok, str(report)
    names = [r.name for r in report.rows]
    assert "model.encoder.layers.1.self_attn" in names and "step 2: lm_head" in names
    assert report.max_abs_err <= 1e-4


def test_a_broken_layer_is_named_as_the_first_divergence(tmp_path):
    ref, model = pair(tmp_path)
    ids, mask = random_batch(np.random.default_rng(1), model.config.vocab_size, 1, 9)
    correct = minipegx.encoder.global_local_attention

    def student_attention(x, g, mask, p, num_heads, block_size, output_attentions=True):  # scales its output
        tokens, global_tokens, probs = correct(x, g, mask, p, num_heads, block_size, output_attentions)
        return tokens * 1.5, global_tokens, probs

    report = parity.compare(None, ids, mask, model=model, reference=ref,
                            patch={"minipegx.encoder.global_local_attention": student_attention})
    assert report.first_divergence == "model.encoder.layers.0.self_attn"
    assert minipegx.encoder.global_local_attention is correct      # the patch is undone


def test_the_report_prints_a_table_naming_the_verdict(tmp_path):
    ref, model = pair(tmp_path)
    ids, mask = random_batch(np.random.default_rng(2), model.config.vocab_size, 1, 5)
    text = str(parity.compare(None, ids, mask, model=model, reference=ref))
    assert "model.encoder.layer_norm" in text and "all within tolerance" in text
