"""The bundled demo models (minipegx/data/demo, demo_long and demo_long's ablation siblings
demo_long_nostagger and demo_long_noglobal): minipegx and transformers read each the same way and produce
the same summaries from it, token for token.

Tolerance: none. Summaries are compared as token ids (and strings) for equality, with the generation
settings the checkpoint ships (beam search, 4 beams) and greedily; the one exception is a search with a
decision within the rounding noise the tolerance ladder allows, where two libraries may break a near-tie
differently (tests/ties.py; none of the documents here has one on the machines this was run on). The documents are the bundled example
document and documents from the training task's generator (tools/demo_data.py) with seeds that neither
training nor the held-out evaluation uses.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

import minipegx
from minipegx.model import DEMO_VARIANTS, demo_model_path
from minipegx.pipeline import load

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ties import assert_same_unless_tied
from tools import demo_data

DOCS_SEED = 31337          # neither training's Random(1234 * 1000003 + step) nor eval's 987654321


# Each model's task: the first (short) demo model learned make_named_example (subjects named in the key
# sentence), the long models (the default and its siblings) make_example (subjects named by a role
# introduced far earlier).
TASKS = {"short": demo_data.make_named_example, "long": demo_data.make_example,
         "long_nostagger": demo_data.make_example, "long_noglobal": demo_data.make_example}


@pytest.fixture(scope="module", params=sorted(DEMO_VARIANTS))
def both(request):
    model, tokenizer = load(demo_model_path(request.param))
    ref = transformers.PegasusXForConditionalGeneration.from_pretrained(model.path).eval()
    ref_tokenizer = transformers.PegasusTokenizer.from_pretrained(model.path)
    return model, tokenizer, ref, ref_tokenizer, request.param


def documents(variant):
    rng = random.Random(DOCS_SEED)
    generated = [TASKS[variant](rng, n_tokens)[0] for n_tokens in (400, 1500)]
    # The short example for every model: ~2,500 tokens keeps transformers' 4-beam runs quick (the 12,000-token
    # long example takes minutes there); the generated documents are each model's own task.
    return [minipegx.example_document("short")] + generated


def test_the_demo_tokenizer_gives_transformers_ids(both):
    _, tokenizer, _, ref_tokenizer, variant = both
    for doc in documents(variant):
        assert tokenizer.encode(doc) == ref_tokenizer(doc).input_ids


@pytest.mark.parametrize("num_beams", [4, 1], ids=["shipped-beam-4", "greedy"])
def test_the_demo_summaries_equal_transformers_generate(both, num_beams):
    model, tokenizer, ref, ref_tokenizer, variant = both
    for doc in documents(variant):
        ids = ref_tokenizer(doc, return_tensors="pt").input_ids
        with torch.no_grad():
            expected = ref.generate(ids, num_beams=num_beams)[0].tolist()
        mine = np.asarray(model.generate(ids.numpy(), num_beams=num_beams))[0].tolist()
        # equal ids, unless a decision of the search is within the noise two libraries' rounding may add
        # (tests/ties.py): then a tie broken differently is not a difference of the model
        assert_same_unless_tied(mine, expected, model, ids.numpy(), num_beams=num_beams)
        if mine == expected:
            assert minipegx.summarize(doc, model=model, tokenizer=tokenizer, num_beams=num_beams) \
                == ref_tokenizer.decode(expected, skip_special_tokens=True)


def test_every_slot_word_of_the_task_is_one_demo_token(both):
    # The recipe gives every corpus word its own piece (tools/train_demo.py add_word_pieces), so the
    # model copies a name, number, object or place as one token.
    _, tokenizer, _, _, variant = both
    slots = demo_data.NAMES + demo_data.PLACES + demo_data.VERBS + demo_data.OBJECTS + [str(n) for n in range(2, 100)]
    if TASKS[variant] is demo_data.make_example:
        slots += demo_data.ROLES
    split = [w for w in slots if len(tokenizer.encode(w)) != 2]          # the word and </s>
    assert split == []


def test_the_demo_models_shape_has_one_home():
    """The shipped config.json is the demo model's shape: the recipe (tools/train_demo.MODEL) wrote it,
    and docs/demo_model.md's table states it, field by field."""
    import json
    import pathlib

    from tools.train_demo import MODEL

    shipped = json.loads((pathlib.Path(minipegx.demo_model_path("short")) / "config.json").read_text())
    assert {k: shipped[k] for k in MODEL} == MODEL

    doc = (pathlib.Path(__file__).parents[1] / "docs" / "demo_model.md").read_text()
    rows = doc.split("| field | value | field | value |")[1].split("\n\n")[0].strip().splitlines()[1:]
    stated = {}
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        for name, value in zip(cells[0::2], cells[1::2]):
            names = {"attention heads (enc / dec)": "encoder_attention_heads / decoder_attention_heads",
                     "ffn dim (enc / dec)": "encoder_ffn_dim / decoder_ffn_dim"}.get(name, name)
            for n, v in zip(names.split(" / "), value.split(" / ")):
                stated[n] = v
    for field in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
                  "encoder_ffn_dim", "decoder_ffn_dim", "block_size", "num_global_tokens", "vocab_size",
                  "max_position_embeddings", "activation_function", "init_std", "stagger_local_blocks"):
        assert stated[field] == json.dumps(shipped[field]).strip('"'), field


def test_the_siblings_differ_from_the_demo_model_in_their_one_ablated_field():
    import json
    import pathlib

    def config(variant):
        return json.loads((pathlib.Path(demo_model_path(variant)) / "config.json").read_text())

    long = config("long")
    for variant, change in {"long_nostagger": {"stagger_local_blocks": False},
                            "long_noglobal": {"num_global_tokens": 0}}.items():
        differ = {k: v for k, v in config(variant).items() if long.get(k) != v}
        assert differ == change, variant


def test_the_bundled_models_fit_the_package_budget():
    import pathlib
    total = sum(f.stat().st_size for v in DEMO_VARIANTS for f in pathlib.Path(demo_model_path(v)).iterdir())
    assert total <= 20 * 2**20


def test_an_unknown_demo_model_is_refused_with_the_choices_named():
    from minipegx.errors import CheckpointNotFoundError
    with pytest.raises(CheckpointNotFoundError, match="long_noglobal"):
        demo_model_path("tiny")


def test_the_default_demo_model_is_the_long_one():
    assert demo_model_path() == demo_model_path("long")
    assert minipegx.from_pretrained(None).path == demo_model_path("long")


def test_the_old_main_variant_is_refused_with_its_new_name():
    from minipegx.errors import CheckpointNotFoundError
    with pytest.raises(CheckpointNotFoundError, match='"main" was the first demo model, now "short"; the default '
                                                      'is now "long"'):
        demo_model_path("main")


def test_each_demo_model_has_its_own_bundled_example_from_its_own_task(tmp_path):
    """example_document(model) and example_summary(model) are what tools/train_demo writes for that model's
    task and seed: make_named_example for "short", make_example (the roles task) for "long"."""
    from tools import train_demo
    train_demo.write_example(str(tmp_path))
    train_demo.write_long_example(str(tmp_path))
    for model, stem in (("short", "example"), ("long", "example_long")):
        written = [(tmp_path / f"{stem}_{kind}.txt").read_text(encoding="utf-8") for kind in ("document", "summary")]
        assert [minipegx.example_document(model), minipegx.example_summary(model)] == written, model
    assert minipegx.example_document() == minipegx.example_document("long")


@pytest.mark.parametrize("call", [lambda: minipegx.example_document("main"), lambda: minipegx.example_summary("x")])
def test_an_unknown_example_is_refused_with_the_choices_named(call):
    with pytest.raises(minipegx.InputError, match="choose one of long, short"):
        call()
