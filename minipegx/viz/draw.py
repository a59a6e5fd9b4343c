"""Drawing: matplotlib pictures of the arrays that patterns.py, probs.py and minipegx.cost compute.

Every plot_* function returns a matplotlib Figure, takes an `ax=` to draw into a figure of your own,
and never calls plt.show(): the figures are built without pyplot, so no global figure state piles up.
matplotlib is imported when a plot is first drawn (`pip install 'minipegx[viz]'`). In a notebook, run
`%matplotlib inline` (or import pyplot) once and a returned figure shows as the cell's value.

The pictures' data coordinates are token positions: token t is drawn at t, and the G global tokens
just before the first token shown, so matplotlib's own locators place the ticks.
"""

from __future__ import annotations

import numpy as np

from ..cost import encoder_cost
from ..errors import BackendError, InputError
from .patterns import CATEGORIES, check_length, influence_tiles, pattern_tiles
from .probs import attention_tiles, cross_attention_map

# A colour per pattern category (patterns.CATEGORIES, same order; white: attention impossible).
CATEGORY_COLOURS = ("#ffffff", "#c7c7c7", "#1f77b4", "#ff7f0e", "#9467bd", "#d62728")


def _mpl():
    """matplotlib, imported on first use (so the computations need only NumPy), or a BackendError that
    says how to install it."""
    try:
        import matplotlib
        import matplotlib.colors
        import matplotlib.figure
        import matplotlib.patches
        import matplotlib.ticker
    except ImportError as e:
        raise BackendError("minipegx.viz plots need matplotlib, which is not installed: "
                           "pip install 'minipegx[viz]'") from e
    return matplotlib


def _figure(figsize, ax=None, ncols=1):
    """A new matplotlib Figure (not registered with pyplot) and its axes -- or ax and its own figure."""
    if ax is not None:
        return ax.figure, ax
    fig = _mpl().figure.Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(1, ncols)


def _image_extent(n_tiles, s, g, start):
    """imshow extent putting token t at t and the g global tokens shown at [start - g, start)."""
    x0 = start - g
    return (x0, x0 + n_tiles * s, x0 + n_tiles * s, x0)


def _position_axes(ax, n, g, start, s, labels=None, block_size=None):
    """Label both axes of a picture of n positions (g globals, then tokens from `start`), tile side s.
    Few enough cells: one label per cell. Else matplotlib places the ticks: at block borders when 2-10
    blocks are shown (MultipleLocator), at round token positions otherwise (MaxNLocator); a tick among
    the globals reads g0, g1, ..."""
    ticker = _mpl().ticker
    if labels is not None and s == 1 and n <= 80:
        ticks = start - g + np.arange(n) + 0.5
        ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
        ax.set_yticks(ticks, labels, fontsize=7)
    else:
        blocks = (n - g) / block_size if block_size else 0
        fmt = ticker.FuncFormatter(lambda x, _: f"g{int(round(x - start + g))}" if x < start else f"{int(round(x))}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(ticker.MultipleLocator(block_size) if 2 <= blocks <= 10
                                   else ticker.MaxNLocator(nbins=8, steps=[1, 2, 5, 10], integer=True))
            axis.set_major_formatter(fmt)
            axis.set_tick_params(labelsize=8)
    if 0 < g < n:  # a thin line between the global tokens and the tokens
        ax.axhline(start, color="k", lw=0.6)
        ax.axvline(start, color="k", lw=0.6)
    ax.set_xlabel("key (globals first, then token position)")
    ax.set_ylabel("query")


def plot_attention_pattern(config, length, layer=None, attention_mask=None, region=None, max_pixels=1000,
                           legend=True, ax=None):
    """Draw attention_pattern: one layer (int) or the union over layers (None), coloured by why a cell
    is allowed -- global token, local block, staggered block, both -- and grey where padding hides it.
    Inputs longer than max_pixels are pooled (patterns.pattern_tiles: a pixel is the OR over its tile)."""
    mpl = _mpl()
    T = check_length(length)
    cat, idx, g, start, s = pattern_tiles(config, T, layer, attention_mask, region, max_pixels)
    n, m = len(idx), cat.shape[0]
    fig, ax = _figure((6.4, 6), ax)
    ax.imshow(cat, cmap=mpl.colors.ListedColormap(CATEGORY_COLOURS), vmin=0, vmax=len(CATEGORIES) - 1,
              interpolation="nearest", extent=_image_extent(m, s, g, start))
    _position_axes(ax, n, g, start, s, None, config.block_size)
    which = "all layers" if layer is None else \
        f"layer {layer % config.encoder_layers} ({'staggered' if config.is_staggered(layer % config.encoder_layers) else 'local'} blocks)"
    ax.set_title(f"who may attend whom, {which}\nK={config.block_size}, G={config.num_global_tokens}, T={T}"
                 + (f", {s}x{s} tokens per pixel" if s > 1 else ""), fontsize=10)
    if legend:
        present = sorted(set(np.unique(cat)) - {0})
        ax.legend(handles=[mpl.patches.Patch(facecolor=CATEGORY_COLOURS[i], label=CATEGORIES[i]) for i in present],
                  loc="lower left", bbox_to_anchor=(g / n + 0.02, 0.02), fontsize=8, framealpha=0.9)
    return fig


def plot_attention(attentions, config, layer, head=None, region=None, max_pixels=1000, length=None,
                   batch_index=0, pool="max", tokens=None, include_globals=True, log=False, ax=None):
    """Draw one encoder layer's real attention probabilities (a head, or the mean over heads).

    attentions: output of model(..., output_attentions=True) (or model.encode), its encoder_attentions,
    or one layer's dict (then `layer` says which layer it is, which decides the stagger).
    region=(start, stop): only those tokens (queries and keys; the global rows and columns stay unless
    include_globals=False). length: the number of input tokens; read from the output when it has
    one, else the padded length. Long inputs stay legible and small in memory: when more than
    max_pixels positions are shown, each pixel pools a tile of cells -- pool="max" (the strongest
    attention in the tile, so sparse structure shows) or "mean" (the tile's average) -- computed from
    the blocked tensors without building the dense matrix (probs.attention_tiles). tokens: labels when
    few enough to print. Colours: a square-root scale (PowerNorm, gamma 0.5) by default, so that a probability
    of 0.01 is a tenth of the way up the colour bar instead of a hundredth (a linear scale leaves everything
    but the few brightest cells pale); log=True: logarithmic colours (zeros blank), every order of magnitude
    alike. Cells where attention is impossible (exactly 0) stay white."""
    mpl = _mpl()
    img, idx, g, s, layer_i, T = attention_tiles(attentions, config, layer, head, region, max_pixels, length,
                                                 batch_index, pool, tokens, include_globals)
    start = int(idx[g]) - config.num_global_tokens if len(idx) > g else 0
    fig, ax = _figure((7, 6), ax)
    norm = mpl.colors.LogNorm(vmin=max(img[img > 0].min(initial=1.0), 1e-6), vmax=max(img.max(), 1e-6)) if log \
        else mpl.colors.PowerNorm(gamma=0.5, vmin=0, vmax=max(img.max(), 1e-6))
    cmap = mpl.colormaps["viridis" if log else "magma_r"].with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_equal(img, 0), cmap=cmap, norm=norm, interpolation="nearest",
                   extent=_image_extent(img.shape[0], s, g, start))  # white: attention impossible (exactly 0)
    scale = "log scale" if log else "square-root scale"
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"attention probability ({pool} over {s}x{s} tile, {scale})" if s > 1
                 else f"attention probability ({scale})")
    G = config.num_global_tokens
    labels = None if tokens is None else [f"<g{i}>" if i < G else str(tokens[i - G]) for i in idx]
    _position_axes(ax, len(idx), g, start, s, labels, config.block_size)
    ax.set_title(f"encoder layer {layer_i} ({'staggered' if config.is_staggered(layer_i) else 'local'} blocks), "
                 f"{'mean over heads' if head is None else f'head {head}'}", fontsize=10)
    return fig


def plot_cross_attention(cross_attentions, source_tokens, summary_tokens, layer=-1, head=None,
                         top_k_sources=None, max_sources=80, batch_index=0, ax=None):
    """Cross-attention of the summary (rows) over the source tokens (columns), tokens as labels.
    Arguments as probs.cross_attention_map. Row s is the decoder input at step s: the start token, then
    the summary shifted right, so pass those tokens as summary_tokens. Colours on a square-root scale with
    a colour bar, as plot_attention's."""
    mpl = _mpl()
    a, labels, what, layer = cross_attention_map(cross_attentions, source_tokens, summary_tokens, layer, head,
                                                 top_k_sources, max_sources, batch_index)
    S, C = a.shape
    fig, ax = _figure((min(3 + 0.16 * C, 24), min(2 + 0.22 * S, 16)), ax)
    im = ax.imshow(a, cmap="magma_r", norm=mpl.colors.PowerNorm(gamma=0.5, vmin=0, vmax=max(float(a.max()), 1e-6)),
                   aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="attention mass (square-root scale)")
    ax.set_xticks(np.arange(C), labels, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(S), [str(t) for t in summary_tokens], fontsize=7)
    ax.set_xlabel(what)
    ax.set_ylabel("summary (decoder input)")
    ax.set_title(f"cross-attention, decoder layer {layer}, {'mean over heads' if head is None else f'head {head}'}",
                 fontsize=10)
    return fig


def plot_influence(config, length, use_global=True, stagger=None, num_layers=None, max_pixels=1000, ax=None):
    """Draw influence_hops: for each (token i, token j), after how many layers j can influence i.
    Long inputs are pooled by the minimum over each tile (the fastest route in it)."""
    mpl = _mpl()
    layers = config.encoder_layers if num_layers is None else int(num_layers)
    h, s, top = influence_tiles(config, length, use_global, stagger, num_layers, max_pixels)  # colours: counts present
    colours = mpl.colormaps["viridis"](np.linspace(0, 1, top + 1))
    cmap = mpl.colors.ListedColormap(list(colours) + [(0.85, 0.85, 0.85, 1.0)])  # grey: never
    fig, ax = _figure((6.4, 5.6), ax)
    im = ax.imshow(h, cmap=cmap, norm=mpl.colors.BoundaryNorm(np.arange(top + 3) - 0.5, top + 2),
                   interpolation="nearest", extent=_image_extent(h.shape[0], s, 0, 0))
    bar = fig.colorbar(im, ax=ax, shrink=0.8, ticks=np.arange(top + 2))
    bar.set_ticklabels([str(i) for i in range(top + 1)] + [f"never in {layers}"])
    bar.set_label("layers until j can influence i")
    ax.set_xlabel("source token j")
    ax.set_ylabel("influenced token i")
    st = config.stagger_local_blocks if stagger is None else bool(stagger)
    ax.set_title(f"{'with' if use_global else 'without'} global tokens, {'staggered' if st else 'unstaggered'} "
                 f"blocks\nK={config.block_size}, {layers} layers, T={check_length(length)}"
                 + (f", {s}x{s} per pixel" if s > 1 else ""), fontsize=10)
    return fig


def plot_cost(config, lengths, measured=None, batch=1, bytes_per_element=4):
    """FLOPs and memory of the encoder against input length, PEGASUS-X versus full attention (log-log),
    from minipegx.cost.encoder_cost.

    measured: {length: seconds} of real encoder runs (e.g. timings of model.encode). Then a third
    panel sets them against the model: the FLOP rate is fitted as total FLOPs / total seconds over the
    measured lengths, and the predicted seconds are FLOPs / rate, for PEGASUS-X and full attention."""
    _mpl()
    lengths = sorted(int(check_length(t)) for t in lengths)
    if not lengths:
        raise InputError("lengths must name at least one input length")
    px = [encoder_cost(config, t, "pegasus_x", batch, bytes_per_element) for t in lengths]
    full = [encoder_cost(config, t, "full", batch, bytes_per_element) for t in lengths]
    panels = 3 if measured else 2
    fig, axes = _figure((4.6 * panels, 4), ncols=panels)
    gib = 2 ** 30
    for ax, key, scale, what, title in ((axes[0], "flops", 1, "encoder FLOPs", "compute"),
                                        (axes[1], "score_bytes", gib, "GiB (largest layer)", "memory")):
        other = "attention_flops" if key == "flops" else "activation_bytes"
        part = "attention only" if key == "flops" else "activations"
        main = "" if key == "flops" else ", attention probs"
        ax.loglog(lengths, [c[key] / scale for c in px], "o-", color="C0", label=f"PEGASUS-X{main}")
        ax.loglog(lengths, [c[other] / scale for c in px], ":" if key == "flops" else "o--", color="C0",
                  label=f"PEGASUS-X, {part}")
        ax.loglog(lengths, [c[key] / scale for c in full], "s-", color="C3", label=f"full attention{main}")
        ax.loglog(lengths, [c[other] / scale for c in full], ":" if key == "flops" else "s--", color="C3",
                  label=f"full, {part}")
        ax.set(xlabel="input tokens", ylabel=what, title=title)
        ax.legend(fontsize=7)
        _length_ticks(ax, lengths)
    if measured:
        ms = sorted((check_length(t), float(sec)) for t, sec in measured.items())
        work = [encoder_cost(config, t, "pegasus_x", batch, bytes_per_element)["flops"] for t, _ in ms]
        rate = sum(work) / sum(sec for _, sec in ms)
        ax = axes[2]
        ax.loglog(lengths, [c["flops"] / rate for c in px], "-", color="C0", label="PEGASUS-X, predicted")
        ax.loglog(lengths, [c["flops"] / rate for c in full], "-", color="C3", label="full attention, predicted")
        ax.loglog([t for t, _ in ms], [sec for _, sec in ms], "kx", ms=8, label="measured")
        ax.set(xlabel="input tokens", ylabel="seconds", title=f"time at the measured rate, {rate / 1e9:.3g} GFLOP/s")
        ax.legend(fontsize=7)
        _length_ticks(ax, lengths)
    fig.suptitle(f"encoder cost: M={config.d_model}, {config.encoder_layers} layers, K={config.block_size}, "
                 f"G={config.num_global_tokens}, batch {batch}", fontsize=10)
    return fig


def _length_ticks(ax, lengths):
    """Label a log x axis with the lengths themselves (512, 1k, 2k, ...)."""
    ticker = _mpl().ticker
    ax.xaxis.set_major_locator(ticker.FixedLocator(lengths))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda t, _: f"{int(t) // 1024}k" if int(t) % 1024 == 0
                                                      else str(int(t))))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.xaxis.set_tick_params(labelsize=8)
