"""loss_and_grads equals torch autograd through transformers' PegasusXForConditionalGeneration, llm.c-style:
the loss and every parameter's gradient, on tiny random models that exercise the hard parts (padded inputs,
staggered blocks on and off, global tokens or none, a partial last block, labels with -100, every activation,
label smoothing 0 and 0.1, untied embeddings).

Tolerances (per tensor, ||ours - torch|| / ||torch||):
- float64: 1e-9 (the issue's bound). Both sides compute the same formulas in float64 (unit roundoff 1.1e-16)
  in a different order; through ~10 chained products of length <= 163 the difference stays ~1e-14.
- float32: FP32_GRAD_RTOL below, against torch in float64, i.e. the exact gradient to 1e-16, so the bound is
  on our own float32 error alone. Float32's unit roundoff is u = 6e-8; a product of length n is off by at
  most n*u relative (worst case, n <= 163 here: 1e-5), and the backward chains ~10 of them (the LM head,
  four layers' attention and FFN, the norms), so 1e-4 bounds the worst case; the typical error is ~1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference import hf_model, save, t, torch
from training_batches import batch

import minipegx
from minipegx.config import ACTIVATIONS
from minipegx.errors import InputError
from minipegx.training import loss_and_grads, named_parameters

FP64_GRAD_RTOL = 1e-9   # the bound for float64 (see the module docstring)
FP32_GRAD_RTOL = 1e-4   # float32 against the float64 reference: the error analysis in the module docstring

_PAIRS = {}


def models(tmp_path_factory, dtype="float64", seed=0, **overrides):
    """(transformers model in float64, minipegx model in dtype), same random weights, through a checkpoint."""
    key = (dtype, seed, tuple(sorted(overrides.items())))
    if key not in _PAIRS:
        ref = hf_model(seed, **overrides)
        path = save(ref, tmp_path_factory.mktemp("ckpt"))
        _PAIRS[key] = ref.double(), minipegx.from_pretrained(path, dtype=dtype)
    return _PAIRS[key]


def torch_loss_and_grads(ref, ids, mask, labels, decoder_attention_mask=None, label_smoothing=0.0):
    """The reference: transformers' logits from labels, torch's cross entropy, autograd."""
    ref.zero_grad()
    kw = {} if decoder_attention_mask is None else {"decoder_attention_mask": t(decoder_attention_mask)}
    logits = ref(input_ids=t(ids), attention_mask=t(mask), labels=t(labels), **kw).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), t(labels).reshape(-1),
                                             ignore_index=-100, label_smoothing=label_smoothing)
    loss.backward()
    # A parameter the loss never reads has no .grad in torch (untied checkpoints' model.shared.weight): zero.
    return loss.item(), {n: np.zeros(p.shape) if p.grad is None else p.grad.numpy()
                         for n, p in ref.named_parameters()}


def worst_relative_error(grads, want):
    """max over tensors of ||got - want|| / ||want|| (||got|| for a zero or empty want), and the tensor's name."""
    diff = {n: np.linalg.norm(np.asarray(grads[n], np.float64) - w) for n, w in want.items()}
    errs = {n: d / np.linalg.norm(want[n]) if np.linalg.norm(want[n]) > 0 else d for n, d in diff.items()}
    name = max(errs, key=errs.get)
    return errs[name], name


def assert_matches_torch(ref, model, ids, mask, labels, rtol, **kw):
    want_loss, want = torch_loss_and_grads(ref, ids, mask, labels, **kw)
    loss, grads = loss_and_grads(model, ids, mask, labels, **kw)
    assert isinstance(loss, float)
    assert abs(loss - want_loss) <= rtol * abs(want_loss)
    assert set(grads) == set(want)                     # transformers' names, the tied table once
    err, name = worst_relative_error(grads, want)
    assert err <= rtol, f"{name}: relative error {err:.2e}"


CONFIGS = {
    "stagger+globals": {},
    "no-stagger": {"stagger_local_blocks": False},
    "no-global-tokens": {"num_global_tokens": 0},
    "five-globals-block-6": {"num_global_tokens": 5, "block_size": 6},
    "unscaled-embeddings": {"scale_embedding": False},
    "three-encoder-layers": {"encoder_layers": 3, "decoder_layers": 1, "encoder_attention_heads": 4},
    "untied-embeddings": {"tie_word_embeddings": False},
}


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_float64_loss_and_every_gradient_equal_torch_autograd(tmp_path_factory, overrides, label_smoothing):
    ref, model = models(tmp_path_factory, **overrides)
    ids, mask, labels = batch(model.config.vocab_size)
    assert_matches_torch(ref, model, ids, mask, labels, FP64_GRAD_RTOL, label_smoothing=label_smoothing)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float64_gradients_equal_torch_for_every_activation(tmp_path_factory, activation):
    ref, model = models(tmp_path_factory, activation_function=activation)
    ids, mask, labels = batch(model.config.vocab_size, seed=1)
    assert_matches_torch(ref, model, ids, mask, labels, FP64_GRAD_RTOL)


@pytest.mark.parametrize("length", [3, 4, 8, 13], ids=["below-one-block", "one-block", "two-blocks", "partial-block"])
def test_float64_gradients_equal_torch_at_lengths_around_the_block_size(tmp_path_factory, length):
    ref, model = models(tmp_path_factory)
    ids, mask, labels = batch(model.config.vocab_size, T=length, seed=length)
    mask[1, length // 2 + 1:], ids[1, length // 2 + 1:] = 0, 0
    assert_matches_torch(ref, model, ids, mask, labels, FP64_GRAD_RTOL)


def test_float64_gradients_equal_torch_with_a_decoder_attention_mask(tmp_path_factory):
    ref, model = models(tmp_path_factory)
    ids, mask, labels = batch(model.config.vocab_size)
    decoder_mask = np.ones(labels.shape, np.int64)
    decoder_mask[1, 4:] = 0                            # the steps whose labels are -100
    assert_matches_torch(ref, model, ids, mask, labels, FP64_GRAD_RTOL, decoder_attention_mask=decoder_mask,
                         label_smoothing=0.1)


def test_float32_gradients_are_within_the_float32_error_bound_of_the_exact_ones(tmp_path_factory):
    ref, _ = models(tmp_path_factory, activation_function="gelu")
    _, model = models(tmp_path_factory, dtype="float32", activation_function="gelu")
    ids, mask, labels = batch(model.config.vocab_size)
    assert_matches_torch(ref, model, ids, mask, labels, FP32_GRAD_RTOL, label_smoothing=0.1)
    _, grads = loss_and_grads(model, ids, mask, labels)
    assert all(g.dtype == np.float32 for g in grads.values())


@pytest.mark.parametrize("overrides", [{}, {"stagger_local_blocks": False, "tie_word_embeddings": False}])
def test_recomputation_gives_the_same_loss_and_gradients_bit_for_bit(tmp_path_factory, overrides):
    _, model = models(tmp_path_factory, dtype="float32", **overrides)
    ids, mask, labels = batch(model.config.vocab_size)
    loss, grads = loss_and_grads(model, ids, mask, labels, label_smoothing=0.1)
    loss_r, grads_r = loss_and_grads(model, ids, mask, labels, label_smoothing=0.1, recompute=True)
    assert loss_r == loss
    assert all(np.array_equal(grads_r[n], g) for n, g in grads.items())


def test_gradients_have_the_parameters_names_shapes_and_dtype(tmp_path_factory):
    _, model = models(tmp_path_factory)
    ids, mask, labels = batch(model.config.vocab_size)
    params = named_parameters(model)
    _, grads = loss_and_grads(model, ids, mask, labels)
    assert set(grads) == set(params)
    assert all(grads[n].shape == p.shape and grads[n].dtype == p.dtype == np.float64 for n, p in params.items())


def test_named_parameters_are_the_models_own_arrays(tmp_path_factory):
    ref, model = models(tmp_path_factory, seed=3)
    params = named_parameters(model)
    assert set(params) == set(dict(ref.named_parameters()))
    # PEGASUS-X's LM head has no bias: no final_logits_bias, neither parameter nor buffer (BART's has one)
    assert not any("final_logits_bias" in n for n, _ in [*ref.named_parameters(), *ref.named_buffers()])
    w = params["model.encoder.layers.0.fc1.weight"]
    w *= 0.0                                           # an optimizer's in-place update reaches the model
    assert not model.params["model"]["encoder"]["layers"][0]["fc1"]["weight"].any()


def test_the_float64_forward_matches_torch_in_float64(tmp_path_factory):
    ref, model = models(tmp_path_factory, activation_function="gelu")
    ids, mask, labels = batch(model.config.vocab_size)
    dec = np.where(labels == -100, 0, labels)
    with torch.no_grad():
        want = ref(input_ids=t(ids), attention_mask=t(mask), decoder_input_ids=t(dec)).logits.numpy()
    got = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert got.dtype == np.float64
    assert np.linalg.norm(got - want) <= FP64_GRAD_RTOL * np.linalg.norm(want)


def test_training_refuses_what_it_cannot_train(tmp_path_factory):
    _, model = models(tmp_path_factory)
    ids, mask, labels = batch(model.config.vocab_size)
    with pytest.raises(InputError, match="every label is -100"):
        loss_and_grads(model, ids, mask, np.full_like(labels, -100))
    with pytest.raises(InputError, match="label_smoothing"):
        loss_and_grads(model, ids, mask, labels, label_smoothing=1.5)
    with pytest.raises(InputError, match="labels have 1 rows"):
        loss_and_grads(model, ids, mask, labels[:1])
    for dtype in ("float16", "bfloat16"):
        with pytest.raises(InputError, match="float32 or float64"):
            loss_and_grads(minipegx.from_pretrained(model.path, dtype=dtype), ids, mask, labels)
    with pytest.raises(InputError, match="quantized"):
        loss_and_grads(minipegx.from_pretrained(model.path, quantize="int8"), ids, mask, labels)
