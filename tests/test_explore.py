"""minipegx.explore: the page's compact data and the `minipegx explore` command (the page's JavaScript
is checked in a real browser in test_explore_browser.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import minipegx
from minipegx import explore
from minipegx import views as V
from minipegx.cli import main
from minipegx.errors import InputError

# A log-scale byte: 16 steps per octave, so rounding moves a value by at most 2^(1/32) - 1 = 2.2%.
QUANT_RTOL = 2 ** (1 / 32) - 1 + 1e-12
SMALLEST = 2 ** (-254.49 / 16)             # from here up a probability is stored (code 1); below it, 0


@pytest.fixture(scope="module")
def short_doc():
    """The first paragraphs of the short model's bundled example (a key sentence included), ~300 tokens."""
    doc = minipegx.example_document("short")
    return doc[:doc.index("Nobody remembers who built the gentle tower")]


def test_quantize_keeps_probabilities_within_2_percent_and_zero_exactly():
    p = np.concatenate([[0.0, 1.0], np.geomspace(SMALLEST, 1, 5000)])
    back = explore.dequantize(explore.quantize(p))
    assert back[0] == 0 and back[1] == 1
    np.testing.assert_allclose(back[2:], p[2:], rtol=QUANT_RTOL)
    assert explore.dequantize(explore.quantize([SMALLEST * 0.99]))[0] == 0


def test_pack_rows_keeps_each_rows_largest_entries_with_their_columns():
    rows = np.array([[0.1, 0.6, 0.0, 0.3], [0.25, 0.25, 0.4, 0.1]])
    packed = explore.pack_rows(rows, 2)
    np.testing.assert_allclose(explore.unpack_rows(packed, 2), [[0, 0.6, 0, 0.3], [0.25, 0, 0.4, 0]],
                               rtol=QUANT_RTOL)
    assert packed["dropped"] == pytest.approx((0.1 + 0.35) / 2)
    np.testing.assert_allclose(explore.unpack_rows(explore.pack_rows(rows, 4), 2), rows, rtol=QUANT_RTOL)


def test_sentence_and_key_spans_follow_the_pieces():
    pieces = ["▁Old", "▁mills", ".", "▁According", "▁to", "▁the", "▁mill", "▁ledger", ",", "▁Ivo", "▁sent",
              "▁4", "▁maps", "▁to", "▁Marrow", ".", "▁Rain", "</s>"]
    assert explore.sentence_spans(pieces) == [(0, 3), (3, 16), (16, 18)]
    assert explore.key_sentence_spans(pieces) == [(3, 16)]


def test_key_spans_find_the_roles_tasks_ledger_entries_in_the_long_example():
    """The long model's task names a role, not a person ("According to the town ledger, the miller carried 47
    lanterns to Ostbridge."; tools/demo_data.make_example): each such entry of the long example is one span."""
    doc = minipegx.example_document("long")
    tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path("long"))
    pieces = tok.convert_ids_to_tokens(tok.encode(doc))
    shown = explore.display_pieces(pieces)
    found = ["".join(shown[a:b]).strip() for a, b in explore.key_sentence_spans(pieces)]
    assert found == re.findall(r"According to the \w+ ledger, the \w+ [^.]*\.", doc) and len(found) >= 3


def test_page_data_holds_each_layers_probabilities_and_the_summary(short_doc):
    model = minipegx.from_pretrained(minipegx.demo_model_path("short"))
    tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path("short"))
    data = explore.build(short_doc, model, tok)
    ids = tok([short_doc], return_tensors="np")["input_ids"]
    T, G, K = ids.shape[1], model.config.num_global_tokens, model.config.block_size
    views = V.encoder_views(model, ids)
    assert (data["T"], len(data["tokens"]), len(data["layers"])) == (T, T, model.config.encoder_layers)
    for att, layer in zip(views.layers, data["layers"]):
        local = explore.unpack_rows(layer["local"], att.local.shape[0] * K)
        want = np.where(att.local >= SMALLEST, att.local, 0).reshape(-1, G + K)
        np.testing.assert_allclose(local, want, rtol=QUANT_RTOL)
        np.testing.assert_allclose(explore.unpack_rows(layer["global"], G), np.where(att.glob >= SMALLEST, att.glob, 0),
                                   rtol=QUANT_RTOL)
    assert len(data["keySpans"]) == 2                                   # the paragraphs hold two key sentences
    a, b = data["keySpans"][0]
    assert "".join(data["tokens"][a:b]).strip().startswith("According to the market ledger, Wendel returned")
    summary = data["summary"]
    cross = explore.unpack_rows(summary["cross"], len(summary["tokens"]))
    assert summary["tokens"][-1] == "</s>" and cross.shape == (len(summary["tokens"]), T)
    np.testing.assert_allclose(cross.sum(axis=1), 1, rtol=QUANT_RTOL)   # rows are softmaxes over the source


def test_explore_command_writes_one_self_contained_page(tmp_path, short_doc, capsys):
    src, out = tmp_path / "doc.txt", tmp_path / "page.html"
    src.write_text(short_doc, encoding="utf-8")
    assert main(["explore", str(src), "--out", str(out), "--no-summary"]) == 0
    html = out.read_text(encoding="utf-8")
    assert f"wrote {out}" in capsys.readouterr().out
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched from anywhere
    assert '"summary":' not in html and "function reachWeighted" in html


def test_the_page_uses_the_default_long_demo_model_when_none_is_given(short_doc):
    assert explore.build(short_doc, summarize=False)["model"] == "demo_long"


def test_explore_refuses_a_document_over_16384_tokens(tmp_path, capsys):
    src = tmp_path / "long.txt"
    src.write_text("word " * 16400, encoding="utf-8")
    assert main(["explore", str(src), "--out", str(tmp_path / "p.html")]) == 1
    assert "the page holds at most 16384: cut the text" in capsys.readouterr().err


def test_page_rows_fall_back_to_top_entries_beyond_the_byte_budget(short_doc):
    model = minipegx.from_pretrained(minipegx.demo_model_path("short"))
    data = explore.build(short_doc, model, summarize=False, row_budget=100_000, global_budget=20_000)
    layer = data["layers"][0]
    assert layer["local"]["keep"] < layer["local"]["width"] and "index" in layer["local"]
    assert layer["global"]["keep"] < layer["global"]["width"] and 0 <= layer["global"]["dropped"] < 0.5
    with pytest.raises(InputError):
        explore.pack_rows(np.zeros((1, 70000)), 5)


def test_notebook_figure_draws_the_views_of_the_chosen_token(short_doc):
    doc = explore.document(short_doc)
    G, layer, query = doc.views.config.num_global_tokens, 1, 120
    fig = explore.figure(doc, query, layer, cols=10_000)                  # one column per token: no pooling
    traces = {t.name: t for t in fig.data}
    np.testing.assert_array_equal(traces["structure"].z, V.reach_structure(doc.views.config, len(doc.tokens), query))
    attention = np.array([V.token_attention(a, query)[1] for a in doc.views.layers])
    np.testing.assert_allclose(10 ** np.nan_to_num(np.array(traces["attention"].z, float), nan=-np.inf), attention,
                               rtol=1e-6)
    q, k = doc.qk(layer)
    full = traces["full attention (all keys)"]
    np.testing.assert_allclose(full.y, V.full_attention_row(q, k, query, G)[G + np.asarray(full.x)])


def test_notebook_widget_redraws_when_the_token_moves(short_doc):
    box = explore.widget(explore.document(short_doc), query=10)
    slider, fig = box.children[0].children[0], box.children[1]
    before = np.array(fig.data[0].z, float)
    slider.value = 200
    assert fig.layout.title.text.startswith("token 200 ")
    assert not np.array_equal(np.array(fig.data[0].z, float), before)
