"""`minipegx evaluate` on hostile flags and files, and ROUGE on every script: a bad flag is a one-line
usage error (exit 2) before any work, advice names only evaluate's own flags, and a summary identical to
its reference scores 1 in any script, while English text scores exactly as rouge-score does."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import pytest

from minipegx.cli import main
from minipegx.corpus.evaluate import UnicodeTokenizer, evaluate_corpus, rouge_scores
from minipegx.errors import MiniPegxWarning

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
tokenizers = pytest.importorskip("rouge_score.tokenizers")


@pytest.fixture
def files(tmp_path):
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"id": i, "summary": f"Document {i} was about lanterns."}) + "\n"
                            for i in range(3)))
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": i, "summary": f"Document {i} is about lanterns."}) + "\n"
                             for i in range(3)))
    return preds, refs


def evaluate(files, *flags):
    preds, refs = files
    return main(["evaluate", "--predictions", str(preds), "--references", str(refs), *flags])


@pytest.mark.parametrize("flag", [["--resamples", "0"], ["--resamples", "-5"], ["--resamples", "100000000"],
                                  ["--resamples", "x"], ["--seed", "-1"], ["--seed", "1.5"],
                                  ["--plot", "rouge.txt"], ["--plot", "FOLDER"], ["--plot", "FOLDER/x"],
                                  ["--json", "FOLDER"]])
def test_a_bad_flag_is_a_one_line_usage_error_before_any_work(files, tmp_path, capsys, flag):
    (tmp_path / "FOLDER").mkdir()
    flag = [f.replace("FOLDER", str(tmp_path / "FOLDER")) for f in flag]
    with pytest.raises(SystemExit) as e:
        evaluate(files, *flag)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1 and flag[0] in err
    assert not (tmp_path / "FOLDER.png").exists() and list((tmp_path / "FOLDER").iterdir()) == []


def test_the_python_api_refuses_the_same_values(files):
    preds, refs = files
    for kwargs in ({"n_resamples": 0}, {"n_resamples": 10**8}, {"seed": -1}, {"tokenizer": "ascii"}):
        with pytest.raises(Exception) as e:
            evaluate_corpus(preds, refs, **kwargs)
        assert type(e.value).__module__ == "minipegx.errors"


def test_advice_in_evaluates_errors_names_only_its_own_flags(files, tmp_path, capsys):
    parser_flags = set(re.findall(r"--[a-z-]+", subprocess.run(
        [sys.executable, "-m", "minipegx", "evaluate", "--help"], capture_output=True, text=True).stdout))
    preds, refs = files
    preds.write_text(preds.read_text() + "not json\n")
    assert evaluate(files) == 1
    missing = tmp_path / "partial.jsonl"
    missing.write_text(json.dumps({"id": 0, "summary": "x"}) + "\n")
    assert main(["evaluate", "--predictions", str(missing), "--references", str(refs)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "line 4: not JSON" in err
    assert set(re.findall(r"--[a-z-]+", err)) <= parser_flags, err


def english_texts(rng, n):
    words = ["The", "cats", "were", "running", "home", "Dr.", "Smith's", "5", "p.m.", "U.S.", "e-mail",
             "state-of-the-art", "(2021)", "x_y", "généralement", "naïve", "Ostbridge", "lanterns", "it's",
             "£12", "50%", "don't", "--", "A.B.C.", "well...", "\"quoted\"", "1,000", "K9", "ran", "runs"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 25))) + rng.choice([".", "!", "?", ""])
            for _ in range(n)]


def test_the_default_tokenizer_is_rouge_scores_own_on_english_text():
    """Tokens and all four scores, against rouge-score's default tokenizer with stemming, on random
    English sentences mixing punctuation, numbers, hyphens, possessives and abbreviations (ASCII)."""
    rng = random.Random(7)
    ours, theirs = UnicodeTokenizer(), tokenizers.DefaultTokenizer(use_stemmer=True)
    texts = [t for t in english_texts(rng, 400) if t.isascii()]
    for t in texts:
        assert ours.tokenize(t) == theirs.tokenize(t), t
    preds, refs = texts[:150], texts[150:300]
    a, b = rouge_scores(preds, refs, "unicode"), rouge_scores(preds, refs, "rouge-score")
    for t in a:
        assert (a[t] == b[t]).all()


@pytest.mark.parametrize("text", ["北京大学的学生读了很多书。", "Η γρήγορη καφέ αλεπού πηδά.", "Быстрая лиса прыгает.",
                                  "🎉🎈 🎂", "東京で会議があります。", "हिन्दी में एक वाक्य।", "ภาษาไทยง่ายมาก"])
def test_a_summary_identical_to_its_reference_scores_1_in_any_script(text):
    scores = rouge_scores([text], [text])
    assert all(s[0] == 1.0 for s in scores.values()), scores


def test_han_splits_per_character_and_other_scripts_keep_their_words():
    tok = UnicodeTokenizer()
    assert tok.tokenize("北京大学") == ["北", "京", "大", "学"]
    assert tok.tokenize("Ελληνικά κείμενα, हिन्दी!") == ["ελληνικά", "κείμενα", "हिन्दी"]
    assert rouge_scores(["北京大学很好"], ["北京大学"])["rouge1"][0] == pytest.approx(2 * 4 / (6 + 4))


def test_references_without_a_token_are_counted_in_a_warning(tmp_path, capsys):
    refs, preds = tmp_path / "refs.jsonl", tmp_path / "preds.jsonl"
    rows = [("a", "北京大学"), ("b", "Ελληνικά"), ("c", "— … —"), ("d", "plain words")]
    refs.write_text("".join(json.dumps({"id": i, "summary": s}) + "\n" for i, s in rows))
    preds.write_text("".join(json.dumps({"id": i, "summary": s}) + "\n" for i, s in rows))
    with pytest.warns(MiniPegxWarning, match="1 of 4 references have no token under the 'unicode'"):
        assert evaluate_corpus(preds, refs, n_resamples=10)["empty_references"] == 1
    with pytest.warns(MiniPegxWarning, match="3 of 4 references .* 'rouge-score' .* --tokenizer unicode"):
        evaluate_corpus(preds, refs, n_resamples=10, tokenizer="rouge-score")
    assert main(["evaluate", "--predictions", str(preds), "--references", str(refs), "--resamples", "10"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("minipegx: warning: 1 of 4 references") and err.count("\n") == 1


def test_the_bootstrap_in_chunks_draws_what_one_draw_does(files, monkeypatch):
    from minipegx.corpus import evaluate as E

    preds, refs = files
    whole = evaluate_corpus(preds, refs, n_resamples=300, seed=5)
    monkeypatch.setattr(E, "_BOOTSTRAP_CHUNK", 7)             # 2 resamples of 3 documents per chunk
    assert evaluate_corpus(preds, refs, n_resamples=300, seed=5) == whole


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_the_report_is_never_written_over_an_input(files, tmp_path, capsys, flag):
    preds, refs = files
    target = tmp_path / "refs.png"
    if flag == "--plot":
        os.link(refs, target)                         # the references under a plot's name
    else:
        target = refs
    before = refs.read_bytes()
    assert evaluate(files, flag, str(target), "--resamples", "5") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "which this run reads" in err and refs.read_bytes() == before
