"""Numbers checked without torch: the committed tiny checkpoint and the outputs transformers gave for it
(written by tools/make_goldens.py; versions recorded in the .npz). Runs on any install of minipegx.

Tolerances (minipegx.tolerances): fp32 logits LOGITS (the weights are scaled x10 so logits are O(1));
the encoder output TINY_FP32 x 10, relative to its O(10) scale; generated ids exactly equal, after a check
that no decision of those searches is within the rounding noise another machine's kernels may add."""

from pathlib import Path

import numpy as np
import pytest

import minipegx
from minipegx.tolerances import LOGITS, TINY_FP32
from ties import assert_no_near_tie

GOLDENS = Path(__file__).parent / "goldens"


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDENS / "tiny_outputs.npz"))


@pytest.fixture(scope="module")
def model():
    return minipegx.from_pretrained(GOLDENS / "tiny")


def test_logits_and_loss_equal_the_recorded_reference(model, golden):
    out = model(input_ids=golden["input_ids"], attention_mask=golden["attention_mask"], labels=golden["labels"])
    assert np.abs(out.logits - golden["logits"]).max() <= LOGITS.atol
    assert abs(float(out.loss) - float(golden["loss"])) <= LOGITS.atol


def test_encoder_output_equals_the_recorded_reference(model, golden):
    enc = model.encode(golden["input_ids"], golden["attention_mask"])
    assert np.abs(enc.last_hidden_state - golden["encoder_last_hidden_state"]).max() <= TINY_FP32.atol * 10


def test_decoder_hidden_state_equals_the_recorded_reference(model, golden):
    out = model(input_ids=golden["input_ids"], attention_mask=golden["attention_mask"], labels=golden["labels"],
                output_hidden_states=True)
    assert np.abs(out.decoder_hidden_states[1] - golden["decoder_hidden_state_1"]).max() <= LOGITS.atol


GREEDY = dict(num_beams=1, max_new_tokens=8, min_new_tokens=8)
BEAM3 = dict(num_beams=3, max_new_tokens=8, length_penalty=0.8)


@pytest.mark.parametrize("options", [GREEDY, BEAM3], ids=["greedy", "beam3"])
def test_the_recorded_searches_have_no_near_tie(model, golden, options):
    # The recorded ids were made on one machine; they are the same on every machine only because no decision
    # of these searches is within the LOGITS rung's noise (tests/ties.py).
    assert_no_near_tie(model, golden["input_ids"], golden["attention_mask"], rung=LOGITS, **options)


def test_greedy_ids_equal_the_recorded_reference(model, golden):
    ids = model.generate(golden["input_ids"], golden["attention_mask"], **GREEDY)
    assert np.array_equal(np.asarray(ids), golden["greedy_ids"])


def test_beam_search_ids_equal_the_recorded_reference(model, golden):
    ids = model.generate(golden["input_ids"], golden["attention_mask"], **BEAM3)
    assert np.array_equal(np.asarray(ids), golden["beam3_ids"])
