"""ROUGE for a corpus of summaries, as the PEGASUS papers report it, with bootstrap intervals and length bands.

    minipegx evaluate --predictions out.jsonl --references corpus.jsonl --json scores.json --plot rouge.png

Scores are rouge-score's (Google's package, the one the PEGASUS papers use): ROUGE-1, ROUGE-2, ROUGE-L
and ROUGE-Lsum F1, Porter stemming on. ROUGE-Lsum is the summary-level LCS over *sentences*, and
rouge-score takes sentences as the lines of its input, so both sides are split into sentences and
joined with newlines first, as the PEGASUS evaluation does with nltk's punkt. punkt needs a data
download that an offline machine does not have, so `split_sentences` is a small rule: a sentence ends at
., ! or ? (plus closing quotes or brackets) before whitespace and a word that does not start in lower
case, except when the stop ends a one-letter initial, a dotted abbreviation (p.m., U.S.) or a common one
(Mr., Dr., e.g., et al., Fig. ...); a line break always ends one. ROUGE-1/2/L do
not see the newlines (rouge-score's tokenizer turns every non-alphanumeric into a space).

Each score is the mean over documents; its 95% interval is a percentile bootstrap over documents
(the same resampled documents for every metric, seeded, so a rerun prints the same interval).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from ..errors import CorpusError, MissingDependencyError
from .files import read_jsonl

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
BAND_EDGES = (0, 500, 1000, 2000, 4000, 8000, math.inf)   # document length in words

_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "fig", "figs", "eq", "eqs",
                  "al", "no", "jr", "sr", "inc", "ltd", "co", "cf", "approx", "sec", "vol", "pp", "resp"}
_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` by the rule in this module's docstring (no model, no download)."""
    sentences = []
    for line in text.splitlines():
        start = 0
        for m in _END.finditer(line):
            word = line[start:m.start()].split()[-1:] or [""]
            word = word[0].lower().lstrip("(\"'")
            after = line[m.end():].lstrip()[:1]
            if after.islower() or (m.group().startswith(".") and (
                    word in _ABBREVIATIONS or "." in word or (len(word) == 1 and word.isalpha()))):
                continue
            sentences.append(line[start:m.end()].strip())
            start = m.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def rouge_scores(predictions, references) -> dict:
    """{rouge type: [n] F1 per document}, rouge-score with stemming, sentences on lines for ROUGE-Lsum."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise MissingDependencyError("evaluate needs rouge-score: pip install 'minipegx[eval]'") from None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    out = {t: np.zeros(len(predictions)) for t in ROUGE_TYPES}
    for i, (p, r) in enumerate(zip(predictions, references)):
        s = scorer.score("\n".join(split_sentences(r)), "\n".join(split_sentences(p)))
        for t in ROUGE_TYPES:
            out[t][i] = s[t].fmeasure
    return out


def bootstrap(scores: dict, n_resamples=1000, seed=0, confidence=0.95) -> dict:
    """{type: {"f": mean, "low": ..., "high": ...}}: percentile bootstrap of the mean over documents."""
    n = len(next(iter(scores.values())))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))     # [resamples, n]
    tail = 100 * (1 - confidence) / 2
    out = {}
    for t, v in scores.items():
        low, high = np.percentile(v[idx].mean(axis=1), [tail, 100 - tail])
        out[t] = {"f": float(v.mean()), "low": float(low), "high": float(high)}
    return out


def band_name(lo, hi) -> str:
    return f"{lo:,}+ words" if math.isinf(hi) else f"{lo:,}-{hi:,} words"


def evaluate_corpus(predictions, references, *, id_field="id", prediction_field="summary",
                    reference_field="summary", text_field="text", bands=BAND_EDGES, n_resamples=1000, seed=0,
                    allow_missing=False) -> dict:
    """ROUGE of the predictions file against the references file, overall and per band of document length.

    Records are joined on `id_field`. A reference without a prediction is an error (a partial run would
    otherwise score only its easy part) unless allow_missing. Bands need the document (`text_field`)
    in the references file; its length is counted in words. Returns a JSON-ready dict."""
    preds, _ = read_jsonl(predictions, id_field, (prediction_field,))
    refs, _ = read_jsonl(references, id_field, (reference_field,), optional=(text_field,))
    pred = {r.id: r.fields[prediction_field] for r in preds}
    missing = [r.id for r in refs if r.id not in pred]
    if missing and not allow_missing:
        raise CorpusError(f"{len(missing)} of {len(refs)} references have no prediction in {predictions} "
                          f"(first: {missing[:3]}); finish the run, or pass --allow-missing")
    refs = [r for r in refs if r.id in pred]
    if not refs:
        raise CorpusError(f"no id of {predictions} is in {references}; check --id-field")
    scores = rouge_scores([pred[r.id] for r in refs], [r.fields[reference_field] for r in refs])
    report = {
        "predictions": str(predictions), "references": str(references), "documents": len(refs),
        "missing": len(missing), "extra": len(pred.keys() - {r.id for r in refs} - set(missing)),
        "settings": {"rouge_types": list(ROUGE_TYPES), "use_stemmer": True, "score": "F1",
                     "lsum_sentences": "minipegx.corpus.evaluate.split_sentences, joined by newlines",
                     "bootstrap_resamples": n_resamples, "seed": seed, "confidence": 0.95},
        "overall": bootstrap(scores, n_resamples, seed),
        "bands": [],
    }
    if all(text_field in r.fields for r in refs):
        words = np.array([len(r.fields[text_field].split()) for r in refs])
        for lo, hi in zip(bands[:-1], bands[1:]):
            inside = (words >= lo) & (words < hi)
            if inside.any():
                band = {t: v[inside] for t, v in scores.items()}
                report["bands"].append({"band": band_name(lo, hi), "low_words": lo,
                                        "high_words": None if math.isinf(hi) else hi,
                                        "documents": int(inside.sum()), "scores": bootstrap(band, n_resamples, seed)})
    return report


def format_table(report) -> str:
    """A plain-text table, scores x 100 as the papers print them, each with its 95% interval."""
    head = f"{'':<22}{'docs':>6}" + "".join(f"{t:>25}" for t in ROUGE_TYPES)
    rows = [("all documents", report["documents"], report["overall"])]
    rows += [(b["band"], b["documents"], b["scores"]) for b in report["bands"]]
    lines = [head]
    for name, n, s in rows:
        cells = "".join(f"{100 * s[t]['f']:>8.2f} ({100 * s[t]['low']:.2f}-{100 * s[t]['high']:.2f})".rjust(25)
                        for t in ROUGE_TYPES)
        lines.append(f"{name:<22}{n:>6}{cells}")
    lines.append("F1 x 100, 95% bootstrap intervals in brackets; ROUGE-Lsum over split sentences.")
    return "\n".join(lines)


def plot_report(report, path) -> None:
    """Bars of each ROUGE type per length band (all documents first), with the 95% intervals."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("the plot needs matplotlib: pip install 'minipegx[viz]'") from None
    groups = [("all", report["overall"])] + [(b["band"], b["scores"]) for b in report["bands"]]
    x = np.arange(len(groups))
    width = 0.8 / len(ROUGE_TYPES)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    for k, t in enumerate(ROUGE_TYPES):
        f = np.array([100 * s[t]["f"] for _, s in groups])
        err = np.array([[100 * (s[t]["f"] - s[t]["low"]), 100 * (s[t]["high"] - s[t]["f"])] for _, s in groups]).T
        ax.bar(x + (k - 1.5) * width, f, width, yerr=err, capsize=2, label=t)
    ax.set_xticks(x, [name for name, _ in groups], rotation=15)
    ax.set_ylabel("F1 x 100 (95% interval)")
    ax.set_title(f"ROUGE of {report['documents']} summaries by document length")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(report, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
