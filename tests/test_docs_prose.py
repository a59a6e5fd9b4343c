"""The numbers docs/parity.md states are the numbers the code gives today.

The sample report in "Reading a report" is the output of the Python block above it: the test runs that
block and compares what it prints with what the page shows, line by line (names, shapes and flags
exactly; numbers to 5 %, since another BLAS may round a last digit differently). The long-input
paragraph's figures are rerun and asserted as the bounds the page states. Both need transformers (the
`test` extra): the reference is the point of the page.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

import minipegx

PARITY_MD = Path(__file__).resolve().parents[1] / "docs" / "parity.md"
NUMBER = re.compile(r"[-+]?\d+\.\d+e[-+]\d+")


@pytest.fixture(scope="module")
def page():
    return PARITY_MD.read_text(encoding="utf-8")


def sample_report_blocks(page):
    """(code, shown output) of the section "Reading a report"."""
    section = page[page.index("## Reading a report"):]
    code, shown = re.findall(r"```(?:python)?\n(.*?)```", section, flags=re.S)[:2]
    return code, shown


def test_the_sample_report_is_what_its_code_prints(page):
    pytest.importorskip("torch")
    code, shown = sample_report_blocks(page)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "docs/parity.md", "exec"), {})
    got, want = printed.getvalue().strip().splitlines(), shown.strip().splitlines()
    assert len(got) == len(want), f"the page shows {len(want)} lines, the code prints {len(got)}"
    for g, w in zip(got, want):
        assert NUMBER.sub("#", g) == NUMBER.sub("#", w), f"docs/parity.md shows\n  {w}\nthe code prints\n  {g}"
        for a, b in zip(map(float, NUMBER.findall(g)), map(float, NUMBER.findall(w))):
            assert abs(a - b) <= 0.05 * abs(b) + 1e-6, f"docs/parity.md shows\n  {w}\nthe code prints\n  {g}"


def test_the_long_input_paragraph_states_what_compare_measures(page):
    pytest.importorskip("torch")
    from minipegx import parity

    path = minipegx.demo_model_path("short")
    doc = minipegx.example_document("short")
    ids = minipegx.Tokenizer.from_pretrained(path)([doc], return_tensors="np")["input_ids"]
    assert ids.shape[1] == 2498 and '(2,498 tokens as\n`minipegx.example_document("short")` gives it' in page
    report = parity.compare(path, ids, steps=2)
    rows = {r.name: r for r in report.rows}
    layers = [r for r in report.rows if re.fullmatch(r"model\.encoder\.layers\.\d+", r.name)]
    assert report.ok                                                              # "passes every intermediate"
    assert rows["model.encoder.embed_positions"].max_abs_err < 1e-7               # "agrees to 6e-8"
    assert max(r.max_abs_err for r in layers) < 5e-5                              # "the encoder layers to 2e-5"
    assert round(max(r.ref_scale for r in layers)) == 53                          # "on values up to 53"
    assert rows["model.encoder.layer_norm"].max_abs_err < 1e-5                    # "final output to 3e-6"
    assert max(r.max_abs_err for r in report.rows if r.name.endswith("lm_head")) < 1e-5   # "logits to 5e-6"
