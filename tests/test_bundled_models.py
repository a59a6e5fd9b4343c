"""Every bundled model folder is a complete Hugging Face folder: AutoTokenizer and PegasusTokenizerFast load
its tokenizer.json and give minipegx's ids, and its model card's numbers are its evaluation file's.

Hard text for the tokenizers: runs of spaces, tabs and newlines, characters no vocabulary holds, the
special tokens written in the text, and inputs longer than the cut, truncated. The random texts are
drawn from pieces that hit each of those; tokenizers' normalizer and sentencepiece's differ on a
combining mark after a character nmt_nfkc rewrites (tests/test_tokenizer.py has the case), so such
texts are set aside, as there.
"""

from __future__ import annotations

import json
import os
import re
import warnings

import pytest
import transformers
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import minipegx
from minipegx.checkpoint.tokenizer_files import backend_tokenizer
from minipegx.errors import MiniPegxWarning
from minipegx.model import DEMO_VARIANTS

HARD = [
    "   leading, inner   runs\t\tof tabs\n\nand newlines, trailing   ",
    "\u3000ideographic\u00a0no-break\u2009thin\u200bzero-width spaces",
    "unknown characters: ᚠᛇᚻ ⠎⻆অಝ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀👍🏽 ☕",
    "<mask_1> the miller <mask_2> carried</s><pad> 47 <unk> lanterns <unk_5><unk_102> to <unk_103>",
    "x<mask_1>y</s></s> <mask> <s> <unk_10 < >",
    "",
    " ",
    "ﬁ ﬂ ＡＢＣ １２３ café naïve e\u0301",
]
PIECES = [" ", "  ", "\t", "\n", "\u3000", "\u00a0", "▁", "<mask_1>", "<mask_2>", "</s>", "<pad>", "<unk>",
          "<unk_7>", "<unk_1", "<", ">", "é", "ﬁ", "Ａ", "ᚠ", "😀", "the", " miller", " Mirela", " carried",
          " 47", " lanterns", " Ostbridge", ".", ",", "\x00", "a", "Z"]
FOLDERS = sorted(DEMO_VARIANTS)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MiniPegxWarning)     # empty inputs and truncation warn
        return fn(*args, **kwargs)


@pytest.fixture(scope="module", params=FOLDERS)
def folder(request):
    return minipegx.demo_model_path(request.param)


@pytest.fixture(scope="module")
def tokenizers(folder):
    """(minipegx's Tokenizer, AutoTokenizer's, PegasusTokenizerFast's) of one bundled folder."""
    return (minipegx.Tokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder),
            transformers.PegasusTokenizerFast.from_pretrained(folder))


def test_every_bundled_folder_has_a_tokenizer_json_and_a_card(folder):
    assert {"tokenizer.json", "spiece.model", "README.md"} <= set(os.listdir(folder))


def test_the_committed_tokenizer_json_is_the_one_built_from_spiece_model(folder, tokenizers):
    tok = tokenizers[0]
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        committed = json.load(f)
    assert committed == json.loads(backend_tokenizer(tok.sp, tok.spiece_model_path).to_str())


@pytest.mark.parametrize("text", HARD)
def test_transformers_gives_minipegx_ids_on_hard_text(tokenizers, text):
    tok, auto, fast = tokenizers
    assert auto(text)["input_ids"] == fast(text)["input_ids"] == quiet(tok, text)["input_ids"]


def test_transformers_gives_minipegx_ids_on_a_long_input_truncated(tokenizers):
    tok, auto, fast = tokenizers
    text = minipegx.example_document("long")
    for max_length in (1, 2, 300, 16384):
        want = quiet(tok, text, truncation=True, max_length=max_length)["input_ids"]
        assert auto(text, truncation=True, max_length=max_length)["input_ids"] == want
        assert fast(text, truncation=True, max_length=max_length)["input_ids"] == want
    assert auto(text)["input_ids"] == tok(text)["input_ids"]          # ~12,000 tokens uncut


def test_transformers_gives_minipegx_ids_on_a_padded_batch(tokenizers):
    tok, auto, _ = tokenizers
    batch = HARD[:4] + [minipegx.example_document("short")[:4000]]
    got = auto(batch, padding=True, truncation=True, max_length=200)
    want = quiet(tok, batch, padding=True, truncation=True, max_length=200)
    assert got["input_ids"] == want["input_ids"] and got["attention_mask"] == want["attention_mask"]


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=24))
def test_transformers_gives_minipegx_ids_on_random_mixes(tokenizers, pieces):
    tok, auto, _ = tokenizers
    text = "".join(pieces)
    assume(tok.normalizer.Normalize(text) == auto.backend_tokenizer.normalizer.normalize_str(text))
    ids = quiet(tok, text)["input_ids"]
    assert auto(text)["input_ids"] == ids
    assert auto.decode(ids) == tok.decode(ids)


# ---- model cards -------------------------------------------------------------------------------------------


def card(folder):
    with open(os.path.join(folder, "README.md"), encoding="utf-8") as f:
        text = f.read()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def results(folder):
    with open(os.path.join(folder, "eval_results.json"), encoding="utf-8") as f:
        return json.load(f)["results"]


def test_the_card_has_the_hubs_metadata_block(folder):
    meta, body = card(folder)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "summarization" and "pegasus_x" in meta["tags"]
    for heading in ("## Training", "## Evaluation", "## Limits"):
        assert heading in body


def test_the_cards_table_is_its_eval_results(folder):
    """Each row of the card's evaluation table, read back as numbers, is one entry of eval_results.json
    (percentages to the 0.1 shown, ROUGE to the 0.001 shown)."""
    _, body = card(folder)
    rows = [line.strip("|").split("|") for line in body.splitlines()
            if line.startswith("|") and not line.startswith(("| band", "|---"))]
    want = results(folder)
    assert len(rows) == len(want)
    for cells, r in zip(rows, want):
        band, decoding, n, tokens, exact, recall, rouge = (c.strip() for c in cells)
        assert (band, decoding, int(n)) == (r["band"], r["decoding"], r["n"])
        assert [int(x.replace(",", "")) for x in tokens.split(" / ")] == \
            [r["tokens_min"], r["tokens_median"], r["tokens_max"]]
        em, lo, hi = map(float, re.fullmatch(r"([\d.]+)% \(([\d.]+)-([\d.]+)\)", exact).groups())
        assert [em, lo, hi] == [round(100 * x, 1) for x in [r["exact_match"], *r["exact_match_ci95"]]]
        assert float(recall.rstrip("%")) == round(100 * r["fact_recall"], 1)
        assert [float(x) for x in rouge.split(" / ")] == [round(r[k], 3) for k in ("rouge1", "rouge2", "rougeL")]


def test_the_cards_model_index_is_its_eval_results(folder):
    meta, _ = card(folder)
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    exact = [m["value"] for m in metrics if m["type"] == "exact_match"]
    assert exact == [round(100 * r["exact_match"], 1) for r in results(folder)]
