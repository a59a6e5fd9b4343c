"""The CuPy path gives the NumPy results. Skipped cleanly (and reported as skipped) without CuPy or a GPU.

Tolerance 1e-4 on logits: cuBLAS and OpenBLAS sum in different orders (~1e-6 relative at these sizes);
CuPy does not use TF32 unless CUPY_TF32=1 is set, which these tests refuse."""

import os
from pathlib import Path

import numpy as np
import pytest

import minipegx
from minipegx.backend import cupy_available, to_numpy
from minipegx.tolerances import CUPY_ACTIVATIONS, CUPY_LOGITS

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU")]
GOLDENS = Path(__file__).parent / "goldens"


@pytest.fixture(scope="module")
def models():
    assert os.environ.get("CUPY_TF32", "0") == "0", "TF32 would change results; unset CUPY_TF32"
    return minipegx.from_pretrained(GOLDENS / "tiny"), minipegx.from_pretrained(GOLDENS / "tiny", backend="cupy")


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDENS / "tiny_outputs.npz"))


def test_cupy_logits_equal_numpy_logits(models, golden):
    cpu, gpu = models
    kw = dict(input_ids=golden["input_ids"], attention_mask=golden["attention_mask"], labels=golden["labels"])
    a, b = cpu(**kw), gpu(**kw)
    assert type(b.logits).__module__.startswith("cupy")
    assert np.abs(to_numpy(b.logits) - a.logits).max() <= CUPY_LOGITS.atol
    assert np.abs(to_numpy(b.logits) - golden["logits"]).max() <= CUPY_LOGITS.atol


def test_cupy_generation_equals_the_reference_ids(models, golden):
    _, gpu = models
    ids = gpu.generate(golden["input_ids"], golden["attention_mask"], num_beams=3, max_new_tokens=8,
                       length_penalty=0.8)
    assert np.array_equal(to_numpy(ids), golden["beam3_ids"])


def test_cupy_attentions_equal_numpy(models, golden):
    cpu, gpu = models
    kw = dict(input_ids=golden["input_ids"], attention_mask=golden["attention_mask"],
              decoder_input_ids=golden["labels"][:, :3], output_attentions=True)
    a, b = cpu(**kw), gpu(**kw)
    for x, y in zip(a.encoder_attentions, b.encoder_attentions):
        assert np.abs(to_numpy(y["local"]) - x["local"]).max() <= CUPY_ACTIVATIONS.atol


def test_cupy_float16_logits_are_within_a_few_roundings_of_float32(models, golden):
    """Native float16 on cuBLAS (float32 accumulation, one rounding): within the 8 u x max|logits| of
    tests/test_precision.py, u = 2^-11 (a logit is ~4 roundings away from exact, x2 margin)."""
    cpu, _ = models
    half = minipegx.from_pretrained(GOLDENS / "tiny", backend="cupy", dtype="float16")
    kw = dict(input_ids=golden["input_ids"], attention_mask=golden["attention_mask"], labels=golden["labels"])
    ref, out = cpu(**kw).logits, to_numpy(half(**kw).logits).astype(np.float32)
    assert np.abs(out - ref).max() <= 8 * 2.0 ** -11 * np.abs(ref).max()
