"""Bad input gets minipegx's own errors, naming what is wrong and how to fix it; warnings where the work
can go on. Checkpoint, tokenizer and generation-option errors have their own files
(test_checkpoint.py, test_tokenizer.py, test_generate.py); this file covers config, model input and
backend, plus property-based tests that nothing else escapes."""

from pathlib import Path
import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minipegx
from minipegx.backend import cupy_available, get_backend
from minipegx.config import PegasusXConfig
from minipegx.errors import (BackendError, ConfigError, InputError, LongInputWarning, MiniPegxError,
                             MiniPegxWarning)

GOLDENS = Path(__file__).parent / "goldens"


@pytest.fixture(scope="module")
def model():
    return minipegx.from_pretrained(GOLDENS / "tiny")


def good_config(**changes):
    return {**json.loads((GOLDENS / "tiny" / "config.json").read_text()), **changes}


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("changes, words", [
    (dict(d_model=18, encoder_attention_heads=4), "divisible by encoder_attention_heads"),
    (dict(block_size=5, stagger_local_blocks=True), "must be even"),
    (dict(activation_function="gelu_42"), "unknown activation_function"),
    (dict(model_type="pegasus"), "only runs 'pegasus_x'"),
    (dict(num_global_tokens=-1), "num_global_tokens"),   # 0 is valid: the no-global demo sibling
    (dict(encoder_layers="two"), "encoder_layers"),
    (dict(pad_token_id=10**6), "pad_token_id"),
])
def test_invalid_config_values_are_refused_with_the_field_named(changes, words):
    with pytest.raises(ConfigError, match=words):
        PegasusXConfig.from_dict(good_config(**changes))


def test_odd_block_size_is_fine_without_stagger():
    assert PegasusXConfig.from_dict(good_config(block_size=5, stagger_local_blocks=False)).block_size == 5


def test_config_json_that_is_not_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        PegasusXConfig.from_json_file(tmp_path)


def test_config_json_without_model_type_is_refused(tmp_path):
    d = good_config()
    del d["model_type"]
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="model_type"):
        PegasusXConfig.from_json_file(tmp_path)


def test_every_field_in_config_json_wins_over_the_class_default():
    cfg = PegasusXConfig.from_dict(good_config())
    assert (cfg.activation_function, cfg.num_global_tokens) == ("relu", 2)   # class says gelu, 32


# ------------------------------------------------------------------------------------------ model input
@pytest.mark.parametrize("ids, words", [
    ([[5, 6, 163]], "outside the vocabulary"),
    ([[5, -1, 7]], "outside the vocabulary"),
    (np.array([[5.0, 6.0]]), "integer token ids"),
    (np.zeros((1, 2, 3), dtype=np.int64), "shape \\[batch, length\\]"),
    (np.zeros((0, 4), dtype=np.int64), "batch of zero"),
    (np.zeros((2, 0), dtype=np.int64), "length zero"),
    ([[5, 6], [7]], "different lengths"),
    ("hello", "array or a list of token ids"),
])
def test_bad_input_ids_are_refused_before_any_math(model, ids, words):
    with pytest.raises(InputError, match=words):
        model(input_ids=ids, decoder_input_ids=[[0]])


def test_attention_mask_of_another_shape_is_refused(model):
    with pytest.raises(InputError, match="attention_mask has shape \\(1, 3\\) but its ids have shape \\(1, 4\\)"):
        model(input_ids=[[5, 6, 7, 8]], attention_mask=[[1, 1, 1]], decoder_input_ids=[[0]])


def test_attention_mask_values_other_than_0_and_1_are_refused(model):
    with pytest.raises(InputError, match="only 1 \\(keep\\) and 0"):
        model(input_ids=[[5, 6]], attention_mask=[[1, 2]], decoder_input_ids=[[0]])


def test_a_row_that_is_all_padding_warns(model):
    with pytest.warns(MiniPegxWarning, match="rows \\[1\\] are all padding"):
        out = model(input_ids=[[5, 6], [0, 0]], attention_mask=[[1, 1], [0, 0]], decoder_input_ids=[[0], [0]])
    assert np.isfinite(out.logits).all()


def test_inputs_longer_than_max_position_embeddings_warn_but_run(model):
    ids = np.full((1, model.config.max_position_embeddings + 3), 7)
    with pytest.warns(LongInputWarning, match="max_position_embeddings=128"):
        out = model(input_ids=ids, decoder_input_ids=[[0]])
    assert np.isfinite(out.logits).all()


def test_decoder_ids_outside_the_vocabulary_are_refused(model):
    with pytest.raises(InputError, match="decoder_input_ids holds id 999"):
        model(input_ids=[[5, 6]], decoder_input_ids=[[0, 999]])


def test_labels_outside_the_vocabulary_are_refused_but_minus_100_is_allowed(model):
    assert np.isfinite(float(model(input_ids=[[5, 6]], labels=[[7, -100]]).loss))
    with pytest.raises(InputError, match="labels"):
        model(input_ids=[[5, 6]], labels=[[7, 999]])


def test_missing_decoder_input_says_what_to_give(model):
    with pytest.raises(InputError, match="decoder_input_ids"):
        model(input_ids=[[5, 6]])


# ------------------------------------------------------------------------------------------ backend
@pytest.mark.skipif(cupy_available(), reason="this machine has CuPy and a GPU: the error cannot happen")
def test_cupy_backend_without_cupy_or_gpu_names_the_install_extra():
    with pytest.raises(BackendError, match="minipegx\\[gpu\\]|CUDA GPU"):
        get_backend("cupy")


def test_unknown_backend_and_dtype_are_refused():
    with pytest.raises(BackendError, match="unknown backend"):
        minipegx.from_pretrained(GOLDENS / "tiny", backend="jax")
    with pytest.raises(BackendError, match="unknown dtype"):
        minipegx.from_pretrained(GOLDENS / "tiny", dtype="float8")


def test_every_error_type_derives_from_minipegx_error():
    import minipegx.errors as E
    for name in E.__all__:
        cls = getattr(E, name)
        if isinstance(cls, type) and issubclass(cls, Warning):
            assert issubclass(cls, MiniPegxWarning), name
        elif isinstance(cls, type) and issubclass(cls, Exception):
            assert issubclass(cls, MiniPegxError), name


# ------------------------------------------------------------------------------------------ properties
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=hnp.arrays(dtype=np.int64, shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9),
                         elements=st.integers(-3, 200)),
       dtype=st.sampled_from([np.int64, np.int32, np.uint8, np.float32, np.bool_]), with_mask=st.booleans())
def test_any_array_as_input_either_runs_or_raises_a_minipegx_error(model, values, dtype, with_mask):
    ids = values.astype(dtype)
    mask = np.ones(ids.shape, dtype=np.int64) if with_mask else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MiniPegxWarning)
            out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=[[0]] * max(1, len(np.atleast_2d(ids))))
    except MiniPegxError:
        return
    assert np.isfinite(out.logits).all()


@settings(max_examples=60, deadline=None)
@given(d=st.fixed_dictionaries({}, optional={
    "d_model": st.integers(-2, 40), "encoder_attention_heads": st.integers(0, 5), "block_size": st.integers(-1, 9),
    "num_global_tokens": st.integers(-1, 4), "activation_function": st.sampled_from(["relu", "gelu", "nope"]),
    "stagger_local_blocks": st.booleans(), "vocab_size": st.integers(-1, 300), "model_type": st.just("pegasus_x"),
    "dropout": st.sampled_from([0.1, "x"]), "eos_token_id": st.sampled_from([1, [1, 2], -5, None])}))
def test_any_config_dict_either_validates_or_raises_config_error(d):
    try:
        cfg = PegasusXConfig.from_dict({"model_type": "pegasus_x", **d})
    except ConfigError:
        return
    assert cfg.d_model % cfg.encoder_attention_heads == 0
    assert not (cfg.stagger_local_blocks and cfg.block_size % 2)
