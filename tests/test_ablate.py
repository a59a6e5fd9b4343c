"""minipegx.ablations and tools/ablate.py: the inference-time ablations (stagger off, tokens cut off from the global tokens, full
attention) mean the same in minipegx and in transformers, and do what they say.

Tolerance: encoder outputs of the bundled demo model (fp32, d_model 128, three layers) agree to 1e-4, the
real-size fp32 tolerance (different summation orders; measured ~1e-6), and greedy summaries to the token.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

import minipegx
from minipegx import ablations
from minipegx.errors import ConfigError
from minipegx.tolerances import LONG_INPUTS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tools import ablate, demo_data

DOC_SEED = 4242            # neither training's Random(1234 * 1000003 + step) nor eval's 987654321


@pytest.fixture(scope="module")
def models():
    path = minipegx.demo_model_path()
    ref = transformers.PegasusXForConditionalGeneration.from_pretrained(path).eval()
    tok = transformers.PegasusTokenizer.from_pretrained(path)
    doc, _ = demo_data.make_example(random.Random(DOC_SEED), 700)
    ids = tok(doc, return_tensors="pt").input_ids
    return minipegx.from_pretrained(path), ref, ids


def encoder_out(ref, ids):
    with torch.no_grad():
        return ref.model.encoder(input_ids=ids).last_hidden_state.numpy()


@pytest.mark.parametrize("ablation", ["stagger_off", "globals_cut", "full"])
def test_an_ablation_gives_minipegx_and_transformers_the_same_encoder_output(models, ablation):
    mine, ref, ids = models
    theirs = ablate.ablated(ref, ablation, length=ids.shape[1])
    ours = ablations.ablate(mine, ablation, length=ids.shape[1])
    got = np.asarray(ours.encode(ids.numpy()).last_hidden_state)
    want = encoder_out(theirs, ids)
    assert LONG_INPUTS.holds(got, want), LONG_INPUTS.error(got, want)   # the parity tool's rung, demo model


@pytest.mark.parametrize("ablation", ["stagger_off", "globals_cut", "full"])
def test_an_ablation_changes_the_encoder_output(models, ablation):
    _, ref, ids = models
    theirs = ablate.ablated(ref, ablation, length=ids.shape[1])
    assert np.abs(encoder_out(theirs, ids) - encoder_out(ref, ids)).max() > 0.1


def test_cut_off_tokens_do_not_read_the_global_tokens(models):
    _, ref, ids = models
    cut = ablate.ablated(ref, "globals_cut")
    before = encoder_out(cut, ids)
    with torch.no_grad():
        cut.model.encoder.embed_global.weight.normal_()
    np.testing.assert_array_equal(encoder_out(cut, ids), before)


def test_ablations_leave_the_original_model_alone(models):
    mine, ref, ids = models
    before = encoder_out(ref, ids)
    ablate.ablated(ref, "globals_cut"), ablate.ablated(ref, "stagger_off")
    ablations.ablate(mine, "globals_cut")
    np.testing.assert_array_equal(encoder_out(ref, ids), before)
    assert mine.config.num_global_tokens == ref.config.num_global_tokens


def test_an_unknown_ablation_is_refused_by_name(models):
    mine, ref, _ = models
    with pytest.raises(ConfigError, match="no_encoder"):
        ablations.ablate(mine, "no_encoder")
    with pytest.raises(ConfigError, match="length="):
        ablations.ablate(mine, "full")
