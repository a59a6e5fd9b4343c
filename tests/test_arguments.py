"""Every public entry point (the model call, generate, summarize, pipeline.load) checks its arguments before
any work: types, ranges, NaN and inf, shapes against the config and the other arguments. What is wrong
raises a MiniPegxError subclass naming the argument; nothing escapes as a raw exception, and nothing is
silently taken to mean something else (temperature=inf, length_penalty=NaN, max_input_length=0).
Property tests draw values of every kind for every option."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minipegx
from minipegx import pipeline
from minipegx.errors import GenerationConfigError, InputError, MiniPegxError
from minipegx.generation import check_options, generate, resolve_options
from minipegx.generation.options import KNOWN_OPTIONS, MAX_BEAMS, MAX_LENGTH
from minipegx.tolerances import LOGITS

GOLDENS = Path(__file__).parent / "goldens"
IDS = np.array([[5, 6, 7, 8, 9, 10, 11, 12, 1], [20, 21, 22, 23, 1, 0, 0, 0, 0]])
MASK = (np.arange(9)[None] < np.array([[9], [5]])).astype(np.int64)
FLOAT_OPTIONS = ("length_penalty", "temperature", "top_p", "repetition_penalty")
COUNT_OPTIONS = ("max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams",
                 "num_return_sequences", "top_k", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size")
FLAG_OPTIONS = ("do_sample", "output_scores", "return_dict_in_generate", "static_cache", "use_cache")
ID_OPTIONS = ("pad_token_id", "decoder_start_token_id", "bos_token_id", "forced_bos_token_id")
MISSING = GOLDENS / "no-such-checkpoint"   # loading it would fail: errors raised first prove the order


@pytest.fixture(scope="module")
def model():
    return minipegx.from_pretrained(GOLDENS / "tiny")


# ------------------------------------------------------------------------------- generation options
@pytest.mark.parametrize("name", FLOAT_OPTIONS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_float_options_are_refused_naming_the_option(model, name, value):
    with pytest.raises(GenerationConfigError, match=name):
        generate(model, IDS, MASK, max_new_tokens=3, **{name: value})


@pytest.mark.parametrize("name", COUNT_OPTIONS)
@pytest.mark.parametrize("value", [True, 2.0, "3", -1, [2]])
def test_counts_must_be_non_negative_integers_not_bools_floats_or_strings(model, name, value):
    with pytest.raises(GenerationConfigError, match=name):
        resolve_options(model, {name: value})


@pytest.mark.parametrize("name", FLAG_OPTIONS)
@pytest.mark.parametrize("value", ["false", 0, 1, "yes"])
def test_flags_must_be_bools_so_the_string_false_is_not_true(model, name, value):
    with pytest.raises(GenerationConfigError, match=name):
        resolve_options(model, {name: value})


@pytest.mark.parametrize("name", ID_OPTIONS)
@pytest.mark.parametrize("value", [[], [0], -1, 163, 1.0, True, "0"])
def test_single_token_ids_must_be_one_id_in_the_vocabulary(model, name, value):
    with pytest.raises(GenerationConfigError, match=name):
        resolve_options(model, {name: value})


def test_temperature_inf_cannot_lift_the_eos_ban_of_min_new_tokens(model):
    """scores / inf turns the -inf ban of EOS into NaN; the rule refuses inf before any step runs."""
    with pytest.raises(GenerationConfigError, match="temperature"):
        generate(model, IDS, MASK, do_sample=True, temperature=math.inf, min_new_tokens=4, max_new_tokens=6, seed=0)


def test_length_penalty_nan_or_overflowing_float32_is_refused(model):
    with pytest.raises(GenerationConfigError, match="length_penalty"):
        generate(model, IDS, MASK, num_beams=2, length_penalty=math.nan, max_new_tokens=4)
    # 9 ** 50 = 5e47 is past float32's 3.4e38: every finished score would become -0.0.
    with pytest.raises(GenerationConfigError, match="length_penalty.*overflow"):
        generate(model, IDS, MASK, num_beams=2, length_penalty=50.0, max_new_tokens=8)


@pytest.mark.parametrize("seed", [-1, 2 ** 64, True, 1.5, "7"])
def test_seed_is_a_non_negative_integer_below_2_to_64_or_a_generator(model, seed):
    with pytest.raises(GenerationConfigError, match="seed"):
        generate(model, IDS, MASK, do_sample=True, seed=seed, max_new_tokens=3)


@pytest.mark.parametrize("opts, bound", [(dict(num_beams=10 ** 9), MAX_BEAMS),
                                         (dict(num_return_sequences=10 ** 9, do_sample=True), MAX_BEAMS),
                                         (dict(max_new_tokens=10 ** 12), MAX_LENGTH - 1),
                                         (dict(max_length=10 ** 12), MAX_LENGTH)])
def test_huge_sizes_are_refused_with_the_stated_limit_before_anything_is_allocated(model, opts, bound):
    with pytest.raises(GenerationConfigError, match=f"{bound}"):
        generate(model, IDS, MASK, **opts)


def test_an_encoder_ngram_size_beyond_the_input_bans_nothing_and_returns_at_once(model):
    """n > T: the input has no n-gram, so the processor is a no-op (it built 10**12 slices before)."""
    plain = generate(model, IDS, MASK, max_new_tokens=6)
    np.testing.assert_array_equal(generate(model, IDS, MASK, max_new_tokens=6, encoder_no_repeat_ngram_size=10 ** 12),
                                  plain)


def test_a_bad_value_in_generation_config_json_is_named_with_the_file(model):
    saved = model.generation_config
    model.generation_config = {**saved, "length_penalty": math.nan}
    try:
        with pytest.raises(GenerationConfigError, match=r"length_penalty \(from generation_config.json\)"):
            resolve_options(model, {})
    finally:
        model.generation_config = saved


def test_a_generation_config_that_is_not_a_dict_is_refused(model):
    saved = model.generation_config
    model.generation_config = [1, 2]
    try:
        with pytest.raises(GenerationConfigError, match="generation_config"):
            resolve_options(model, {})
    finally:
        model.generation_config = saved


def test_an_empty_eos_list_still_means_no_eos(model):
    """eos_token_id=[] is the one way to turn EOS off from the call (None means 'the default')."""
    assert resolve_options(model, dict(eos_token_id=[])).eos_token_ids is None


ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                      st.text(max_size=5), st.lists(st.integers(-3, 200), max_size=3), st.just(object()),
                      st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


@pytest.mark.filterwarnings("ignore:max_length=.*allows:minipegx.errors.MiniPegxWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(KNOWN_OPTIONS), value=ANY_VALUE)
def test_any_value_of_any_option_resolves_or_raises_generation_config_error(model, name, value):
    try:
        opts = resolve_options(model, {name: value})
    except GenerationConfigError:
        return
    for f in ("length_penalty", "temperature", "top_p", "repetition_penalty"):
        assert math.isfinite(getattr(opts, f))
    assert 2 <= opts.max_length <= MAX_LENGTH and 1 <= opts.num_beams <= MAX_BEAMS


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.dictionaries(st.sampled_from(("num_beams", "length_penalty", "no_repeat_ngram_size",
                                                 "repetition_penalty", "min_new_tokens", "do_sample", "top_k",
                                                 "top_p", "temperature", "seed")),
                               ANY_VALUE, max_size=4))
def test_generate_with_any_options_returns_ids_or_raises_a_minipegx_error(model, options):
    try:
        out = generate(model, IDS, MASK, max_new_tokens=4, **options)
    except MiniPegxError:
        return
    assert out.shape[0] % IDS.shape[0] == 0 and 2 <= out.shape[1] <= 5


def test_check_options_needs_no_model_and_applies_the_same_rules():
    assert check_options(dict(num_beams=4, length_penalty=0.8)) == dict(num_beams=4, length_penalty=0.8)
    with pytest.raises(GenerationConfigError, match="num_beams"):
        check_options(dict(num_beams=0))


# ------------------------------------------------------------------------------- summarize and load
@pytest.mark.parametrize("texts", [None, 5, 3.5, [1, "a"], ["a", None], {"a": 1}, []])
def test_summarize_refuses_what_is_not_text_before_loading_a_model(texts):
    with pytest.raises(InputError, match="text"):
        minipegx.summarize(texts, model=MISSING)


@pytest.mark.parametrize("kw, name", [(dict(max_input_length=0), "max_input_length"),
                                      (dict(max_input_length=-5), "max_input_length"),
                                      (dict(max_input_length=True), "max_input_length"),
                                      (dict(batch_size=True), "batch_size"),
                                      (dict(batch_size=0), "batch_size")])
def test_summarize_sizes_are_positive_integers_and_zero_is_not_no_limit(kw, name):
    with pytest.raises(InputError, match=name):
        minipegx.summarize("a text", model=MISSING, **kw)


@pytest.mark.parametrize("kw, name", [(dict(length_penalty=math.nan), "length_penalty"),
                                      (dict(num_beams=-2), "num_beams"), (dict(progress=3), "progress"),
                                      (dict(nmu_beams=2), "num_beams")])
def test_summarize_checks_generation_options_before_loading_a_model(kw, name):
    with pytest.raises(GenerationConfigError, match=name):
        minipegx.summarize("a text", model=MISSING, **kw)


@pytest.mark.parametrize("kw, name", [(dict(model=5), "model"), (dict(tokenizer=3.0), "tokenizer"),
                                      (dict(backend=None), "backend"), (dict(dtype=16), "dtype"),
                                      (dict(quantize=8), "quantize")])
def test_load_refuses_wrong_argument_types_naming_the_argument(kw, name):
    with pytest.raises(InputError, match=name):
        pipeline.load(**kw)


@pytest.mark.parametrize("path", [5, ["a"], b"bytes"])
def test_from_pretrained_refuses_a_path_that_is_not_a_path(path):
    with pytest.raises(InputError, match="path"):
        minipegx.from_pretrained(path)


def test_summarize_still_summarizes_a_text_and_a_list(model):
    tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path())
    demo = minipegx.from_pretrained(None)
    one = minipegx.summarize("the meeting is on monday.", model=demo, tokenizer=tok, max_new_tokens=5)
    assert isinstance(one, str)
    assert minipegx.summarize(("the meeting is on monday.",), model=demo, tokenizer=tok, max_new_tokens=5) == [one]


# ------------------------------------------------------------------------------- the model call
def cached_call(model):
    out = model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=[[0], [0]], use_cache=True)
    return out.past_key_values, out.encoder_last_hidden_state


def test_a_past_key_values_call_still_equals_the_full_pass(model):
    """minipegx.tolerances.LOGITS: the cached and the full pass sum the same fp32 values in other orders."""
    pkv, _ = cached_call(model)
    step = model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=[[3], [4]], past_key_values=pkv)
    full = model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=[[0, 3], [0, 4]])
    assert LOGITS.holds(step.logits[:, 0], full.logits[:, 1])


@pytest.mark.parametrize("damage, words", [
    (lambda p: p[:-1], "tuple of"),
    (lambda p: [(k, v) for k, v, *_ in p], r"past_key_values\[0\] must be"),
    (lambda p: [(k[:1], v[:1], ck, cv) for k, v, ck, cv in p], r"past_key_values\[0\]\[0\].*shape"),
    (lambda p: [(k, v, ck[:, :, :3], cv[:, :, :3]) for k, v, ck, cv in p], r"\[0\]\[2\].*cross-attention"),
    (lambda p: [(k.swapaxes(1, 2), v, ck, cv) for k, v, ck, cv in p], "shape"),
    (lambda p: [(k.astype(np.int64), v, ck, cv) for k, v, ck, cv in p], "floating"),
    (lambda p: [(k * np.nan, v, ck, cv) for k, v, ck, cv in p], "NaN or inf"),
    (lambda p: "cache", "tuple of"),
])
def test_wrongly_shaped_past_key_values_are_refused_naming_the_entry(model, damage, words):
    pkv, _ = cached_call(model)
    with pytest.raises(InputError, match=words):
        model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=[[3], [4]], past_key_values=damage(pkv))


@pytest.mark.parametrize("damage, words", [
    (lambda h: h[..., :-1], "d_model"),
    (lambda h: h[0], "shape"),
    (lambda h: h.astype(np.int32), "floating"),
    (lambda h: np.where(np.arange(h.shape[1])[None, :, None] == 2, np.inf, h), "NaN or inf"),
    (lambda h: (h, None, None, None), "tuple"),
    (lambda h: "states", "array"),
])
def test_wrong_encoder_outputs_are_refused(model, damage, words):
    _, h = cached_call(model)
    with pytest.raises(InputError, match=words):
        model(encoder_outputs=damage(h), attention_mask=MASK, decoder_input_ids=[[0], [0]])


def test_encoder_outputs_with_the_wrong_batch_for_the_mask_are_refused(model):
    _, h = cached_call(model)
    with pytest.raises(InputError, match="attention_mask"):
        model(encoder_outputs=h[:1], attention_mask=MASK, decoder_input_ids=[[0]])


@pytest.mark.parametrize("kw, words", [
    (dict(decoder_inputs_embeds=np.zeros((2, 1, 5), np.float32)), "decoder_inputs_embeds"),
    (dict(decoder_input_ids=[[0, 4]], labels=[[4]]), "labels"),
    (dict(decoder_input_ids=[[0]], decoder_inputs_embeds=np.zeros((1, 1, 16), np.float32)), "exactly one of decoder_input_ids"),
    (dict(decoder_input_ids=[[0]], output_attentions="yes"), "output_attentions"),
    (dict(decoder_input_ids=[[0]], use_cache=1), "use_cache"),
    (dict(decoder_input_ids=[[0]], trace=[]), "trace"),
    (dict(decoder_input_ids=[[0]], decoder_input_idz=[[0]]), "decoder_input_ids"),
])
def test_other_model_arguments_are_checked_before_the_encoder_runs(model, kw, words):
    with pytest.raises(InputError, match=words):
        model(input_ids=IDS[:1], **kw)


def test_the_model_call_takes_forward_arguments_by_position_as_transformers(model):
    a = model(IDS, MASK, [[0], [0]]).logits
    np.testing.assert_array_equal(a, model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=[[0], [0]]).logits)


def test_an_argument_given_by_position_and_by_name_is_refused(model):
    with pytest.raises(InputError, match="input_ids given both"):
        model(IDS, input_ids=IDS, decoder_input_ids=[[0], [0]])


@pytest.mark.parametrize("not_a_model", [None, "pegasus-x-base", 3])
def test_generate_needs_a_loaded_model(not_a_model):
    with pytest.raises(InputError, match="PegasusX"):
        generate(not_a_model, IDS)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layer=st.integers(0, 1), entry=st.integers(0, 3), axis=st.integers(0, 3), size=st.integers(0, 12),
       rank=st.sampled_from([3, 4, 5]))
def test_any_reshaped_past_key_values_entry_runs_or_raises_input_error(model, layer, entry, axis, size, rank):
    """One entry of a real cache, resized along one axis or given another rank: it is used only if
    its shape is exactly what the layer needs, and then the result is the unchanged call's."""
    pkv, _ = cached_call(model)
    pkv = [list(p) for p in pkv]
    a = pkv[layer][entry]
    shape = list(a.shape)
    shape[axis] = size
    shape = (shape + [1])[:rank] if rank > 4 else shape[:rank]
    pkv[layer][entry] = np.resize(a, shape).astype(a.dtype)
    kw = dict(input_ids=IDS, attention_mask=MASK, decoder_input_ids=[[3], [4]])
    try:
        out = model(**kw, past_key_values=pkv)
    except InputError:
        return
    assert tuple(shape) == a.shape
    # A contiguous copy of the entry may take another BLAS path: equal to the LOGITS rung, not bit for bit.
    assert LOGITS.holds(out.logits, model(**kw, past_key_values=cached_call(model)[0]).logits)
