"""Training on the CuPy stand-in (tests/cupy_standin.py): loss_and_grads, one AdamW step and one train_step on
backend="cupy" give NumPy's numbers, keep everything on the device, and synchronise a bounded number of times.

The model is the committed tiny checkpoint (block_size 4, 2 global tokens, stagger, 3 + 2 layers, tied
embeddings); the batch has a padded row (a partial last block with padding inside) and labels with -100.

Tolerances (per tensor, ||stand-in - NumPy|| / ||NumPy||). The stand-in computes with NumPy behind its device
type, so the two differ only where the cupy path takes other operations than the NumPy one (none should):
- float64: 1e-12. The same formulas in float64 (unit roundoff 1.1e-16) in at most another order of
  summation: a sum of n <= 163 terms moves by n*u = 2e-14 relative, and ~10 chained products keep it below
  1e-12. (A real GPU sums the tied table's scatter-add with atomics in no fixed order: the same bound.)
- float32: FP32_GRAD_RTOL of tests/test_training_grads.py (1e-4, its error analysis): the bound minipegx's
  float32 gradients meet against the exact ones, so it bounds the difference of two float32 computations.

Synchronisation budgets (what the stand-in counts: every bool()/int()/float()/get() of a device array):
- loss_and_grads with NumPy inputs: <= 2 per call, the label count (the mean's denominator, also to refuse a
  batch whose labels are all -100) and the loss as a Python float. The inputs are checked on the host.
- loss_and_grads with device inputs: <= 6, one more per device-side input check (ids in the vocabulary,
  the mask's values, its all-padding rows, the labels' range).
- AdamW.step: none (the hyperparameters are Python floats, the moments stay on the device).
- train_step: <= 2 per micro-batch plus 1, the global gradient norm.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_cupy_standin import COUNTS, TINY, on_device   # `cp`, the stand-in as cupy: tests/conftest.py
from training_batches import batch

import minipegx
from minipegx.training import AdamW, Batch, loss_and_grads, named_parameters, train_step

FP64_RTOL = 1e-12        # see the module docstring
FP32_GRAD_RTOL = 1e-4    # tests/test_training_grads.py's, by its error analysis (not imported: it needs torch)
RTOL = {"float64": FP64_RTOL, "float32": FP32_GRAD_RTOL}
HOST_INPUT_SYNCS = 2     # the label count and the loss
DEVICE_INPUT_SYNCS = 6   # + the ids' range, the mask's values, its empty rows, the labels' range


def pair(dtype):
    """(NumPy, stand-in) models of the tiny checkpoint in `dtype`, each with parameters of its own."""
    return tuple(minipegx.from_pretrained(TINY, dtype=dtype, backend=b) for b in ("numpy", "cupy"))


def relative_errors(got: dict, want: dict) -> dict:
    """{name: ||got - want|| / ||want||} with `got` on the device, brought back explicitly."""
    return {n: np.linalg.norm(got[n].get() - w) / np.linalg.norm(w) for n, w in want.items()}


def assert_close(got: dict, want: dict, rtol):
    errs = relative_errors(got, want)
    name = max(errs, key=errs.get)
    assert errs[name] <= rtol, f"{name}: relative error {errs[name]:.2e}"


# ---------------------------------------------------------------------------------------------- add.at
def test_add_at_scatters_with_repeated_indices_on_the_device_in_one_launch(cp):
    a, ones = cp.zeros((4, 2)), cp.ones((4, 2))
    ids = cp.asarray(np.array([1, 3, 1, 1]))
    COUNTS.reset()
    cp.add.at(a, ids, ones)
    assert COUNTS.launches == 1 and COUNTS.syncs == 0 and COUNTS.h2d_bytes == 0
    np.testing.assert_array_equal(a.get(), [[0, 0], [3, 3], [0, 0], [1, 1]])   # numpy.add.at's meaning
    b = cp.zeros((3,), dtype="float32")
    COUNTS.reset()
    cp.add.at(b, [0, 0], np.array([0.5, 0.25]))                # host indices and values: copied, counted
    assert COUNTS.h2d_bytes > 0 and COUNTS.syncs == 0
    assert b.dtype == np.float32 and b.get().tolist() == [0.75, 0.0, 0.0]


def test_add_at_refuses_what_cupy_refuses(cp):
    with pytest.raises(NotImplementedError, match="multiply.at"):              # CuPy scatters add/max/min only
        cp.multiply.at(cp.ones(3), cp.asarray(np.array([0])), 2.0)
    with pytest.raises(TypeError, match="device array"):
        cp.add.at(np.zeros(3), cp.asarray(np.array([0])), 1.0)
    with pytest.raises(TypeError, match="numpy.ndarray"):                      # no host array in the kernel
        cp.add(cp.ones(3), np.ones(3))
    COUNTS.reset()


# ---------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_loss_and_every_gradient_on_the_standin_equal_numpys(cp, dtype, label_smoothing):
    host, device = pair(dtype)
    ids, mask, labels = batch(host.config.vocab_size)
    want_loss, want = loss_and_grads(host, ids, mask, labels, label_smoothing=label_smoothing)
    COUNTS.reset()
    loss, grads = loss_and_grads(device, ids, mask, labels, label_smoothing=label_smoothing)
    assert COUNTS.syncs <= HOST_INPUT_SYNCS, COUNTS.sync_sites
    assert isinstance(loss, float) and abs(loss - want_loss) <= RTOL[dtype] * abs(want_loss)
    assert set(grads) == set(want)
    assert all(on_device(g) and g.dtype == np.dtype(dtype) for g in grads.values())
    assert_close(grads, want, RTOL[dtype])


def test_device_inputs_are_checked_on_the_device_within_the_budget(cp):
    host, device = pair("float64")
    ids, mask, labels = batch(host.config.vocab_size, seed=1)
    want_loss, want = loss_and_grads(host, ids, mask, labels)
    inputs = [cp.asarray(x) for x in (ids, mask, labels)]
    COUNTS.reset()
    loss, grads = loss_and_grads(device, *inputs, recompute=True)    # recomputation: the same gradients
    assert COUNTS.syncs <= DEVICE_INPUT_SYNCS, COUNTS.sync_sites
    assert COUNTS.h2d_bytes == 0                                       # nothing went back and forth
    assert abs(loss - want_loss) <= FP64_RTOL * abs(want_loss)
    assert_close(grads, want, FP64_RTOL)


# ---------------------------------------------------------------------------------------------- updates
def test_one_adamw_step_on_the_standin_equals_numpys_without_synchronising(cp):
    host, device = pair("float64")
    ids, mask, labels = batch(host.config.vocab_size)
    _, grads = loss_and_grads(host, ids, mask, labels)
    opts = AdamW(host, lr=1e-2, weight_decay=0.1), AdamW(device, lr=1e-2, weight_decay=0.1)
    on_gpu = {n: cp.asarray(g) for n, g in grads.items()}
    COUNTS.reset()
    opts[1].step(on_gpu)
    assert COUNTS.syncs == 0, COUNTS.sync_sites
    opts[0].step(grads)
    assert_close(named_parameters(device), named_parameters(host), FP64_RTOL)
    assert all(on_device(m) for m in opts[1].m.values())
    assert_close(opts[1].v, opts[0].v, FP64_RTOL)


def test_one_train_step_on_the_standin_equals_numpys(cp):
    """Two micro-batches accumulated, clipping that bites (max norm 0.5, below the gradient norm), label
    smoothing."""
    host, device = pair("float64")
    ids, mask, labels = batch(host.config.vocab_size, seed=2)
    batches = [Batch(ids, mask, labels), Batch(ids[:1], mask[:1], labels[:1])]
    want = train_step(host, AdamW(host), batches, max_grad_norm=0.5, label_smoothing=0.1)
    COUNTS.reset()
    got = train_step(device, AdamW(device), batches, max_grad_norm=0.5, label_smoothing=0.1)
    assert COUNTS.syncs <= HOST_INPUT_SYNCS * len(batches) + 1, COUNTS.sync_sites
    assert want.grad_norm > 0.5                                         # the clipping took effect
    assert abs(got.loss - want.loss) <= FP64_RTOL * want.loss
    assert abs(got.grad_norm - want.grad_norm) <= FP64_RTOL * want.grad_norm
    assert (got.label_tokens, got.input_tokens) == (want.label_tokens, want.input_tokens)
    assert_close(named_parameters(device), named_parameters(host), FP64_RTOL)


def test_the_tiny_checkpoint_is_the_one_described():
    cfg = minipegx.from_pretrained(TINY).config
    assert (cfg.block_size, cfg.num_global_tokens, cfg.stagger_local_blocks) == (4, 2, True)
    assert (cfg.encoder_layers, cfg.decoder_layers, cfg.tie_word_embeddings) == (3, 2, True)
