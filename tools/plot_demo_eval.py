"""Figures of the demo model's held-out evaluation and of its ablations (a tool, not the runtime).

    python -m tools.plot_demo_eval RESULTS.json [RESULTS.json ...] --labels "demo model" ... --out docs/img/X.png
    python -m tools.plot_demo_eval RESULTS.json ... --labels ... --markdown      # the docs' table

Each RESULTS.json is what tools/eval_demo.py writes. The figure draws exact match per length band (x: the
band's median real length in tokens), one line per file, with the 95% Wilson interval as error bars.
Deterministic: PNG metadata without version stamps.
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402


def band_points(results: dict, decoding: str):
    """[(median tokens, exact match, (low, high), band name)] of one eval JSON, in band order."""
    rows = [r for r in results["results"] if r["decoding"] == decoding]
    return [(r["tokens_median"], r["exact_match"], r["exact_match_ci95"], r["band"]) for r in rows]


def plot(files: list[str], labels: list[str], out: str, decoding: str = "beam", title: str = "") -> None:
    fig = Figure(figsize=(7.5, 4.2), dpi=120)
    ax = fig.add_subplot()
    for path, label in zip(files, labels):
        with open(path) as f:
            pts = band_points(json.load(f), decoding)
        x = [p[0] for p in pts]
        y = [100 * p[1] for p in pts]
        err = [[100 * (p[1] - p[2][0]) for p in pts], [100 * (p[2][1] - p[1]) for p in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks([600, 2500, 6000, 10000, 14000], ["0.3-1k", "1-4k", "4-8k", "8-12k", "12-16k"])
    ax.set_xlabel("document length (band; points at the band's median length in tokens)")
    ax.set_ylabel("exact match, % (95% Wilson interval)")
    ax.set_ylim(-3, 103)
    ax.axhline(90, color="grey", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or f"held-out documents, {decoding} decoding", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, metadata={"Software": None})


def markdown_table(files: list[str], labels: list[str], decoding: str = "beam") -> str:
    """Exact match per band, one row per file: "label | 91.0% (88.2-93.2) | ..." (the docs' tables)."""
    tables = []
    for path in files:
        with open(path) as f:
            tables.append({r["band"]: r for r in json.load(f)["results"] if r["decoding"] == decoding})
    bands = list(max(tables, key=len))
    lines = ["| model | " + " | ".join(bands) + " |", "|---|" + "---|" * len(bands)]
    for pts, label in zip(tables, labels):
        cells = [f"{100 * pts[b]['exact_match']:.1f}% ({100 * pts[b]['exact_match_ci95'][0]:.1f}-"
                 f"{100 * pts[b]['exact_match_ci95'][1]:.1f})" if b in pts else "not run" for b in bands]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--labels", nargs="+")
    ap.add_argument("--decoding", default="beam")
    ap.add_argument("--title", default="")
    ap.add_argument("--out", help="PNG to write")
    ap.add_argument("--markdown", action="store_true", help="print the table of exact match per band")
    args = ap.parse_args(argv)
    if args.out:
        plot(args.files, args.labels or args.files, args.out, args.decoding, args.title)
    if args.markdown:
        print(markdown_table(args.files, args.labels or args.files, args.decoding))


if __name__ == "__main__":
    main()
