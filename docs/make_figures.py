"""Make the figures of the docs (docs/img/*.png) with minipegx.viz. Deterministic: fixed configs,
fixed seeds, no timings (unless --measure), PNG metadata without version stamps.

    python docs/make_figures.py            # writes docs/img/{attention_pattern,attention_probs,influence,cost}.png
    python docs/make_figures.py --measure  # cost.png also times model.encode (machine-dependent)

attention_probs.png uses the first (short) bundled demo model on its example document when
minipegx/data/demo exists, else a small random model on random ids (the picture then shows the
structure, not learned behaviour).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import minipegx  # noqa: E402
from minipegx import viz  # noqa: E402
from minipegx.checkpoint import expected_shapes, unflatten_params  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "img")

# Small enough to see every cell, large enough to show blocks, stagger, globals and padding.
ILLUSTRATION = minipegx.PegasusXConfig(d_model=16, encoder_layers=4, encoder_attention_heads=2, encoder_ffn_dim=32,
                                       block_size=8, num_global_tokens=3, stagger_local_blocks=True)
# google/pegasus-x-base's shape, for the cost model.
BASE = minipegx.PegasusXConfig(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072,
                               decoder_layers=12, decoder_attention_heads=12, decoder_ffn_dim=3072,
                               block_size=512, num_global_tokens=128, activation_function="relu")


def save(fig, name):
    path = os.path.join(OUT, name)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    print(f"{path}: {os.path.getsize(path) // 1024} KiB")


def random_model(seed=0):
    """A random PEGASUS-X (K 16, G 4, 3 layers), q/k weights large enough for peaked attention."""
    cfg = minipegx.PegasusXConfig(vocab_size=200, d_model=32, encoder_layers=3, decoder_layers=1,
                                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                  decoder_ffn_dim=64, block_size=16, num_global_tokens=4, activation_function="relu")
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in expected_shapes(cfg).items():
        std = 0.5 if ("q_proj" in name or "k_proj" in name) else 0.2
        flat[name] = np.ones(shape, np.float32) if name.endswith("norm.weight") else \
            rng.normal(0, std, shape).astype(np.float32)
    return minipegx.PegasusX(cfg, unflatten_params(flat))


def model_and_input():
    """(model, ids [1, T], tokens or None, description)."""
    demo = minipegx.demo_model_path("short")
    if os.path.isfile(os.path.join(demo, "config.json")):
        model = minipegx.from_pretrained(demo)
        tok = minipegx.Tokenizer.from_pretrained(demo)
        ids = np.asarray(tok([minipegx.example_document("short")], return_tensors="np")["input_ids"])
        return model, ids, tok.convert_ids_to_tokens(ids[0]), "the demo model on the example document"
    model = random_model()
    ids = np.random.default_rng(1).integers(5, model.config.vocab_size, size=(1, 300))
    return model, ids, None, "a random model on random ids (no demo model bundled yet)"


def attention_pattern_png():
    fig = Figure(figsize=(15, 5.8), layout="constrained")
    axes = fig.subplots(1, 3)
    T = 37
    mask = np.r_[np.ones(T - 5, int), np.zeros(5, int)]           # the last 5 tokens are padding
    viz.plot_attention_pattern(ILLUSTRATION, T, layer=0, attention_mask=mask, ax=axes[0])
    viz.plot_attention_pattern(ILLUSTRATION, T, layer=1, attention_mask=mask, ax=axes[1])
    viz.plot_attention_pattern(ILLUSTRATION, T, layer=None, attention_mask=mask, ax=axes[2])
    fig.suptitle("attention_pattern: block-local, staggered (odd layers) and global attention; "
                 "the last 5 tokens are padding")
    save(fig, "attention_pattern.png")


def attention_probs_png():
    model, ids, tokens, what = model_and_input()
    out = model.encode(ids, output_attentions=True)
    T = ids.shape[1]
    fig = Figure(figsize=(14, 6), layout="constrained")
    axes = fig.subplots(1, 2)
    G, pixels = model.config.num_global_tokens, 400
    viz.plot_attention(out, model.config, 1, max_pixels=pixels, ax=axes[0])
    zoom = min(T, 3 * model.config.block_size)
    viz.plot_attention(out, model.config, 1, region=(0, zoom), ax=axes[1], log=True)
    pooled = f", {-(-(G + T) // pixels)}x{-(-(G + T) // pixels)} tokens per pixel (max)" if G + T > pixels else ""
    axes[0].set_title(axes[0].get_title() + f"\nall {T} tokens{pooled}", fontsize=10)
    axes[1].set_title(axes[1].get_title() + f"\ntokens 0-{zoom - 1}, log colours", fontsize=10)
    fig.suptitle(f"plot_attention: real attention probabilities of {what}")
    save(fig, "attention_probs.png")


def influence_png():
    cfg = ILLUSTRATION.replace(encoder_layers=12, block_size=16)
    fig = Figure(figsize=(15, 5), layout="constrained")
    axes = fig.subplots(1, 3)
    viz.plot_influence(cfg, 192, use_global=False, stagger=False, ax=axes[0])
    viz.plot_influence(cfg, 192, use_global=False, stagger=True, ax=axes[1])
    viz.plot_influence(cfg, 192, use_global=True, stagger=True, ax=axes[2])
    fig.suptitle("influence_hops: after how many layers token j can influence token i")
    save(fig, "influence.png")


def cost_png(measure):
    lengths = [512 * 2 ** i for i in range(6)]                   # 512 .. 16384
    if not measure:
        save(viz.plot_cost(BASE, lengths), "cost.png")
        return
    model, ids, _, _ = model_and_input()
    measured = {}
    for T in (256, 512, 1024, 2048):
        x = np.resize(ids[0], (1, T))
        model.encode(x)                                          # warm-up
        runs = []
        for _ in range(3):                                       # best of 3: the least disturbed run
            t0 = time.perf_counter()
            model.encode(x)
            runs.append(time.perf_counter() - t0)
        measured[T] = min(runs)
    save(viz.plot_cost(model.config, [256 * 2 ** i for i in range(7)], measured=measured), "cost.png")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measure", action="store_true", help="time model.encode for cost.png (not deterministic)")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    attention_pattern_png()
    attention_probs_png()
    influence_png()
    cost_png(args.measure)


if __name__ == "__main__":
    main()
