"""The explore page with data written by an attacker: every string that reaches the page (the file name,
the model folder's name, the tokenizer's pieces, the summary, config.json's values) holding each class of
payload that breaks HTML around JSON. In headless Chromium (tests/test_explore_browser.py's setup) the
page's own script must run and show each string verbatim, as text; and explore refuses, before it
allocates, a model whose attention would not fit its limit."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from selenium.webdriver.common.by import By
from test_explore_browser import chromium

import minipegx
from minipegx import explore, limits
from minipegx.cli import main
from minipegx.errors import InputError

# One per class: close the script element; open a comment that puts the HTML parser into the script's
# double-escaped state (the rest of the page becomes script); end a CDATA section; an element with a
# handler (it must stay text, never become an element); the JavaScript line separators; an ampersand
# entity that must not be decoded.
PAYLOADS = ["</script><i class=pwned>x</i>", "<!--<script>", "]]>", '<img src=x onerror="window.pwned=1">',
            "a\u2028b\u2029c", "&lt;&amp;"]
# A file or folder name cannot hold "/": the same classes without it.
NAME_PAYLOAD = '<!--<script>]]><img src=x onerror="window.pwned=1">&amp;'


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory):
    """A page built through the command line from a file and a model folder with hostile names and a
    config.json with hostile values, then every other string field of the data set to the payloads."""
    tmp = tmp_path_factory.mktemp("hostile")
    folder = tmp / NAME_PAYLOAD
    shutil.copytree(minipegx.demo_model_path("short"), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update({"_name_or_path": PAYLOADS[0], "note": PAYLOADS})
    (folder / "config.json").write_text(json.dumps(config))
    doc = tmp / (NAME_PAYLOAD + ".txt")
    doc.write_text(minipegx.example_document("short")[:600] + " " + " ".join(PAYLOADS), encoding="utf-8")
    page = tmp / "page.html"
    assert main(["explore", str(doc), "--out", str(page), "--model", str(folder)]) == 0
    data = _data_of(page)
    # the pieces, the summary and the start note as an attacker's tokenizer could make them
    for i, p in enumerate(PAYLOADS):
        data["tokens"][1 + i] = p
        data["summary"]["tokens"][i % len(data["summary"]["tokens"])] = p
    data["startNote"] = "".join(PAYLOADS)
    explore.write_page(data, page)
    driver = chromium()
    driver.get(page.as_uri())
    yield driver, data
    driver.quit()


def _data_of(page):
    """The data embedded in a written page, parsed back as the browser's JSON.parse would."""
    html = page.read_text(encoding="utf-8")
    start = html.index('<script type="application/json" id="data">') + len('<script type="application/json" id="data">')
    return json.loads(html[start:html.index("</script>", start)])


def test_the_encoder_leaves_no_markup_character_and_round_trips_every_string():
    data = {"strings": PAYLOADS + [NAME_PAYLOAD, "\ud800 lone surrogate"], "nested": {p: p for p in PAYLOADS}}
    text = explore.script_json(data)
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == data
    with pytest.raises(InputError):
        explore.script_json({"x": float("nan")})


def test_the_pages_script_runs_with_hostile_strings_in_every_field(hostile_page):
    driver, data = hostile_page
    assert driver.execute_script("return typeof window.explore") == "object"      # the script ran to the end
    assert driver.execute_script("return document.body.dataset.query") == str(data["start"])
    assert driver.execute_script("return window.pwned === undefined && document.querySelectorAll("
                                 "'img, i.pwned').length === 0")
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_every_hostile_string_is_shown_verbatim_as_text(hostile_page):
    driver, data = hostile_page
    text = lambda css: driver.find_element(By.CSS_SELECTOR, css).get_attribute("textContent")  # noqa: E731
    assert text("#title") == "minipegx explore: " + NAME_PAYLOAD + ".txt"
    assert NAME_PAYLOAD in text("#meta")
    assert text("#start") == "".join(PAYLOADS)
    for i, p in enumerate(PAYLOADS):
        assert text(f'#text span[data-t="{1 + i}"]') == p
    shown = [e.get_attribute("textContent") for e in driver.find_elements(By.CSS_SELECTOR, "#summary span.s")]
    assert shown == data["summary"]["tokens"]
    rows = driver.execute_script("return Array.from(document.querySelectorAll('#config tr'), "
                                 "r => [r.cells[0].textContent, r.cells[1].textContent])")
    config = dict(rows)
    assert json.loads(config["_name_or_path"]) == PAYLOADS[0] and json.loads(config["note"]) == PAYLOADS


def test_the_page_opens_on_a_word_with_one_line_saying_where_to_start():
    doc = minipegx.example_document("short")
    data = explore.build(doc[:doc.index("Nobody remembers who built the gentle tower")], minipegx.demo_model_path("short"),
                         summarize=False)
    a, b = data["keySpans"][0]
    assert a < data["start"] < b and data["tokens"][data["start"]].strip() == "Wendel"   # the ledger's name
    assert data["startNote"].startswith('Start here: the word "Wendel"') and "\n" not in data["startNote"]


def test_a_model_whose_attention_exceeds_the_limit_is_refused_before_it_allocates(tmp_path, capsys):
    """block_size 4096 with 4096 global tokens: gigabytes of attention for a 40-token document."""
    folder = tmp_path / "huge_blocks"
    shutil.copytree(minipegx.demo_model_path("short"), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(block_size=4096, num_global_tokens=4096)
    (folder / "config.json").write_text(json.dumps(config))
    weights = load_file(folder / "model.safetensors")           # weights that fit: 4096 global embeddings
    weights["model.encoder.embed_global.weight"] = np.zeros((4096, config["d_model"]), np.float32)
    save_file(weights, folder / "model.safetensors")
    (tmp_path / "doc.txt").write_text("A short document of a few words. " * 4)
    cfg = minipegx.PegasusXConfig.from_json_file(folder / "config.json")
    need = explore.attention_bytes(cfg, 40)
    assert need > limits.current().max_attention_bytes
    assert main(["explore", str(tmp_path / "doc.txt"), "--out", str(tmp_path / "p.html"), "--model", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GiB" in err and "max_attention_bytes" in err and "--batch-size" not in err
    assert not (tmp_path / "p.html").exists()


def test_the_attention_figures_docs_explore_md_states():
    """0.07 GiB for the demo models at 16,384 tokens, 1.7 for pegasus-x-base, 2.3 for -large (its
    config's sizes), against the 2 GiB default."""
    def gib(**sizes):
        return round(explore.attention_bytes(minipegx.PegasusXConfig(**sizes), 16384) / 2**30, 2)
    demo = minipegx.PegasusXConfig.from_json_file(minipegx.demo_model_path() + "/config.json")
    assert round(explore.attention_bytes(demo, 16384) / 2**30, 2) == 0.06
    assert gib(block_size=512, num_global_tokens=128, encoder_attention_heads=12, encoder_layers=12, d_model=768) == 1.74
    assert gib(block_size=512, num_global_tokens=128, encoder_attention_heads=16, encoder_layers=16) == 2.32
    assert limits.current().max_attention_bytes == 2 * 2**30


@pytest.mark.parametrize("target", ["the document", "a model file"])
def test_the_page_is_never_written_over_a_file_explore_reads(tmp_path, capsys, target):
    folder = tmp_path / "model"
    shutil.copytree(minipegx.demo_model_path("short"), folder)
    doc = tmp_path / "doc.txt"
    doc.write_text("Mirela carried 47 lanterns to Ostbridge.", encoding="utf-8")
    out = doc if target == "the document" else folder / "spiece.model"
    before = out.read_bytes()
    assert main(["explore", str(doc), "--out", str(out), "--model", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "which this run reads" in err and out.read_bytes() == before


def test_a_text_beyond_what_16384_tokens_can_cover_is_refused_before_it_is_tokenized(tmp_path, capsys):
    """1 MB of one character: the character count alone says it cannot fit (the tokenizer is not run)."""
    doc = tmp_path / "one_char.txt"
    doc.write_text("a" * 1_000_000)
    assert main(["explore", str(doc), "--out", str(tmp_path / "p.html"), "--no-summary"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1,000,000 characters" in err and "16384 tokens" in err


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_an_out_that_is_not_a_regular_file_is_refused_before_any_work(tmp_path, capsys, kind):
    out = tmp_path / "page.html"
    os.mkfifo(out) if kind == "fifo" else out.mkdir()
    doc = tmp_path / "doc.txt"
    doc.write_text("Mirela carried 47 lanterns to Ostbridge.", encoding="utf-8")
    assert main(["explore", str(doc), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a regular file" in err
