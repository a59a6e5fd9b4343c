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
not see the newlines (the tokenizer treats every character that is not part of a word as a space).

Tokens (`UnicodeTokenizer`, the default): rouge-score's own tokenizer keeps only a-z and 0-9, so a
Chinese, Greek or Russian summary identical to its reference scores 0. minipegx's keeps the letters
of every script: the text is lowercased, a token is a run of Unicode letters, combining marks and
digits (\\p{L}, \\p{M}, \\p{N}), except that the scripts written without spaces between words (Han,
Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) and symbols such as emoji (\\p{So}) give one token per
character, as the multilingual ROUGE variants do for Chinese and Japanese; Porter stemming applies to
tokens of a-z and 0-9 longer than 3 characters, as in rouge-score. On text of ASCII characters
(English) every token, and so every score, is rouge-score's own (the tests check it against
rouge-score). `tokenizer="rouge-score"` gives rouge-score's tokenizer itself. A reference with no
token at all scores 0 against any summary: evaluate_corpus warns with how many there are.

Each score is the mean over documents; its 95% interval is a percentile bootstrap over documents
(the same resampled documents for every metric, seeded, so a rerun prints the same interval).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings

import numpy as np

from ..errors import CorpusError, MiniPegxWarning, MissingDependencyError
from .files import check_not_reading, check_output_path, read_files, read_jsonl

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
BAND_EDGES = (0, 500, 1000, 2000, 4000, 8000, math.inf)   # document length in words
TOKENIZERS = ("unicode", "rouge-score")
MAX_RESAMPLES = 100_000                   # 100,000 resamples: intervals repeat to about 0.03 points
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
_BOOTSTRAP_CHUNK = 1 << 22                # resampled indices held at once (32 MiB of int64)

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


class UnicodeTokenizer:
    """ROUGE tokens in every script (this module's docstring); rouge-score's on ASCII text."""

    _pattern = None

    def __init__(self, use_stemmer=True):
        from nltk.stem import porter        # rouge-score's own stemmer (it depends on nltk, nltk on regex)

        self._stemmer = porter.PorterStemmer() if use_stemmer else None
        if UnicodeTokenizer._pattern is None:
            import regex

            one = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{So}"
            UnicodeTokenizer._pattern = regex.compile(rf"[{one}]|(?:(?![{one}])[\p{{L}}\p{{M}}\p{{N}}])+")

    def tokenize(self, text):
        tokens = self._pattern.findall(text.lower())
        if self._stemmer:                   # rouge-score: only words of more than 3 characters
            tokens = [self._stemmer.stem(t) if len(t) > 3 and _ASCII_WORD.match(t) else t for t in tokens]
        return tokens


_ASCII_WORD = re.compile(r"^[a-z0-9]+$")


def _scorer(tokenizer):
    try:
        from rouge_score import rouge_scorer, tokenizers
    except ImportError:
        raise MissingDependencyError("evaluate needs rouge-score: pip install 'minipegx[eval]'") from None
    if tokenizer not in TOKENIZERS:
        raise CorpusError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}")
    tok = UnicodeTokenizer() if tokenizer == "unicode" else tokenizers.DefaultTokenizer(use_stemmer=True)
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True, tokenizer=tok), tok


def rouge_scores(predictions, references, tokenizer="unicode") -> dict:
    """{rouge type: [n] F1 per document}, rouge-score with stemming, sentences on lines for ROUGE-Lsum.
    tokenizer: "unicode" (the default: every script, rouge-score's tokens on ASCII) or "rouge-score"."""
    scorer, _ = _scorer(tokenizer)
    out = {t: np.zeros(len(predictions)) for t in ROUGE_TYPES}
    for i, (p, r) in enumerate(zip(predictions, references)):
        s = scorer.score("\n".join(split_sentences(r)), "\n".join(split_sentences(p)))
        for t in ROUGE_TYPES:
            out[t][i] = s[t].fmeasure
    return out


def references_without_tokens(references, tokenizer="unicode") -> int:
    """How many references have no token under `tokenizer` (each scores 0 against any summary)."""
    _, tok = _scorer(tokenizer)
    return sum(not tok.tokenize(r) for r in references)


def check_resamples(n_resamples) -> int:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or not (
            1 <= n_resamples <= MAX_RESAMPLES):
        raise CorpusError(f"n_resamples must be a whole number from 1 to {MAX_RESAMPLES:,}, got {n_resamples!r:.40}")
    return int(n_resamples)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CorpusError(f"seed must be a whole number >= 0, got {seed!r:.40}")
    return int(seed)


def bootstrap(scores: dict, n_resamples=1000, seed=0, confidence=0.95) -> dict:
    """{type: {"f": mean, "low": ..., "high": ...}}: percentile bootstrap of the mean over documents.
    The resampled indices are drawn in chunks of rows (the same numbers as one draw: NumPy's generator
    fills int64 arrays value by value), so memory stays at _BOOTSTRAP_CHUNK indices for any size."""
    n_resamples, seed = check_resamples(n_resamples), check_seed(seed)
    n = len(next(iter(scores.values())))
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOTSTRAP_CHUNK // max(n, 1))
    means = {t: np.empty(n_resamples) for t in scores}                          # [resamples]
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))                           # [rows, n]
        for t, v in scores.items():
            means[t][start:stop] = v[idx].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    out = {}
    for t, v in scores.items():
        low, high = np.percentile(means[t], [tail, 100 - tail])
        out[t] = {"f": float(v.mean()), "low": float(low), "high": float(high)}
    return out


def band_name(lo, hi) -> str:
    return f"{lo:,}+ words" if math.isinf(hi) else f"{lo:,}-{hi:,} words"


def evaluate_corpus(predictions, references, *, id_field="id", prediction_field="summary",
                    reference_field="summary", text_field="text", bands=BAND_EDGES, n_resamples=1000, seed=0,
                    allow_missing=False, tokenizer="unicode", json_path=None, plot_path=None) -> dict:
    """ROUGE of the predictions file against the references file, overall and per band of document length.

    Records are joined on `id_field`. A reference without a prediction is an error (a partial run would
    otherwise score only its easy part) unless allow_missing. Bands need the document (`text_field`)
    in the references file; its length is counted in words. tokenizer: "unicode" (every script) or
    "rouge-score" (a-z and 0-9 only); references with no token under it are counted in the report's
    "empty_references" and announced with a MiniPegxWarning. json_path, plot_path: where the caller will
    write the report and the plot, checked here before any work (not a folder, not an input file).
    Returns a JSON-ready dict."""
    n_resamples, seed = check_resamples(n_resamples), check_seed(seed)
    _scorer(tokenizer)                                  # a bad name or a missing package before reading
    if json_path is not None:
        check_output_path(json_path, "--json")
    if plot_path is not None:
        check_plot_path(plot_path)
    reads = read_files([predictions, references])
    for flag, path in (("--json", json_path), ("--plot", plot_path)):
        if path is not None:                            # never over the files it reads
            check_not_reading(path, reads, flag)
    advice = "fix or remove that line"
    preds, _ = read_jsonl(predictions, id_field, (prediction_field,), skip_advice=advice)
    refs, _ = read_jsonl(references, id_field, (reference_field,), optional=(text_field,), skip_advice=advice)
    pred = {r.id: r.fields[prediction_field] for r in preds}
    missing = [r.id for r in refs if r.id not in pred]
    if missing and not allow_missing:
        raise CorpusError(f"{len(missing)} of {len(refs)} references have no prediction in {predictions} "
                          f"(first: {missing[:3]}); finish the run, or pass --allow-missing")
    refs = [r for r in refs if r.id in pred]
    if not refs:
        raise CorpusError(f"no id of {predictions} is in {references}; check --id-field")
    texts = [r.fields[reference_field] for r in refs]
    scores = rouge_scores([pred[r.id] for r in refs], texts, tokenizer)
    empty = references_without_tokens(texts, tokenizer)
    if empty:
        hint = " (text in a script other than Latin? --tokenizer unicode keeps every script)" \
            if tokenizer == "rouge-score" else ""
        warnings.warn(f"{empty} of {len(refs)} references have no token under the {tokenizer!r} tokenizer, so "
                      f"they score 0 whatever the summary says{hint}", MiniPegxWarning, stacklevel=2)
    report = {
        "predictions": str(predictions), "references": str(references), "documents": len(refs),
        "missing": len(missing), "extra": len(pred.keys() - {r.id for r in refs} - set(missing)),
        "empty_references": empty,
        "settings": {"rouge_types": list(ROUGE_TYPES), "use_stemmer": True, "score": "F1", "tokenizer": tokenizer,
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


def check_plot_path(path) -> str:
    """The --plot path, refused unless it ends in a format matplotlib writes and is not a folder
    (or a FIFO, a device) and its folder exists: checked before any scoring."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in PLOT_SUFFIXES:
        raise CorpusError(f"--plot {path}: name a {', '.join(PLOT_SUFFIXES)} file (the suffix picks the format)")
    check_output_path(path, "--plot")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CorpusError(f"--plot {path}: no folder {folder}")
    return path


def plot_report(report, path) -> None:
    """Bars of each ROUGE type per length band (all documents first), with the 95% intervals."""
    check_plot_path(path)
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
    check_output_path(path, "--json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
