"""`minipegx explore`: one self-contained HTML page to click through a long document's attention.

    page = explore.build(minipegx.example_document())     # the default (long) demo model and its example
    explore.write_page(page, "page.html")                 # no server, no network: open it in a browser

The page holds the document's tokens, each encoder layer's probabilities in their blocked form
(views.py: tokens' rows [N, K, G+K], global rows [G, G+P], mean over heads), and the cross-attention
of a generated summary. Its JavaScript (data/explore.js) computes the same views as views.py for the
clicked token -- attention per layer, reach through the structure and weighted (rollout), global reads.

Size: a probability is stored as one byte on a log scale (16 steps per factor of 2, from 2^-16 to 1:
a relative error of at most 2.2%, and exactly 0 stays 0). When the rows do not fit the byte budget
(many layers, large blocks), each row keeps its largest entries with their uint16 positions (the
dropped mass is reported on the page). At 16k tokens with the demo model the rows are stored whole.
Shape legend: T tokens, P padded positions, N blocks, K block size, G global tokens, S decoder steps.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field

import numpy as np

from . import limits
from . import views as V
from .backend import to_numpy
from .errors import InputError

MAX_TOKENS = 16384
LEVELS_PER_OCTAVE = 16                     # byte code c > 0 stands for 2 ** ((c - 255) / 16)
ROW_BUDGET = 14_000_000                    # bytes for the tokens' rows, all layers
GLOBAL_BUDGET = 4_000_000                  # bytes for the global tokens' rows, all layers
HERE = os.path.dirname(os.path.abspath(__file__))


# ============================================================================== compact arrays
def quantize(p):
    """Probabilities -> uint8 on a log scale: 0 for p < 2^-15.9, else round(255 + 16 log2 p)."""
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore"):
        c = np.round(255 + LEVELS_PER_OCTAVE * np.log2(np.maximum(p, 1e-30)))
    return np.clip(c, 0, 255).astype(np.uint8)


def dequantize(c):
    """The inverse of quantize (to within 2.2%)."""
    c = np.asarray(c)
    return np.where(c > 0, 2.0 ** ((c.astype(np.float64) - 255) / LEVELS_PER_OCTAVE), 0.0)


def _b64(a):
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def pack_rows(rows, keep):
    """[R, C] probabilities -> {"width": C, "keep": k, "values": base64 uint8 [R, k] and, when k < C,
    "index": base64 uint16 [R, k] column of each kept value (the k largest of the row)}."""
    C = rows.shape[1]
    if keep >= C:
        return {"width": C, "keep": C, "values": _b64(quantize(rows))}
    if C > 65535:
        raise InputError(f"rows of {C} entries cannot be indexed with uint16; use at most 65,535 positions")
    idx = np.argpartition(-rows, keep - 1, axis=1)[:, :keep]               # [R, k]
    idx.sort(axis=1)
    vals = np.take_along_axis(rows, idx, axis=1)
    return {"width": C, "keep": int(keep), "values": _b64(quantize(vals)), "index": _b64(idx.astype(np.uint16)),
            "dropped": float(1 - vals.sum(axis=1).mean())}


def unpack_rows(packed, rows):
    """pack_rows' dict -> dense [R, C] float64 (dropped entries are 0)."""
    vals = dequantize(np.frombuffer(base64.b64decode(packed["values"]), np.uint8).reshape(rows, packed["keep"]))
    if "index" not in packed:
        return vals
    idx = np.frombuffer(base64.b64decode(packed["index"]), np.uint16).reshape(rows, packed["keep"])
    out = np.zeros((rows, packed["width"]))
    np.put_along_axis(out, idx.astype(np.int64), vals, axis=1)
    return out


# ============================================================================== text
def display_pieces(pieces):
    """Sentencepiece pieces -> the text each shows ("▁" is a space)."""
    return [p.replace("\u2581", " ") for p in pieces]


def sentence_spans(pieces):
    """Token spans [start, stop) of sentences: a sentence ends with a piece ending in . ! or ?"""
    spans, start = [], 0
    for i, p in enumerate(pieces):
        if re.search(r"[.!?]$", p) or i == len(pieces) - 1:
            spans.append((start, i + 1))
            start = i + 1
    return spans


def key_sentence_spans(pieces, frame=r"^\s*According to the \w+ ledger,"):
    """The demo tasks' key sentences as token spans [start, stop): the ledger entries of the long (default)
    model's roles task ("According to the town ledger, the miller carried 47 lanterns to Ostbridge.") and of
    the short model's named task ("According to the market ledger, Wendel returned 87 blankets to
    Ironmere."); tools/demo_data.py."""
    shown = display_pieces(pieces)
    return [(a, b) for a, b in sentence_spans(pieces) if re.match(frame, "".join(shown[a:b]))]


_STOPWORDS = {"the", "a", "an", "of", "to", "and", "in", "on", "at", "by", "for", "with", "from", "as", "is", "was"}


def start_token(pieces, key_spans):
    """(position, note): where the page opens and one plain sentence saying where to start.

    The first word of the first key sentence after its frame ("According to the temple ledger, the
    *fletcher* lent ...") that is not a small function word; without key sentences, the document's
    first such word. Never punctuation: a comma's attention teaches nothing."""
    shown = display_pieces(pieces)

    def word(t):
        w = shown[t].strip()
        return pieces[t].startswith("\u2581") and re.fullmatch(r"\w+", w) and w.lower() not in _STOPWORDS

    if key_spans:
        a, b = key_spans[0]
        comma = next((t for t in range(a, b) if shown[t].strip() == ","), a - 1)
        hit = next((t for t in range(comma + 1, b) if word(t)), None)
        if hit is not None:
            return hit, (f"Start here: the word \"{shown[hit].strip()}\" (red box) in the first underlined "
                         "sentence, a fact the summary needs. The charts show which words it looks at; "
                         "click any other word to compare.")
    hit = next((t for t in range(len(pieces)) if word(t)), 0)
    return hit, (f"Start here: the word \"{shown[hit].strip()}\" (red box). The charts show which words it "
                 "looks at; click any other word to compare.")


# ============================================================================== the page's data
def _keep(width, entries, rows, budget):
    """Entries kept per row: the whole row when all `entries` (bytes) fit the budget, else as many as
    fit with their uint16 index (3 bytes each) over all `rows`."""
    return width if entries <= budget else max(1, min(width, budget // (3 * rows)))


def encoder_data(views, row_budget=ROW_BUDGET, global_budget=GLOBAL_BUDGET):
    """EncoderViews -> the page's "layers": per layer its shift, blocks and packed rows."""
    cfg = views.config
    G, K = cfg.num_global_tokens, cfg.block_size
    local_rows = sum(a.local.shape[0] * K for a in views.layers)
    global_entries = sum(a.glob.size for a in views.layers)
    out = []
    for att in views.layers:
        width = att.glob.shape[1]
        out.append({"shift": att.shift, "blocks": att.local.shape[0],
                    "local": pack_rows(att.local.reshape(-1, G + K),
                                       _keep(G + K, local_rows * (G + K), local_rows, row_budget)),
                    "global": pack_rows(att.glob, _keep(width, global_entries, G * len(views.layers),
                                                        global_budget))})
    return out


def attention_bytes(cfg, T, itemsize=4):
    """Bytes the encoder's attention needs at once for one T-token document: one layer's scores and
    probabilities over all heads ([H, N, K, G+K] tokens' rows and [H, G, G+P] global rows, two copies),
    plus every layer's rows averaged over heads that the page keeps (float32). The blocks are counted
    with one extra for the staggered layers' half-block padding."""
    G, K, H, L = cfg.num_global_tokens, cfg.block_size, cfg.encoder_attention_heads, cfg.encoder_layers
    P = (-(-T // K) + 1) * K                                                   # padded positions
    rows = P * (G + K) + G * (G + P)                                           # entries of one head
    return itemsize * rows * (2 * H + L)


def check_attention_cost(cfg, T, limit=None):
    """Refuse, before anything is allocated, a model whose attention for this document would take
    more than the limit max_attention_bytes (limits.py): block_size 4096 with 4096 global tokens
    asks for gigabytes even for a 40-token document."""
    need = attention_bytes(cfg, T)
    bound = limits.current().max_attention_bytes if limit is None else limit
    if need > bound:
        raise InputError(
            f"this model's attention for a {T}-token document needs {need / 2**30:.1f} GiB (block_size "
            f"{cfg.block_size}, {cfg.num_global_tokens} global tokens, {cfg.encoder_attention_heads} heads, "
            f"{cfg.encoder_layers} layers); explore allows {bound / 2**30:.1f} GiB (limit max_attention_bytes). "
            f"If this machine has the memory, raise it: {limits.ENV}=\"max_attention_bytes=...\"")
    return need


def config_rows(cfg, width=200):
    """[[name, value as JSON text]] of the checkpoint's config.json (its unknown fields included), each
    value cut to `width` characters: the page's "model configuration" table."""
    rows = []
    for name, value in sorted(cfg.to_dict().items()):
        text = json.dumps(value, ensure_ascii=False, default=str)
        rows.append([str(name)[:width], text if len(text) <= width else text[:width - 1] + "\u2026"])
    return rows


def summary_data(model, tokenizer, ids, mask, generation_options=None):
    """Generate a summary and read its cross-attention (mean over decoder layers and heads): each
    generated token's row is the attention of the step that produced it -> (pieces [S], [S, T])."""
    gen = to_numpy(model.generate(ids, mask, **(generation_options or {})))[0]   # [1 + S]
    stop = np.flatnonzero(gen[1:] == model.config.eos_token_id)
    gen = gen[:2 + stop[0]] if len(stop) else gen
    enc = model.encode(ids, mask)
    out = model(attention_mask=mask, encoder_outputs=enc, decoder_input_ids=gen[None, :-1], output_attentions=True)
    cross = np.mean([to_numpy(c)[0].astype(np.float32).mean(axis=0) for c in out.cross_attentions], axis=0)
    return tokenizer.convert_ids_to_tokens(gen[1:].tolist()), cross               # [S], [S, T]


def build(text, model=None, tokenizer=None, title=None, summarize=True, generation_options=None,
          row_budget=ROW_BUDGET, global_budget=GLOBAL_BUDGET, key_frame=None):
    """Everything the page shows, as one JSON-able dict. model: a directory, a loaded PegasusX or None
    (the bundled default, long, demo model). Documents longer than 16,384 tokens are refused (cut them first)."""
    from .pipeline import load

    from .corpus.run import char_budget

    model, tokenizer = load(model, tokenizer)
    budget = char_budget(MAX_TOKENS, tokenizer)         # no token covers more: a longer text cannot fit
    if isinstance(text, str) and len(text) > budget:    # refused before tokenizing it (time and memory)
        raise InputError(f"the document has {len(text):,} characters; the page holds at most {MAX_TOKENS} tokens, "
                         f"which with this tokenizer cover at most {budget:,} characters: cut the text")
    batch = tokenizer([text], return_tensors="np")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    T = ids.shape[1]
    if T > MAX_TOKENS:
        raise InputError(f"the document has {T} tokens; the page holds at most {MAX_TOKENS}: cut the text")
    cfg = model.config
    check_attention_cost(cfg, T)
    pieces = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    views = V.encoder_views(model, ids, mask)
    key_spans = key_sentence_spans(pieces, *([key_frame] if key_frame else []))
    start, note = start_token(pieces, key_spans)
    data = {"title": title or "minipegx explore", "model": os.path.basename(str(model.path or "")) or "model",
            "T": T, "G": cfg.num_global_tokens, "K": cfg.block_size, "H": cfg.encoder_attention_heads,
            "layersCount": cfg.encoder_layers, "levels": LEVELS_PER_OCTAVE,
            "tokens": display_pieces(pieces), "sentences": sentence_spans(pieces),
            "keySpans": key_spans, "start": start, "startNote": note, "config": config_rows(cfg),
            "layers": encoder_data(views, row_budget, global_budget)}
    del views
    if summarize:
        summary, cross = summary_data(model, tokenizer, ids, mask, generation_options)
        data["summary"] = {"tokens": display_pieces(summary), "cross": pack_rows(cross, T)}
    return data


_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(data) -> str:
    """The one encoder for everything that enters the page: JSON that is safe inside a <script> element.

    OWASP's rule for JSON in a script: besides JSON's own escapes, write <, >, & and the line
    separators U+2028/U+2029 as \\u escapes. Then no file name, folder name, tokenizer piece or summary
    can close the element (</script>), open a comment the HTML parser treats specially (<!--<script>,
    which otherwise swallows the rest of the page), or end a CDATA section (]]>): the HTML parser sees
    none of <, > or &, and JSON.parse gives back the exact strings. Every non-ASCII character is escaped
    too (a lone surrogate from a tokenizer piece survives as \\udXXX); NaN is refused (JSON has none).
    The page's script puts strings into the document as text (textContent), never as HTML."""
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except ValueError as e:
        raise InputError(f"the page's data cannot be written as JSON: {e}") from None
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_ESCAPES[m.group()], text)


def render(data):
    """The page's HTML: the template with its CSS and JavaScript inlined and the data as JSON."""
    def read(name):
        with open(os.path.join(HERE, "data", name), encoding="utf-8") as f:
            return f.read()
    page, script = read("explore.html"), read("explore.js")
    # One replacement each, by position: a data string holding "/*SCRIPT*/" must not be expanded.
    head, tail = page.split("/*DATA*/")
    head = head.replace("/*SCRIPT*/", script)
    tail = tail.replace("/*SCRIPT*/", script)
    return head + script_json(data) + tail


def write_page(data, path):
    """Write the page; returns its size in bytes. The path must be a regular file or not exist yet
    (a FIFO would block the write until a reader comes, a folder cannot hold it)."""
    from .corpus.files import check_output_path

    check_output_path(path, "--out")
    html = render(data)
    with open(path, "w", encoding="utf-8") as f:
        f.write(html)
    return len(html.encode("utf-8"))


def run_cli(args, read_inputs, write=print):
    """`minipegx explore FILE --out page.html [--model DIR] [--no-summary]`. The page is never written over
    a file explore reads (the document, the model's files), nor to a FIFO or a folder: checked first."""
    from .corpus.files import check_not_reading, check_output_path, read_files
    from .model import demo_model_path

    check_output_path(args.out, "--out", InputError)
    model_dir = args.model if args.model is not None else demo_model_path()
    check_not_reading(args.out, read_files([None if args.file == "-" else args.file, model_dir]), "--out", InputError)
    (name, text), = read_inputs([args.file])
    title = "minipegx explore: " + (os.path.basename(name) if name != "-" else "stdin")
    data = build(text, args.model, title=title, summarize=not args.no_summary)
    size = write_page(data, args.out)
    write(f"wrote {args.out}: {data['T']} tokens, {size / 1e6:.1f} MB; open it in a browser (no server needed)")
    return 0


# ============================================================================== notebooks (plotly)
@dataclass
class Document:
    """One document ready for the notebook views: the model, its EncoderViews (with each layer's
    inputs, for the full-attention comparison), the tokens as shown and the annotated spans."""
    model: object
    views: object
    tokens: list
    spans: list
    _qk: dict = field(default_factory=dict)

    def qk(self, layer):
        """Queries and keys of every position of `layer`, computed once ([H, G+T, D] each)."""
        if layer not in self._qk:
            self._qk[layer] = V.project_qk(self.model, *self.views.inputs[layer], layer)
        return self._qk[layer]


def document(text, model=None, tokenizer=None, spans=None):
    """Encode `text` once and keep what the views need (per-layer blocked probabilities, mean over
    heads, and the layers' inputs). spans: token spans to shade; default, the demo task's key sentences."""
    from .pipeline import load

    model, tokenizer = load(model, tokenizer)
    ids = tokenizer([text], return_tensors="np")["input_ids"]
    check_attention_cost(model.config, ids.shape[1])
    pieces = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    return Document(model, V.encoder_views(model, ids, keep_inputs=True), display_pieces(pieces),
                    key_sentence_spans(pieces) if spans is None else list(spans))


def pool_max(rows, cols):
    """[R, T] -> max over each of `cols` runs of tokens -> (x: first token of each run, [R, cols'])."""
    T = rows.shape[1]
    s = -(-T // cols)
    padded = np.pad(rows, ((0, 0), (0, (-T) % s)))
    return np.arange(0, T, s), padded.reshape(rows.shape[0], -1, s).max(axis=2)


def _log(a):
    with np.errstate(divide="ignore"):
        return np.where(a > 0, np.log10(np.maximum(a, 1e-30)), np.nan)


def figure(doc, query, layer=0, cols=1500, window=None):
    """A plotly Figure of every view for token `query` (renders in static HTML, no kernel needed):
    receptive field (structure and rollout), attention per layer, the global tokens' reads in `layer`,
    and block-local against full attention in `layer` around the query (window tokens, default 4 K)."""
    go, make_subplots = _plotly()
    cfg, layers, T = doc.views.config, doc.views.layers, len(doc.tokens)
    G, K, L = cfg.num_global_tokens, cfg.block_size, len(layers)
    rows = ["receptive field: structure (2 local blocks, 1 through a global token)",
            "weighted reach (rollout), log10", "attention of the token per layer, log10",
            f"global tokens' reads, layer {layer}, log10", f"layer {layer}: block-local vs full attention"]
    fig = make_subplots(rows=5, cols=1, subplot_titles=rows, vertical_spacing=0.06,
                        row_heights=[0.14, 0.14, 0.14, 0.28, 0.3])
    names = ["input"] + [f"after L{i}" for i in range(L)]
    x, z = pool_max(V.reach_structure(cfg, T, query).astype(float), cols)
    fig.add_trace(go.Heatmap(x=x, y=names, z=z, colorscale=[[0, "#fff"], [0.5, "#cfe0f7"], [1, "#3a6fc4"]],
                             showscale=False, name="structure"), 1, 1)
    x, z = pool_max(V.reach_weighted(layers, query)[:, G:], cols)
    fig.add_trace(go.Heatmap(x=x, y=names, z=_log(z), zmin=-5, zmax=0, colorscale="Magma_r", showscale=False,
                             name="rollout"), 2, 1)
    x, z = pool_max(np.array([V.token_attention(a, query)[1] for a in layers]), cols)
    fig.add_trace(go.Heatmap(x=x, y=[f"L{i}" for i in range(L)], z=_log(z), zmin=-5, zmax=0,
                             colorscale="Magma_r", showscale=False, name="attention"), 3, 1)
    x, z = pool_max(V.global_reads(layers[layer])[1], cols)
    fig.add_trace(go.Heatmap(x=x, y=[f"g{g}" for g in range(G)], z=_log(z), zmin=-5, zmax=0,
                             colorscale="Magma_r", colorbar=dict(title="log10 p", len=0.5, y=0.75), name="global"),
                  4, 1)
    for a, b in doc.spans:
        fig.add_vrect(x0=a, x1=b, fillcolor="gold", opacity=0.35, line_width=1, line_color="gold", layer="above",
                      row=4, col=1)
    w = window or 4 * K
    lo, hi = max(0, query - w // 2), min(T, query + w // 2)
    q, k = doc.qk(layer)
    full = V.full_attention_row(q, k, query, G)
    local = np.concatenate(V.token_attention(layers[layer], query))
    pos = np.arange(lo, hi)
    text = [doc.tokens[t] for t in pos]
    fig.add_trace(go.Scatter(x=pos, y=full[G + pos], text=text, name="full attention (all keys)",
                             line=dict(color="#888")), 5, 1)
    fig.add_trace(go.Scatter(x=pos, y=np.where(local[G + pos] > 0, local[G + pos], np.nan), text=text,
                             name="block-local (the model)",
                             line=dict(color="#d62728")), 5, 1)
    fig.update_yaxes(type="log", row=5, col=1)
    for r in range(1, 5):
        fig.add_vline(x=query, line_color="#d62728", line_width=1, row=r, col=1)
    for b in V.block_geometry(cfg, layer, T)["starts"]:
        if lo <= b < hi:
            fig.add_vline(x=b - 0.5, line_color="#000", line_width=0.5, row=5, col=1)
    fig.update_layout(height=1000, title=f"token {query} {doc.tokens[query]!r} (T={T}, K={K}, G={G})",
                      legend=dict(orientation="h", y=-0.05))
    return fig


def widget(doc, query=0, layer=0):
    """Interactive: a token slider and a layer picker above figure()'s views; moving them updates the
    figure's traces in place (ipywidgets + plotly FigureWidget; the first figure is also what a static
    export shows)."""
    go, _ = _plotly()
    import ipywidgets as W

    fig = go.FigureWidget(figure(doc, query, layer))
    token = W.IntSlider(value=query, min=0, max=len(doc.tokens) - 1, description="token",
                        continuous_update=False, layout=W.Layout(width="90%"))
    which = W.Dropdown(options=list(range(len(doc.views.layers))), value=layer, description="layer")

    def update(_=None):
        new = figure(doc, token.value, which.value)
        with fig.batch_update():
            for old, fresh in zip(fig.data, new.data):
                old.update(fresh.to_plotly_json())
            fig.layout = new.layout
    token.observe(update, "value")
    which.observe(update, "value")
    return W.VBox([W.HBox([token, which]), fig])


def _plotly():
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError as e:
        from .errors import BackendError
        raise BackendError("the notebook views need plotly: pip install 'minipegx[viz]'") from e
    return go, make_subplots
