"""minipegx evaluate: the numbers are rouge-score's own (stemming on, sentences on lines for ROUGE-Lsum),
the bootstrap intervals are seeded and hold the point estimate, bands split the documents by length."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minipegx.cli import main
from minipegx.corpus.evaluate import evaluate_corpus, rouge_scores, split_sentences
from minipegx.errors import CorpusError

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

REFS = [
    ("a", "The cats were running home. Dr. Smith saw them at 5 p.m. on the road!", 300),
    ("b", "Mirela carried 47 lanterns to Ostbridge. Tobias sold 12 barrels to Kellin.", 700),
    ("c", "Prices rose sharply in 2021. Analysts, e.g. J. Doe, expected it. Did they?", 1500),
    ("d", "A short one.", 2500),
]
PREDS = {
    "a": "A cat runs home. Smith saw it on the road.",
    "b": "Mirela carried 47 lanterns to Kellin. Tobias sold 12 barrels to Ostbridge.",
    "c": "Prices rose in 2021 as analysts expected.",
    "d": "Nothing like the reference at all.",
}


@pytest.fixture
def files(tmp_path):
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"id": i, "summary": s, "text": "word " * n}) + "\n" for i, s, n in REFS))
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": i, "summary": s}) + "\n" for i, s in PREDS.items()))
    return preds, refs


def test_sentences_end_at_stops_but_not_after_initials_or_abbreviations():
    assert split_sentences(REFS[0][1]) == ["The cats were running home.", "Dr. Smith saw them at 5 p.m. on the road!"]
    assert split_sentences(REFS[2][1]) == ["Prices rose sharply in 2021.", "Analysts, e.g. J. Doe, expected it.",
                                           "Did they?"]
    assert split_sentences('He said "stop." Then\nleft') == ['He said "stop."', "Then", "left"]


def test_scores_are_rouge_scores_own_with_stemming_and_lsum_over_sentence_lines():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    ours = rouge_scores([PREDS[i] for i, _, _ in REFS], [r for _, r, _ in REFS])
    for k, (i, ref, _) in enumerate(REFS):
        plain = scorer.score(ref, PREDS[i])              # ROUGE-1/2/L do not see the sentence lines
        lines = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(PREDS[i])))
        for t in ("rouge1", "rouge2", "rougeL"):
            assert ours[t][k] == plain[t].fmeasure
        assert ours["rougeLsum"][k] == lines["rougeLsum"].fmeasure
    # Stemming is on: "cats"/"cat" and "running"/"runs" match, so ROUGE-1 of doc a is above the unstemmed one.
    unstemmed = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False).score(REFS[0][1], PREDS["a"])
    assert ours["rouge1"][0] > unstemmed["rouge1"].fmeasure
    # Lsum differs from L when the order of sentences is what differs (doc b swaps the places).
    assert ours["rougeLsum"][1] != ours["rougeL"][1]


def test_the_report_is_the_mean_with_a_seeded_interval_around_it(files):
    preds, refs = files
    report = evaluate_corpus(preds, refs, n_resamples=500, seed=3)
    per_doc = rouge_scores([PREDS[i] for i, _, _ in REFS], [r for _, r, _ in REFS])
    for t, s in report["overall"].items():
        assert s["f"] == pytest.approx(np.mean(per_doc[t]), abs=1e-12)     # a mean of 4 floats
        assert s["low"] <= s["f"] <= s["high"] and s["low"] < s["high"]
    assert evaluate_corpus(preds, refs, n_resamples=500, seed=3) == report
    assert evaluate_corpus(preds, refs, n_resamples=500, seed=4)["overall"] != report["overall"]


def test_bands_split_the_documents_by_length_in_words(files):
    preds, refs = files
    report = evaluate_corpus(preds, refs, bands=(0, 500, 2000, float("inf")))
    assert [(b["band"], b["documents"]) for b in report["bands"]] == [
        ("0-500 words", 1), ("500-2,000 words", 2), ("2,000+ words", 1)]
    per_doc = rouge_scores([PREDS[i] for i, _, _ in REFS], [r for _, r, _ in REFS])
    assert report["bands"][1]["scores"]["rouge2"]["f"] == pytest.approx(per_doc["rouge2"][1:3].mean(), abs=1e-12)


def test_a_reference_without_a_prediction_is_an_error_unless_allowed(files):
    preds, refs = files
    preds.write_text("".join(json.dumps({"id": i, "summary": s}) + "\n" for i, s in PREDS.items() if i != "c"))
    with pytest.raises(CorpusError, match="1 of 4 references have no prediction"):
        evaluate_corpus(preds, refs)
    report = evaluate_corpus(preds, refs, allow_missing=True)
    assert (report["documents"], report["missing"]) == (3, 1)


def test_the_evaluate_command_prints_the_table_and_writes_json_and_a_plot(files, tmp_path, capsys):
    preds, refs = files
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["evaluate", "--predictions", str(preds), "--references", str(refs), "--json", str(out),
                 "--plot", str(png)]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert f"{100 * report['overall']['rougeLsum']['f']:.2f}" in table.splitlines()[1]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_custom_reference_field_is_used(tmp_path):
    refs = tmp_path / "refs.jsonl"
    refs.write_text(json.dumps({"id": 1, "abstract": "the same words"}) + "\n")
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": 1, "summary": "the same words"}) + "\n")
    report = evaluate_corpus(preds, refs, reference_field="abstract")
    assert report["overall"]["rouge1"] == {"f": 1.0, "low": 1.0, "high": 1.0}
    assert report["bands"] == []                          # no "text" field: no bands
