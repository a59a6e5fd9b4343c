"""Lower precision: float16/bfloat16 compute, int8/nf4 weight quantization, overflow and NaN reporting.

Tolerances, each derived where it is used:
  * fp16 / bf16 logits: within 8 u * max|fp32 logits|, u the unit roundoff (fp16: 11 significant bits,
    u = 2^-11 ~ 4.9e-4; bf16: 8 bits, u = 2^-8 ~ 3.9e-3). A logit is ~4 roundings away from the exact
    value along any path (layer-norm output, each matmul output, softmax, the logit itself), each at most
    u relative: ~4u to first order, and 2x for what two random layers amplify. Measured: <= 1.3 u.
  * int8 logits: within half an int8 step, max|fp32 logits| / 254: each weight is within half a step
    (absmax / 254) of its row's absmax, and normalized layers pass relative errors on without growing
    them beyond that. Measured: ~0.15 of the bound.
  * nf4 logits: within half the widest NF4 gap, (1 - 0.696) / 2 = 0.152, times max|fp32 logits|, by the
    same argument. Measured: ~0.08 of the bound.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference import hf_model, random_batch, save, t, torch

import minipegx
from minipegx.errors import ConfigError, NumericalError
from minipegx.checkpoint import save_quantized
from minipegx.quantize import (NF4_CODE, Int8Weight, NF4Weight, dequantize, quantize_int8, quantize_nf4,
                               quantize_params, weight_bytes)

U = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
LOW_PRECISION_TOL = 8            # x u x max|logits|, see the module docstring
INT8_TOL = 1 / 254               # x max|logits|: half an int8 step
NF4_TOL = (1 - 0.6961928009986877) / 2   # x max|logits|: half the widest NF4 gap
SMALL = dict(d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, activation_function="gelu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny checkpoint (d_model 32, GELU, 2+2 layers, block 4, stagger), inputs with padding,
    and its float32 logits."""
    path = save(hf_model(3, **SMALL), tmp_path_factory.mktemp("tiny") / "ckpt")
    m32 = minipegx.from_pretrained(path)
    ids, mask = random_batch(np.random.default_rng(3), m32.config.vocab_size, 2, 13, pad_rows=[1])
    dec = ids[:, :6]
    return path, ids, mask, dec, m32(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits


def logits(model, ids, mask, dec):
    return model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.astype(np.float32)


# ------------------------------------------------------------------------------------- fp16 / bf16
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_logits_are_within_a_few_roundings_of_float32(tiny, dtype):
    path, ids, mask, dec, ref = tiny
    model = minipegx.from_pretrained(path, dtype=dtype)
    out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert out.dtype.name == dtype
    err = np.abs(out.astype(np.float32) - ref).max()
    assert 0 < err <= LOW_PRECISION_TOL * U[dtype] * np.abs(ref).max()


def overflowing_pair(tmp_path, bias):
    """transformers model whose fc2 adds `bias` to channel 0 in each of 3 encoder and 3 decoder layers,
    so the residual stream grows past float16's 65504 while every single layer output stays below it."""
    ref = hf_model(0, encoder_layers=3, decoder_layers=3)
    with torch.no_grad():
        for layer in [*ref.model.encoder.layers, *ref.model.decoder.layers]:
            layer.fc2.bias[0] = bias
    return ref, save(ref, tmp_path / "overflow")


def test_fp16_stays_finite_and_close_where_transformers_fp16_overflows(tmp_path):
    ref, path = overflowing_pair(tmp_path, 25000.0)   # residual: 25k, 50k, 75k > 65504
    ids, mask = random_batch(np.random.default_rng(0), ref.config.vocab_size, 2, 13, pad_rows=[1])
    dec = ids[:, :5]
    with torch.no_grad():
        naive = ref.half()(input_ids=t(ids), attention_mask=t(mask), decoder_input_ids=t(dec)).logits
    assert not torch.isfinite(naive).all()            # the reference in fp16: inf in the residual -> NaN
    want = logits(minipegx.from_pretrained(path), ids, mask, dec)
    got = logits(minipegx.from_pretrained(path, dtype="float16"), ids, mask, dec)
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= LOW_PRECISION_TOL * U["float16"] * np.abs(want).max()


def test_fp16_overflow_inside_a_layer_raises_naming_that_layer_and_bf16_does_not(tmp_path):
    ref = hf_model(0)
    with torch.no_grad():   # encoder layer 1's fc2 output passes 65504 by itself: 40000 + 1000 * (32 x ~1)
        ref.model.encoder.layers[1].fc1.bias[:] = 1.0
        ref.model.encoder.layers[1].fc2.weight[0] = 1000.0
        ref.model.encoder.layers[1].fc2.bias[0] = 40000.0
    path = save(ref, tmp_path / "ckpt")
    ids, mask = random_batch(np.random.default_rng(0), ref.config.vocab_size, 1, 9)
    with pytest.raises(NumericalError, match=r"model\.encoder\.layers\.1 \(tokens\).*bfloat16"):
        logits(minipegx.from_pretrained(path, dtype="float16"), ids, mask, ids[:, :3])
    want = logits(minipegx.from_pretrained(path), ids, mask, ids[:, :3])
    got = logits(minipegx.from_pretrained(path, dtype="bfloat16"), ids, mask, ids[:, :3])
    assert np.abs(got - want).max() <= LOW_PRECISION_TOL * U["bfloat16"] * np.abs(want).max()


def test_weights_beyond_float16_range_are_refused_at_load(tmp_path):
    ref = hf_model(0)
    with torch.no_grad():
        ref.model.decoder.layers[0].fc1.bias[2] = 70000.0
    path = save(ref, tmp_path / "ckpt")
    with pytest.warns(RuntimeWarning), pytest.raises(NumericalError, match=r"decoder\.layers\.0\.fc1\.bias"):
        minipegx.from_pretrained(path, dtype="float16")
    minipegx.from_pretrained(path, dtype="bfloat16")   # bfloat16 has float32's range


def test_inf_in_a_decoder_weight_is_reported_with_its_layer_when_checks_are_on_in_float32(tiny):
    path, ids, mask, dec, _ = tiny
    model = minipegx.from_pretrained(path)
    v_proj = model.params["model"]["decoder"]["layers"][1]["self_attn"]["v_proj"]
    v_proj["weight"] = v_proj["weight"].copy()            # loaded weights are read-only views of the file
    v_proj["weight"][0, 0] = np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        assert not np.isfinite(logits(model, ids, mask, dec)).all()   # float32 default: no check, NaN out
        model.check_finite = True
        with pytest.raises(NumericalError, match=r"first appeared in model\.decoder\.layers\.1:"):
            logits(model, ids, mask, dec)


# ------------------------------------------------------------------------------------- int8 / nf4
def test_int8_dequantization_error_is_at_most_half_a_step_per_output_channel():
    w = np.random.default_rng(0).standard_normal((48, 80)).astype(np.float32) * np.linspace(0.01, 3, 48)[:, None]
    w[5] = 0.0                                             # an all-zero row stays exactly zero
    q = quantize_int8(w)
    assert q.q.dtype == np.int8 and np.abs(q.q.astype(int)).max() <= 127 and q.scale.shape == (48,)
    err = np.abs(w - q.dequantize())
    assert (err <= q.scale[:, None] / 2 * (1 + 1e-6)).all()  # 1e-6: the float32 division w / scale
    assert not q.dequantize()[5].any()


def test_nf4_maps_each_value_to_the_nearest_code_times_its_block_absmax():
    w = np.random.default_rng(1).standard_normal((24, 40)).astype(np.float32)   # 960 values: 15 blocks of 64
    w[0, :] = 0.0                                          # the first block is partly zero
    q = quantize_nf4(w)
    assert q.packed.dtype == np.uint8 and q.packed.shape == (960 // 2,) and q.absmax.shape == (15,)
    blocks = w.reshape(15, 64)
    assert np.array_equal(q.absmax, np.abs(blocks).max(axis=1))
    normalized = blocks / np.where(q.absmax > 0, q.absmax, 1)[:, None]
    nearest = np.abs(normalized[..., None] - NF4_CODE).argmin(axis=-1)            # [15, 64]
    assert np.array_equal(q.indices().reshape(15, 64), nearest)
    assert np.array_equal(q.dequantize().reshape(15, 64), NF4_CODE[nearest] * q.absmax[:, None])


def test_nf4_pads_a_tensor_that_is_not_a_whole_number_of_blocks():
    w = np.random.default_rng(2).standard_normal((16, 7)).astype(np.float32)     # 112 values: 2 blocks
    q = quantize_nf4(w)
    assert q.absmax.shape == (2,) and q.dequantize().shape == (16, 7)
    assert np.abs(q.dequantize() - w).max() <= NF4_TOL * np.abs(w).max()


def test_quantize_params_covers_every_linear_layer_and_leaves_embeddings_and_norms(tiny):
    path = tiny[0]
    model = minipegx.from_pretrained(path)
    for mode, kind in [("int8", Int8Weight), ("nf4", NF4Weight)]:
        params = quantize_params(model.params, mode)
        enc, dec = params["model"]["encoder"]["layers"][0], params["model"]["decoder"]["layers"][0]
        for w in [*(enc["self_attn"][n]["weight"] for n in ("q_proj", "k_proj", "v_proj", "out_proj")),
                  *(dec["encoder_attn"][n]["weight"] for n in ("q_proj", "k_proj", "v_proj", "out_proj")),
                  enc["fc1"]["weight"], dec["fc2"]["weight"]]:
            assert isinstance(w, kind)
        assert isinstance(params["model"]["shared"]["weight"], np.ndarray)     # embedding = tied LM head
        assert isinstance(enc["fc1"]["bias"], np.ndarray) and isinstance(enc["final_layer_norm"]["weight"], np.ndarray)
        assert weight_bytes(params) < weight_bytes(model.params)
    assert isinstance(model.params["model"]["encoder"]["layers"][0]["fc1"]["weight"], np.ndarray)  # not modified


@pytest.mark.parametrize("mode,tol", [("int8", INT8_TOL), ("nf4", NF4_TOL)])
def test_quantized_logits_are_within_half_a_quantization_step(tiny, mode, tol):
    path, ids, mask, dec, ref = tiny
    got = logits(minipegx.from_pretrained(path, quantize=mode), ids, mask, dec)
    assert 0 < np.abs(got - ref).max() <= tol * np.abs(ref).max()


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_quantized_weights_round_trip_exactly_through_save_and_load(tiny, tmp_path, mode):
    path, ids, mask, dec, _ = tiny
    model = minipegx.from_pretrained(path, quantize=mode)
    saved = save_quantized(model, tmp_path / mode)
    again = minipegx.from_pretrained(saved)
    from minipegx.checkpoint import flatten_params
    a, b = flatten_params(model.params), flatten_params(again.params)
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], (Int8Weight, NF4Weight)):
            assert type(a[name]) is type(b[name]) and a[name].shape == b[name].shape
            assert np.array_equal(dequantize(a[name]), dequantize(b[name]))
            assert all(np.array_equal(x, y) for x, y in zip(a[name].tensors().values(), b[name].tensors().values()))
        else:
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name])
    assert np.array_equal(logits(model, ids, mask, dec), logits(again, ids, mask, dec))
    with pytest.raises(ConfigError, match="quantize=None"):
        minipegx.from_pretrained(saved, quantize="nf4" if mode == "int8" else "int8")


# ------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("dtype,quantize,tol", [("float16", None, LOW_PRECISION_TOL * U["float16"]),
                                                ("bfloat16", None, LOW_PRECISION_TOL * U["bfloat16"]),
                                                ("float32", "int8", INT8_TOL)])
def test_greedy_ids_match_float32_wherever_the_top_margin_exceeds_twice_the_error_bound(tiny, dtype, quantize, tol):
    """If every logit is within e of float32's, the argmax cannot change where float32's top-1 leads the
    runner-up by more than 2e; so, fed float32's greedy ids, the argmax agrees at every such step."""
    path, ids, mask, _, _ = tiny
    m32 = minipegx.from_pretrained(path)
    seq = m32.generate(ids, mask, max_new_tokens=8, min_new_tokens=8)                   # [2, 9]
    ref = logits(m32, ids, mask, seq[:, :-1])                                           # [2, 8, V]
    low = logits(minipegx.from_pretrained(path, dtype=dtype, quantize=quantize), ids, mask, seq[:, :-1])
    top2 = np.sort(ref, axis=-1)[..., -2:]
    confident = top2[..., 1] - top2[..., 0] > 2 * tol * np.abs(ref).max()
    assert confident.sum() >= 4                                                         # not vacuous
    assert np.array_equal(low.argmax(-1)[confident], ref.argmax(-1)[confident])
