"""Make the real-scale figures and page screenshots of docs/explore.md (docs/img/explore_*.png).

    PYTHONPATH=. python docs/make_explore_figures.py              # figures + screenshots
    PYTHONPATH=. python docs/make_explore_figures.py --no-browser # figures only (no chromium needed)

explore_receptive_field_base.png needs no weights: the structure at google/pegasus-x-base's shape
(K=512, G=128, 12 staggered layers) for 16,384 tokens. The others use the first (short) bundled demo
model, demo_model_path("short"), on a 16k-token document of its task (tools/demo_data.make_named_example,
seed 16). Deterministic.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure

import minipegx
from minipegx import explore
from minipegx import views as V
from tools.demo_data import make_named_example

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "img")
BASE = minipegx.PegasusXConfig(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072,
                               block_size=512, num_global_tokens=128, activation_function="relu")
STRUCTURE = ListedColormap(["#ffffff", "#cfe0f7", "#3a6fc4"])
PROBS = dict(cmap="magma_r", norm=LogNorm(1e-5, 1))


def document_16k(tok, limit=explore.MAX_TOKENS):
    """A demo-task document of just under `limit` tokens (sentences cut from the end to fit)."""
    doc, _ = make_named_example(random.Random(16), 16300)
    while len(tok.encode(doc)) > limit:
        doc = doc[:doc.rstrip().rindex(". ") + 1]
    return doc


def pooled(rows, cols=1600):
    """[R, T] -> [R, cols]: the max over each column's tokens (a 16k-token row fits a figure)."""
    return explore.pool_max(np.asarray(rows, float), cols)[1]


def blocks(ax, cfg, layer, lo, hi, y0, y1, **kw):
    starts = np.arange(-(cfg.block_size // 2), hi + cfg.block_size, cfg.block_size) \
        if cfg.is_staggered(layer) else np.arange(0, hi + cfg.block_size, cfg.block_size)
    for b in starts[(starts > lo) & (starts < hi)]:
        ax.plot([b - 0.5, b - 0.5], [y0, y1], color="k", lw=kw.get("lw", 0.8))


def receptive_field_base(path):
    cfg, T, q = BASE, 16384, 8000
    codes = V.reach_structure(cfg, T, q)                                   # [13, T]
    L = cfg.encoder_layers
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[1.3, 1])
    lo, hi = q - 7 * 512, q + 7 * 512
    top.imshow(codes[::-1, lo:hi], cmap=STRUCTURE, vmin=0, vmax=2, aspect="auto", interpolation="nearest",
               extent=(lo - 0.5, hi - 0.5, -0.5, L + 0.5))
    for r in range(1, L + 1):                                              # row r was made by layer r-1
        blocks(top, cfg, r - 1, lo, hi, r - 0.5, r + 0.5)
    top.axvline(q, color="#d62728", lw=1.2)
    top.set_yticks(range(L + 1), ["input"] + [f"after L{i}{' (stag.)' if cfg.is_staggered(i) else ''}"
                                              for i in range(L)], fontsize=7)
    top.set_title(f"what token {q}'s state can depend on after each layer, tokens {lo}-{hi}: dark = through "
                  "local blocks alone (wider by K per layer),\nlight = only through a global token; black lines: "
                  "the blocks of the layer that made the row", fontsize=9)
    z = pooled(codes, 1600)
    bottom.imshow(z[::-1], cmap=STRUCTURE, vmin=0, vmax=2, aspect="auto", interpolation="nearest",
                  extent=(0, T, -0.5, L + 0.5))
    bottom.axvline(q, color="#d62728", lw=1)
    bottom.set_yticks(range(L + 1), ["input"] + [f"after L{i}" for i in range(L)], fontsize=7)
    bottom.set_xlabel("token position (whole document, max over 11 tokens per column)")
    fig.suptitle("Receptive field from the structure alone, pegasus-x-base shape: K=512, G=128, 12 layers, "
                 "staggered, T=16,384", fontsize=11)
    fig.savefig(path, dpi=110, metadata={"Software": None})


def weighted_views(doc, q, layer, path):
    """Rollout, attention per layer and the global tokens' reads for one token of the 16k document."""
    layers, cfg, T = doc.views.layers, doc.views.config, len(doc.tokens)
    G, L = cfg.num_global_tokens, len(layers)
    fig = Figure(figsize=(12, 9), layout="constrained")
    axes = fig.subplots(4, 1, height_ratios=[1, 1, 1, 2.2])
    z = pooled(V.reach_weighted(layers, q)[:, G:])
    axes[0].imshow(np.ma.masked_equal(z[::-1], 0), aspect="auto", interpolation="nearest", extent=(0, T, -0.5, L + 0.5), **PROBS)
    axes[0].set_yticks(range(L + 1), ["input"] + [f"after L{i}" for i in range(L)], fontsize=7)
    axes[0].set_title(f"weighted reach of token {q} ({doc.tokens[q].strip()!r}): attention rollout, each row sums to 1",
                      fontsize=9)
    z = pooled([V.token_attention(a, q)[1] for a in layers])
    axes[1].imshow(np.ma.masked_equal(z[::-1], 0), aspect="auto", interpolation="nearest", extent=(0, T, -0.5, L - 0.5), **PROBS)
    axes[1].set_yticks(range(L), [f"L{i}" for i in reversed(range(L))], fontsize=7)
    axes[1].set_title("what the token attends to in each layer (its block only; max per column)", fontsize=9)
    lo, hi = q - 192, q + 192
    rows = np.array([V.token_attention(a, q)[1][lo:hi] for a in layers])
    axes[2].imshow(np.ma.masked_equal(rows[::-1], 0), aspect="auto", interpolation="nearest",
                   extent=(lo - 0.5, hi - 0.5, -0.5, L - 0.5), **PROBS)
    for i in range(L):
        blocks(axes[2], cfg, i, lo, hi, L - 1 - i - 0.5, L - 1 - i + 0.5, lw=1.2)
    axes[2].axvline(q, color="#1f77b4", lw=1)
    axes[2].set_yticks(range(L), [f"L{i}" for i in reversed(range(L))], fontsize=7)
    axes[2].set_title(f"the same, tokens {lo}-{hi}: blocks of K={cfg.block_size} (layer 1 shifted by half a block)",
                      fontsize=9)
    z = pooled(V.global_reads(layers[layer])[1])
    im = axes[3].imshow(np.ma.masked_equal(z, 0), aspect="auto", interpolation="nearest", extent=(0, T, G - 0.5, -0.5), **PROBS)
    for a, b in doc.spans:                                                 # ~14 tokens of 16k: drawn wider
        axes[3].axvspan(a - 30, b + 30, color="#2ca02c", alpha=0.25, lw=0, zorder=3)
        axes[3].annotate("key sentence", ((a + b) / 2, -0.5), fontsize=7, ha="center", va="bottom",
                         color="#2ca02c", annotation_clip=False)
    axes[3].set_ylabel("global token")
    axes[3].set_title(f"what each global token reads in layer {layer} (green: the key sentences, widened to show)",
                      fontsize=9, pad=12)
    axes[3].set_xlabel("token position")
    fig.colorbar(im, ax=axes, shrink=0.5, label="probability (log)")
    fig.suptitle(f"The demo model on a {T}-token document (K={cfg.block_size}, G={G}, {L} layers)", fontsize=11)
    fig.savefig(path, dpi=110, metadata={"Software": None})


def local_vs_full(doc, q, path):
    cfg, T = doc.views.config, len(doc.tokens)
    G, K = cfg.num_global_tokens, cfg.block_size
    fig = Figure(figsize=(12, 6), layout="constrained")
    axes = fig.subplots(len(doc.views.layers), 1, sharex=True)
    lo, hi = q - 2 * K, q + 2 * K
    pos = np.arange(lo, hi)
    for layer, ax in enumerate(axes):
        qs, ks = doc.qk(layer)
        full = V.full_attention_row(qs, ks, q, G)
        local = np.concatenate(V.token_attention(doc.views.layers[layer], q))
        ax.semilogy(pos, full[G + pos], color="#888", lw=0.8, label="full attention: softmax over all G+T keys")
        ax.semilogy(pos, np.where(local[G + pos] > 0, local[G + pos], np.nan), color="#d62728", lw=1,
                    label="block-local (the model's own probabilities)")
        blocks(ax, cfg, layer, lo, hi, 1e-7, 1, lw=0.6)
        ax.axvline(q, color="#1f77b4", lw=1)
        ax.set_ylim(1e-6, 1)
        ax.set_ylabel(f"L{layer}", fontsize=8)
        ax.set_title(f"layer {layer}: global keys hold {local[:G].sum():.0%} (local) vs {full[:G].sum():.0%} (full); "
                     f"keys outside the block hold {1 - full[:G].sum() - full[G:][V.local_keys(cfg, layer, T, q)[G:]].sum():.0%} "
                     "of full attention", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("token position")
    fig.suptitle(f"Block-local against full attention on the same weights, token {q}, demo model, T={T}", fontsize=11)
    fig.savefig(path, dpi=110, metadata={"Software": None})


def screenshots(page, out_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1250", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium")
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        d.get("file://" + page)
        d.execute_script("explore.select(9000)")
        d.save_screenshot(os.path.join(out_dir, "explore_page.png"))
        d.find_elements(By.CSS_SELECTOR, "#summary span.s")[0].click()
        d.save_screenshot(os.path.join(out_dir, "explore_page_summary.png"))
    finally:
        d.quit()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    receptive_field_base(os.path.join(OUT, "explore_receptive_field_base.png"))
    short = minipegx.demo_model_path("short")   # the figures' model: the first demo model
    tok = minipegx.Tokenizer.from_pretrained(short)
    text = document_16k(tok)
    doc = explore.document(text, short)
    q = doc.spans[2][0] + 5 if len(doc.spans) > 2 else len(doc.tokens) // 2
    weighted_views(doc, q, 1, os.path.join(OUT, "explore_views_16k.png"))
    local_vs_full(doc, q, os.path.join(OUT, "explore_local_vs_full_16k.png"))
    if not args.no_browser:
        with tempfile.TemporaryDirectory() as tmp:
            page = os.path.join(tmp, "page.html")
            data = explore.build(text, short, title="minipegx explore: a 16k-token demo document")
            size = explore.write_page(data, page)
            print(f"page: {len(doc.tokens)} tokens, {size / 1e6:.1f} MB")
            screenshots(page, OUT)


if __name__ == "__main__":
    main()
