"""The bundled demo model (minipegx/data/demo): minipegx and transformers read it the same way and
produce the same summaries from it, token for token.

Tolerance: none. Summaries are compared as token ids (and strings) for equality, with the generation
settings the checkpoint ships (beam search, 4 beams) and greedily. The documents are the bundled example
document and documents from the training task's generator (tools/demo_data.py) with seeds that neither
training nor the held-out evaluation uses.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

import minipegx
from minipegx.pipeline import load

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tools import demo_data

DOCS_SEED = 31337          # neither training's Random(1234 * 1000003 + step) nor eval's 987654321


@pytest.fixture(scope="module")
def both():
    model, tokenizer = load(None)
    ref = transformers.PegasusXForConditionalGeneration.from_pretrained(model.path).eval()
    ref_tokenizer = transformers.PegasusTokenizer.from_pretrained(model.path)
    return model, tokenizer, ref, ref_tokenizer


def documents():
    rng = random.Random(DOCS_SEED)
    generated = [demo_data.make_example(rng, n_tokens)[0] for n_tokens in (400, 1500)]
    return [minipegx.example_document()] + generated


def test_the_demo_tokenizer_gives_transformers_ids(both):
    _, tokenizer, _, ref_tokenizer = both
    for doc in documents():
        assert tokenizer.encode(doc) == ref_tokenizer(doc).input_ids


@pytest.mark.parametrize("num_beams", [4, 1], ids=["shipped-beam-4", "greedy"])
def test_the_demo_summaries_equal_transformers_generate(both, num_beams):
    model, tokenizer, ref, ref_tokenizer = both
    for doc in documents():
        ids = ref_tokenizer(doc, return_tensors="pt").input_ids
        with torch.no_grad():
            expected = ref.generate(ids, num_beams=num_beams)[0].tolist()
        mine = np.asarray(model.generate(ids.numpy(), num_beams=num_beams))[0].tolist()
        assert mine == expected
        assert minipegx.summarize(doc, num_beams=num_beams) == ref_tokenizer.decode(expected, skip_special_tokens=True)


def test_every_slot_word_of_the_task_is_one_demo_token(both):
    # The recipe gives every corpus word its own piece (tools/train_demo.py add_word_pieces), so the
    # model copies a name, number, object or place as one token.
    _, tokenizer, _, _ = both
    slots = demo_data.NAMES + demo_data.PLACES + demo_data.VERBS + demo_data.OBJECTS + [str(n) for n in range(2, 100)]
    split = [w for w in slots if len(tokenizer.encode(w)) != 2]          # the word and </s>
    assert split == []
