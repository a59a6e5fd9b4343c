"""The course kit: replacing a layer function reaches the model, check_function grades a student's function
(and names the cause of a planted bug), accepts what is equivalent, and refuses minipegx's own function.
The grader's behaviour on whole notebooks, hostile ones included, is in test_course_grader.py.

Tolerances: check_function's own (TINY_FP32 per function, LOGITS in place), from minipegx.tolerances.
"""

import math
from pathlib import Path

import numpy as np
import pytest

import minipegx
from minipegx import decoder, encoder, generate, layers, parity
from minipegx.course import NAMES, check_function
from minipegx.course.cases import REFERENCE
from minipegx.course.grade import RUBRIC, SOLUTIONS, STUDENT, strip_solutions, student_notebook
from minipegx.course.notebook import SKIP_TAG

EXERCISES = Path(__file__).resolve().parents[1] / "notebooks" / "exercises"
GOLDENS = Path(__file__).parent / "goldens"

# Every public function the model calls, by the module that defines it.
PUBLIC = {layers: ["linear", "layer_norm", "activation", "ffn", "embed_tokens", "sinusoidal_positions", "softmax",
                   "split_heads", "merge_heads", "additive_mask"],
          encoder: ["attend", "global_local_attention", "stagger", "encoder_layer"],
          decoder: ["attention", "self_attention", "cross_kv", "cross_attention", "decoder_layer", "causal_mask"]}


def bump(name, out):
    """A wrong result: no mask at all for the masks, else the first array of the output times 1.5 plus 0.25
    (a constant added to a mask would change nothing: softmax ignores a shift of a whole row)."""
    if isinstance(out, tuple):
        return (bump(name, out[0]),) + out[1:]
    return np.zeros_like(out) if name.endswith("mask") else out * 1.5 + 0.25


@pytest.fixture(scope="module")
def tiny():
    model = minipegx.from_pretrained(GOLDENS / "tiny")
    golden = dict(np.load(GOLDENS / "tiny_outputs.npz"))
    return model, golden


def logits(model, golden):
    return model(input_ids=golden["input_ids"], attention_mask=golden["attention_mask"],
                 labels=golden["labels"]).logits


@pytest.mark.parametrize("module, name", [(m, n) for m, names in PUBLIC.items() for n in names])
def test_a_replaced_function_changes_the_model_and_is_restored(tiny, module, name):
    model, golden = tiny
    original = getattr(module, name)
    before = logits(model, golden)

    def wrong(*args, **kwargs):
        return bump(name, original(*args, **kwargs))

    with parity.patched({f"{module.__name__}.{name}": wrong}):
        changed = logits(model, golden)
    assert np.abs(changed - before).max() > 1e-3                   # the replacement ran inside the model
    assert getattr(module, name) is original
    assert all(getattr(m, name, original) is original for m in (layers, encoder, decoder, generate))
    assert np.array_equal(logits(model, golden), before)


def test_a_function_named_by_an_importing_module_is_replaced_there_only(tiny):
    """{"minipegx.decoder.sinusoidal_positions": fn} changes the decoder's positions, not the encoder's,
    and fn may call minipegx.layers.sinusoidal_positions, which stays the original."""
    model, golden = tiny
    before = model(input_ids=golden["input_ids"], attention_mask=golden["attention_mask"], labels=golden["labels"])

    def shifted(start, length, dim, xp, dtype="float32"):
        return layers.sinusoidal_positions(start + 1, length, dim, xp, dtype)

    with parity.patched({"minipegx.decoder.sinusoidal_positions": shifted}):
        after = model(input_ids=golden["input_ids"], attention_mask=golden["attention_mask"], labels=golden["labels"])
        assert encoder.sinusoidal_positions is layers.sinusoidal_positions is not shifted
    assert np.array_equal(after.encoder_last_hidden_state, before.encoder_last_hidden_state)
    assert np.abs(after.logits - before.logits).max() > 1e-3


def test_a_replaced_precision_seam_runs_the_students_function(tiny):
    """layer_norm is wrapped by precision.float32_inside; the student's plain function is what runs."""
    model, golden = tiny
    calls, textbook = [], layers.layer_norm.textbook

    def student_layer_norm(x, p, eps=1e-5):
        calls.append(x.shape)
        return textbook(x, p, eps)

    with parity.patched({"minipegx.layers.layer_norm": student_layer_norm}):
        out = logits(model, golden)
    # 3 encoder layers x 3 (tokens' and globals' attention layer norms, one for the FFN that both share: the tiny
    # model's rows fit one piece), the final one; 2 decoder layers x 3, the final one
    assert len(calls) == 3 * 3 + 1 + 3 * 2 + 1
    assert np.abs(out - golden["logits"]).max() <= minipegx.tolerances.LOGITS.atol


@pytest.mark.parametrize("name", NAMES)
def test_minipegx_own_function_computes_what_passes(name):
    result = check_function(name, REFERENCE[name], with_transformers=False, require_own=False)
    assert result.passed, result.message
    assert result.message.startswith(f"{name}: passed")


def test_calling_other_minipegx_functions_is_allowed():
    """layer_norm sits inside the same precision seam as linear and softmax: calling those is not calling it."""
    def layer_norm(x, p, eps=1e-5):
        mean = layers.linear(x, np.full((1, x.shape[-1]), 1 / x.shape[-1], x.dtype))         # [..., 1]
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * p["weight"] + p["bias"]

    result = check_function("layer_norm", layer_norm, with_transformers=False)
    assert "minipegx's own" not in result.message, result.message


@pytest.mark.parametrize("name", ["layer_norm", "stagger", "beam_step", "layer_norm_backward", "softmax_backward",
                                  "global_local_attention_backward"])
def test_minipegx_own_function_or_a_wrapper_of_it_is_not_the_students(name):
    def wrapper(*args, **kwargs):
        return REFERENCE[name](*args, **kwargs)

    for fn in (REFERENCE[name], wrapper):
        result = check_function(name, fn, with_transformers=False)
        assert not result.passed and "minipegx's own" in result.message, result.message


def test_without_torch_the_check_needs_no_reference(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)          # as on a student's machine: import torch fails
    monkeypatch.setitem(sys.modules, "transformers", None)
    result = check_function("stagger", REFERENCE["stagger"], require_own=False)
    assert result.passed and "transformers" not in result.message, result.message


def test_the_transformers_check_runs_when_asked():
    pytest.importorskip("transformers")
    result = check_function("layer_norm", REFERENCE["layer_norm"], with_transformers=True, require_own=False)
    assert result.passed and "with transformers'" in result.message, result.message


# ------------------------------------------------------------------------------------------ planted bugs
def unbiased_layer_norm(x, p, eps=1e-5):
    y = x - x.mean(-1, keepdims=True)
    return y / np.sqrt(y.var(-1, ddof=1, keepdims=True) + eps) * p["weight"] + p["bias"]


def tanh_gelu_ffn(x, p, act):
    return layers.ffn(x, p, "gelu_new" if act == "gelu" else act)


def softmax_without_max(s):
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def sinusoid_over_half(start, length, dim, xp, dtype="float32"):
    freq = np.exp(-math.log(10000.0) * np.arange(dim // 2) / (dim // 2))
    angle = np.arange(start, start + length)[:, None] * freq
    return np.concatenate([np.sin(angle), np.cos(angle)], -1).astype(dtype)


def stagger_unmasked(x, mask, block_size):
    h = block_size // 2
    return np.pad(x, ((0, 0), (h, h), (0, 0))), np.pad(mask, ((0, 0), (h, h)))


def attention_with_row_0_mask(x, g, mask, p, num_heads, block_size, output_attentions=True):
    return REFERENCE["global_local_attention"](x, g, np.repeat(mask[:1], len(mask), 0), p, num_heads, block_size,
                                               output_attentions)


def encoder_layer_never_staggered(x, g, mask, p, config, staggered, trace=None, name="", output_attentions=True):
    return REFERENCE["encoder_layer"](x, g, mask, p, config, False, trace, name, output_attentions)


def self_attention_ignoring_the_cache(x, p, num_heads, mask, cache=None):
    return REFERENCE["self_attention"](x, p, num_heads, mask[..., -x.shape[1]:], None)


def cross_kv_swapped(encoder_hidden, p, num_heads):
    k, v = REFERENCE["cross_kv"](encoder_hidden, p, num_heads)
    return v, k


def cross_attention_first_input_only(x, kv, p, num_heads, mask):
    k, v = kv
    return REFERENCE["cross_attention"](x, (k[:1].repeat(len(k), 0), v[:1].repeat(len(v), 0)), p, num_heads, mask)


def beam_step_top_w(state, log_probs, opts, rng=None):
    new, (tokens, parents, scores, kept, finished) = REFERENCE["beam_step"](state, log_probs, opts, rng)
    W = state.running.shape[1]
    return new, (tokens[:, :W], parents[:, :W], scores[:, :W], kept[:, :W], finished[:, :W])


PLANTED = [
    ("layer_norm", unbiased_layer_norm, "the unbiased variance"),
    ("ffn", tanh_gelu_ffn, "the tanh approximation of GELU"),
    ("softmax", softmax_without_max, "NaN or inf"),
    ("sinusoidal_positions", sinusoid_over_half, "M/2 - 1"),
    ("stagger", stagger_unmasked, "the padding left unmasked"),
    ("global_local_attention", attention_with_row_0_mask, "only batch row 1, the padded row, differs"),
    ("encoder_layer", encoder_layer_never_staggered, "blocks not shifted"),
    ("self_attention", self_attention_ignoring_the_cache, "a cache (k, v) holds the past steps"),
    ("cross_kv", cross_kv_swapped, "k_proj and v_proj"),
    ("cross_attention", cross_attention_first_input_only, "rows b*R .. b*R+R-1 are input b's beams"),
    ("beam_step", beam_step_top_w, "the 2W best continuations"),
]


@pytest.mark.parametrize("name, fn, cause", PLANTED, ids=[p[0] for p in PLANTED])
def test_a_planted_bug_fails_with_its_function_and_cause_named(name, fn, cause):
    result = check_function(name, fn, with_transformers=False, require_own=False)   # built on minipegx's own
    assert not result.passed
    assert result.message.startswith(f"{name}: FAILED on its own, case:"), result.message
    assert cause in result.message, result.message


def test_a_difference_names_the_first_index_and_the_tolerance():
    message = check_function("layer_norm", unbiased_layer_norm, with_transformers=False).message
    assert "output [2, 10, 16] first differs at [b=0, t=0, m=0]" in message
    assert "320 of 320 entries differ" in message and "tolerance TINY_FP32: 1e-05" in message


def test_an_exception_in_the_students_code_shows_their_line():
    def layer_norm(x, p, eps=1e-5):
        mean = x.mean(axis=3)                     # the student's bug: no axis 3
        return mean

    result = check_function("layer_norm", layer_norm, with_transformers=False)
    assert not result.passed
    assert "it raised AxisError" in result.message
    assert "in layer_norm:\n    mean = x.mean(axis=3)" in result.message
    assert __file__ in result.message


def test_a_function_right_on_its_own_but_wrong_in_the_model_fails_in_place():
    def layer_norm(x, p, eps=1e-5):               # wrong only at the demo model's width, M = 128
        y = REFERENCE["layer_norm"](x, p, eps)
        return y * 1.01 if x.shape[-1] == 128 else y

    result = check_function("layer_norm", layer_norm, with_transformers=False, require_own=False)
    assert not result.passed
    assert result.message.startswith("layer_norm: FAILED in place (compared with minipegx's own functions)")
    assert "logits [2, 3, 784] first differs" in result.message


def test_not_a_function_fails_without_raising():
    assert not check_function("ffn", None).passed


def test_an_unknown_name_is_the_callers_error():
    with pytest.raises(minipegx.InputError, match="check_function knows layer_norm"):
        check_function("layer_nrom", unbiased_layer_norm)


# ------------------------------------------------------------------------------------- notebooks, grader
def test_the_student_version_replaces_each_solution_block_by_a_scaffold():
    student = strip_solutions((EXERCISES / SOLUTIONS).read_text(encoding="utf-8"))
    assert "### BEGIN SOLUTION" not in student and "### END SOLUTION" not in student
    assert student.count("    # YOUR CODE HERE\n    raise NotImplementedError\n") == len(RUBRIC)


def cells(notebook):
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in notebook.cells]


@pytest.mark.parametrize("ipynb", [Path(SOLUTIONS).with_suffix(".ipynb").name, STUDENT])
def test_each_exercise_ipynb_is_built_from_the_solutions_source_without_outputs(ipynb):
    jupytext = pytest.importorskip("jupytext")
    import nbformat

    source = (EXERCISES / SOLUTIONS).read_text(encoding="utf-8")
    want = student_notebook(source) if ipynb == STUDENT else jupytext.reads(source, fmt="py:percent")
    nb = nbformat.read(EXERCISES / ipynb, as_version=4)
    assert cells(nb) == cells(want), "run: python -m minipegx.course build notebooks/exercises"
    assert not any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    assert sum(SKIP_TAG in tags for _, _, tags in cells(nb)) == len(RUBRIC)   # the check cells


def test_each_exercise_heading_states_its_rubric_points():
    text = (EXERCISES / SOLUTIONS).read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("# ## Exercise")]
    stated = [int(n) for h in headings for n in h.split("(")[1].split(" point")[0].split(" + ")]
    assert stated == list(RUBRIC.values())
    assert [line.split("check_function(")[1].split(",")[0].strip('"') for line in text.splitlines()
            if line.startswith("check_function(")] == list(RUBRIC)


def test_the_build_command_rewrites_the_committed_notebooks_byte_for_byte(tmp_path, capsys):
    pytest.importorskip("jupytext")
    from minipegx.course.grade import main

    (tmp_path / SOLUTIONS).write_bytes((EXERCISES / SOLUTIONS).read_bytes())
    assert main(["build", str(tmp_path)]) == 0
    for ipynb in (Path(SOLUTIONS).with_suffix(".ipynb").name, STUDENT):
        assert (tmp_path / ipynb).read_bytes() == (EXERCISES / ipynb).read_bytes()
    assert "wrote" in capsys.readouterr().out


def test_grading_a_folder_without_notebooks_says_so(tmp_path):
    from minipegx.course.grade import main

    (tmp_path / "submissions").mkdir()
    with pytest.raises(minipegx.InputError, match="no .ipynb submissions under"):
        main(["grade", str(tmp_path / "submissions"), "--out", str(tmp_path / "grades.csv")])


def test_a_beam_step_wrong_only_at_the_models_vocabulary_fails_in_place():
    def beam_step(state, log_probs, opts, rng=None):      # right for V = 12 (its own case), not for V = 784
        if log_probs.shape[-1] > 100:
            log_probs = log_probs[:, ::-1].copy()
        return REFERENCE["beam_step"](state, log_probs, opts, rng)

    result = check_function("beam_step", beam_step, with_transformers=False, require_own=False)
    assert result.message.startswith("beam_step: FAILED in place"), result.message
    assert "beam search ids [2, " in result.message


# --------------------------------------------------- planted bugs written as a student writes them
def solution_with(replacements):
    """The exercise functions of the SOLUTIONS source, each (old, new) of `replacements` applied (student bugs)."""
    source = (EXERCISES / SOLUTIONS).read_text(encoding="utf-8")
    for old, new in replacements:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    namespace = {}
    exec(compile("\n".join(line for line in source.splitlines() if not line.startswith("check_function(")),
                 "student.py", "exec"), namespace)
    return namespace


def solution_functions(old=None, new=None):
    """The exercise functions of the SOLUTIONS source, with `old` replaced by `new` (one student bug)."""
    return solution_with([] if old is None else [(old, new)])


NAIVE_SOFTMAX = "(lambda s: np.exp(s) / np.exp(s).sum(-1, keepdims=True))("
QKV = ('''    q = L.split_heads(L.linear(both, p["q_proj"]["weight"]), H) * D ** -0.5       # [B, H, G+P, D]
    k = L.split_heads(L.linear(both, p["k_proj"]["weight"]), H)                   # [B, H, G+P, D]
    v = L.split_heads(L.linear(both, p["v_proj"]["weight"]), H)                   # [B, H, G+P, D]''')
LOCAL = "lprobs = L.softmax(qb @ kb.swapaxes(-1, -2) + lmask[:, None, :, None, :])"
STUDENT_BUGS = {
    "unscaled queries": ("global_local_attention", "H) * D ** -0.5", "H)", "queries not scaled by D^-1/2"),
    "mask on the query axis": ("global_local_attention", LOCAL,
                               LOCAL.replace("lmask[:, None, :, None, :]", "lmask[:, None, :, None, G:].swapaxes(-1, -2)"),
                               "the mask applied on the query axis"),
    "global keys left out": ("global_local_attention", LOCAL,
                             "lprobs = L.softmax(qb @ kb[..., G:, :].swapaxes(-1, -2) + lmask[:, None, :, None, G:])\n"
                             "    vb = vb[..., G:, :]", "the global keys left out"),
    "heads split by a reshape": ("global_local_attention", QKV, QKV.replace("L.split_heads(", "").replace(
        "), H)", ").reshape(B, H, G + P, D)"), "the heads split by a plain reshape"),
    "softmax without max subtraction": ("global_local_attention", "lprobs = L.softmax(", "lprobs = " + NAIVE_SOFTMAX,
                                        "unless each row's max is subtracted"),
    "cache one step short": ("self_attention", "return out, probs, (k, v)",
                             "return out, probs, (k[:, :, :-1], v[:, :, :-1])", "the returned cache is one step short"),
    "cache without the new step": ("self_attention", "return out, probs, (k, v)",
                                   "return out, probs, cache if cache is not None else (k[:, :, :0], v[:, :, :0])",
                                   "the returned cache holds only the past steps"),
    "cross_kv heads by a reshape": ("cross_kv", "    return (L.split_heads(", "    B, T, M = encoder_hidden.shape\n"
                                    "    return tuple(L.linear(encoder_hidden, p[n][\"weight\"]).reshape(B, num_heads, T, -1)"
                                    " for n in (\"k_proj\", \"v_proj\"))\n    return (L.split_heads(",
                                    "the heads split by a plain reshape"),
    "length penalty as a plain average": ("beam_step", "return finish_step(state, opts,",
                                          "opts = Gen.GenerationOptions(**{**vars(opts), \"length_penalty\": 1.0})\n"
                                          "    return finish_step(state, opts,", "the length penalty applied as a plain average"),
}


@pytest.mark.parametrize("bug", STUDENT_BUGS)
def test_a_bug_students_make_is_caught_with_a_hint_in_their_terms(bug):
    name, old, new, cause = STUDENT_BUGS[bug]
    result = check_function(name, solution_functions(old, new)[name], with_transformers=False)
    assert result.message.startswith(f"{name}: FAILED on its own, case:"), result.message
    assert cause in result.message, result.message


def test_the_solutions_pass_every_check():
    functions = solution_functions()
    for name in RUBRIC:
        result = check_function(name, functions[name], with_transformers=False)
        assert result.passed, result.message


STAGGER = """
def stagger(x, mask, block_size):
    h = block_size // 2
    return np.pad(x, ((0, 0), (h, h), (0, 0)), {padding}), np.pad(mask, ((0, 0), (h, h)), constant_values={masked})
"""


def own_stagger(padding, masked):
    namespace = {"np": np}
    exec(STAGGER.format(padding=padding, masked=masked), namespace)
    return namespace["stagger"]


@pytest.mark.parametrize("padding", ['mode="edge"', "constant_values=7.0"])
@pytest.mark.parametrize("masked", ["-1e9", "np.finfo(mask.dtype).min"])
def test_stagger_padding_may_hold_anything_the_mask_hides(padding, masked):
    """The model never reads a masked position: edge values or -1e9 there change none of its outputs."""
    result = check_function("stagger", own_stagger(padding, masked), with_transformers=False)
    assert result.passed, result.message


def test_a_padding_mask_that_does_not_hide_fails_and_says_what_masks():
    result = check_function("stagger", own_stagger('mode="edge"', "-1e3"), with_transformers=False)
    assert not result.passed and "mask [2, 16] first differs" in result.message, result.message
    assert "at most -1e+09" in result.message


def test_a_beam_message_names_its_axes():
    name, old, new, _ = STUDENT_BUGS["length penalty as a plain average"]
    message = check_function(name, solution_functions(old, new)[name], with_transformers=False).message
    assert "first differs at [b=" in message and "b input, w beam" in message, message


def test_a_hint_never_says_times_one():
    def layer_norm(x, p, eps=1e-5):                                     # off by a relative 1e-4: not a factor
        return REFERENCE["layer_norm"](x, p, eps) * np.float32(1.0001)

    message = check_function("layer_norm", layer_norm, with_transformers=False, require_own=False).message
    assert "times 1:" not in message and "times 1 " not in message, message


# ------------------------------------------------------------------------------------- backward exercises
MEANS = "dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))"
GLOBAL_SUMS = ("dkb[:, :, :, :G].sum(axis=2)", "dvb[:, :, :, :G].sum(axis=2)")
GLOBAL_QUERIES = ("    dv = dv + cache.global_probs.swapaxes(-1, -2) @ dglobal ",
                  "    dk = dk + ds.swapaxes(-1, -2) @ q[:, :, :G] ")
LOCAL_DS = "ds = L.softmax_backward(dlocal @ vb.swapaxes(-1, -2), cache.local_probs)"
ATT = "global_local_attention_backward"
BACKWARD_BUGS = {       # each: the function, [(old, new) in the SOLUTIONS source], what the hint must name
    "layer norm: the mean terms forgotten": ("layer_norm_backward", [(MEANS, "dx = rstd * g")],
                                             "the two mean terms left out"),
    "layer norm: mean(g) forgotten": ("layer_norm_backward", [(MEANS, MEANS.replace(
        "g - g.mean(axis=-1, keepdims=True) - ", "g - "))], "the mean of the gradient, mean(g), left out"),
    "layer norm: the unbiased variance": (
        "layer_norm_backward", [(MEANS, "M = dy.shape[-1]\n    dx = rstd * (g - g.sum(-1, keepdims=True) / (M - 1)"
                                        " - xhat * (g * xhat).sum(-1, keepdims=True) / (M - 1))")],
        "the means taken over M - 1"),
    "layer norm: gamma dropped": ("layer_norm_backward", [("g = dy * w   ", "g = dy       ")],
                                  "the weight (gamma) dropped"),
    "softmax: the sum term forgotten": ("softmax_backward", [("return probs * (dp - (dp * probs).sum(axis=-1, "
                                                              "keepdims=True))", "return probs * dp")],
                                        "the sum term left out"),
    "softmax: the wrong axis": ("softmax_backward", [("(dp * probs).sum(axis=-1,", "(dp * probs).sum(axis=-2,")],
                                "the sum over the wrong axis"),
    "attention: global keys not summed over blocks": (
        ATT, [(old, old.replace(".sum(axis=2)", ".mean(axis=2)")) for old in GLOBAL_SUMS],
        "the global keys' and values' gradient averaged over the blocks"),
    "attention: global keys from one block": (
        ATT, [(old, old.replace("[:, :, :, :G].sum(axis=2)", "[:, :, 0, :G]")) for old in GLOBAL_SUMS],
        "the global keys' and values' gradient from one block only"),
    "attention: the global queries' share forgotten": (
        ATT, [(old, "    pass  # " + old.strip()) for old in GLOBAL_QUERIES], "the global queries' share left out"),
    "attention: D^-1/2 dropped": (ATT, [('("q_proj", dq * D ** -0.5,', '("q_proj", dq,')],
                                  "the queries' D^-1/2 factor dropped"),
    "attention: the mask applied to the queries' gradient": (
        ATT, [(LOCAL_DS, LOCAL_DS + "\n    ds = ds * (cache.global_probs[:, :1, :1, G:] > 0).reshape(B, 1, N, K, 1)")],
        "the mask applied to the gradient on the query axis"),
    "attention: the stagger undone here": (ATT, [("return dboth[:, G:], dboth[:, :G], grads",
                                                  "return dboth[:, G + K // 2:-(K // 2)], dboth[:, :G], grads")],
                                           "the stagger's padding removed here"),
}


@pytest.mark.parametrize("bug", BACKWARD_BUGS)
def test_a_backward_bug_students_make_is_caught_with_a_hint_in_their_terms(bug):
    name, replacements, cause = BACKWARD_BUGS[bug]
    result = check_function(name, solution_with(replacements)[name], with_transformers=False)
    assert result.message.startswith(f"{name}: FAILED on its own, case:"), result.message
    assert cause in result.message, result.message


def test_a_backward_is_checked_in_place_in_a_training_step():
    """Right on the cases' shapes, wrong on the demo model's width: only the training step can tell."""
    def softmax_backward(dp, probs):
        ds = REFERENCE["softmax_backward"](dp.copy(), probs)
        return ds * 1.01 if probs.shape[-1] > 100 else ds

    result = check_function("softmax_backward", softmax_backward, with_transformers=False, require_own=False)
    assert result.message.startswith("softmax_backward: FAILED in place"), result.message
    assert "the demo model's gradients change" in result.message and "d model." in result.message


def test_the_backward_checks_need_no_torch(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    result = check_function("layer_norm_backward", solution_functions()["layer_norm_backward"])
    assert result.passed and "parameter gradients equal minipegx's" in result.message, result.message
