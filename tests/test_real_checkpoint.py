"""Opt-in: a real google/pegasus-x-* checkpoint downloaded by you, named by MINIPEGX_REAL_CHECKPOINT.

    MINIPEGX_REAL_CHECKPOINT=/path/to/pegasus-x-base python -m pytest tests/test_real_checkpoint.py

Nothing is downloaded here. Tolerances: real-size fp32 logits within 1e-4 relative to their scale
(768/1024-wide matmuls sum in another order than torch's: ~1e-6 relative per op over 32 layers),
and generated ids identical."""

import os

import numpy as np
import pytest

from minipegx.tolerances import REAL_CHECKPOINT

CKPT = os.environ.get("MINIPEGX_REAL_CHECKPOINT")
pytestmark = [pytest.mark.real_checkpoint,
              pytest.mark.skipif(not CKPT, reason="opt-in: set MINIPEGX_REAL_CHECKPOINT to a checkpoint directory")]

TEXT = ("PEGASUS-X extends PEGASUS with staggered block-local attention and global tokens, so that it can read "
        "inputs of up to 16,000 tokens. " * 40)


@pytest.fixture(scope="module")
def both():
    transformers = pytest.importorskip("transformers")
    import minipegx

    ref = transformers.PegasusXForConditionalGeneration.from_pretrained(CKPT).eval()
    return ref, minipegx.from_pretrained(CKPT), minipegx.Tokenizer.from_pretrained(CKPT)


def test_real_checkpoint_agrees_layer_by_layer(both):
    import minipegx.parity as parity

    ref, model, tok = both
    batch = tok([TEXT], return_tensors="np")
    report = parity.compare(None, batch["input_ids"], batch["attention_mask"], steps=2, model=model,
                            reference=ref, atol=REAL_CHECKPOINT.atol, rtol=REAL_CHECKPOINT.rtol)
    print(report)
    assert report.ok, str(report)


def test_real_checkpoint_generates_the_reference_ids(both):
    import torch

    ref, model, tok = both
    batch = tok([TEXT], return_tensors="np")
    opts = dict(num_beams=2, max_new_tokens=24, length_penalty=0.8)
    with torch.no_grad():
        want = ref.generate(input_ids=torch.as_tensor(batch["input_ids"]),
                            attention_mask=torch.as_tensor(batch["attention_mask"]), **opts).numpy()
    got = np.asarray(model.generate(batch["input_ids"], batch["attention_mask"], **opts))
    assert np.array_equal(got, want)
