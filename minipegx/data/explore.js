// minipegx explore: the views of minipegx/views.py for the clicked token, in plain JavaScript.
// Data (minipegx/explore.py): per encoder layer, the tokens' rows [N*K, G+K] and the global rows
// [G, G+P] of the blocked probabilities (mean over heads), one byte per probability on a log scale.
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const T = D.T, G = D.G, K = D.K, L = D.layers.length;
const LUT = new Float64Array(256);
for (let c = 1; c < 256; c++) LUT[c] = Math.pow(2, (c - 255) / D.levels);

function bytes(s, Type) {
  const bin = atob(s), a = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i);
  return Type ? new Type(a.buffer) : a;
}
function unpack(p) {
  return {width: p.width, keep: p.keep, vals: bytes(p.values), idx: p.index ? bytes(p.index, Uint16Array) : null};
}
// Call f(column, probability) for each stored entry of row r.
function eachEntry(p, r, f) {
  const o = r * p.keep;
  if (p.idx) { for (let e = 0; e < p.keep; e++) { const c = p.vals[o + e]; if (c) f(p.idx[o + e], LUT[c]); } }
  else { for (let j = 0; j < p.keep; j++) { const c = p.vals[o + j]; if (c) f(j, LUT[c]); } }
}
const layers = D.layers.map(l => ({shift: l.shift, blocks: l.blocks, local: unpack(l.local), glob: unpack(l.global)}));
const blockOf = (l, t) => Math.floor((t + layers[l].shift) / K);

// ---------------------------------------------------------------- views (as views.py)
function tokenAttention(l, q) {            // [G+T]: globals, then tokens
  const out = new Float64Array(G + T), s = layers[l].shift, n = blockOf(l, q);
  eachEntry(layers[l].local, q + s, (j, v) => {
    if (j < G) out[j] = v; else { const t = n * K + j - G - s; if (t >= 0 && t < T) out[G + t] = v; }
  });
  return out;
}
function globalRow(l, g) {                 // [G+T]
  const out = new Float64Array(G + T), s = layers[l].shift;
  eachEntry(layers[l].glob, g, (c, v) => {
    if (c < G) out[c] = v; else { const t = c - G - s; if (t >= 0 && t < T) out[G + t] = v; }
  });
  return out;
}
function readThrough(l, rg, rt) {          // r A for one layer, only over rows with weight
  const s = layers[l].shift, og = new Float64Array(G), ot = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    const w = rt[t]; if (!w) continue;
    const n = blockOf(l, t);
    eachEntry(layers[l].local, t + s, (j, v) => {
      if (j < G) og[j] += w * v; else { const u = n * K + j - G - s; if (u >= 0 && u < T) ot[u] += w * v; }
    });
  }
  for (let g = 0; g < G; g++) {
    const w = rg[g]; if (!w) continue;
    eachEntry(layers[l].glob, g, (c, v) => {
      if (c < G) og[c] += w * v; else { const u = c - G - s; if (u >= 0 && u < T) ot[u] += w * v; }
    });
  }
  return [og, ot];
}
function reachWeighted(q, residual = 0.5) { // [L+1][G+T]: rollout rows, each sums to 1
  const rows = [];
  const first = new Float64Array(G + T); first[G + q] = 1; rows.push(first);
  for (let top = 1; top <= L; top++) {
    let rg = new Float64Array(G), rt = new Float64Array(T); rt[q] = 1;
    for (let l = top - 1; l >= 0; l--) {
      const [ag, at] = readThrough(l, rg, rt);
      for (let g = 0; g < G; g++) rg[g] = residual * rg[g] + (1 - residual) * ag[g];
      for (let t = 0; t < T; t++) rt[t] = residual * rt[t] + (1 - residual) * at[t];
    }
    const row = new Float64Array(G + T); row.set(rg, 0); row.set(rt, G); rows.push(row);
  }
  return rows;
}
function spread(l, set) {
  const hit = new Uint8Array(layers[l].blocks + 1), out = new Uint8Array(T);
  for (let t = 0; t < T; t++) if (set[t]) hit[blockOf(l, t)] = 1;
  for (let t = 0; t < T; t++) out[t] = hit[blockOf(l, t)];
  return out;
}
function reachStructure(q) {               // [L+1][T]: 2 local path, 1 only through a global, 0 none
  const rows = [];
  const first = new Int8Array(T); first[q] = 2; rows.push(first);
  for (let top = 1; top <= L; top++) {
    let local = new Uint8Array(T); local[q] = 1;
    let full = local.slice(), viaGlobal = false;
    for (let l = top - 1; l >= 0; l--) {
      local = spread(l, local);
      full = viaGlobal ? new Uint8Array(T).fill(1) : spread(l, full);
      viaGlobal = true;
    }
    const row = new Int8Array(T);
    for (let t = 0; t < T; t++) row[t] = local[t] ? 2 : full[t] ? 1 : 0;
    rows.push(row);
  }
  return rows;
}

// ---------------------------------------------------------------- drawing
const W = 900, DPR = window.devicePixelRatio || 1;
const perPixel = Math.max(1, Math.ceil(T / W));
const cols = Math.ceil(T / perPixel);
const RAMP = [[255, 255, 255], [252, 236, 160], [250, 160, 60], [210, 60, 70], [110, 20, 110], [20, 10, 40]];
function colour(v, lo = -14) {             // log colour, 0 -> white
  if (!(v > 0)) return "rgb(255,255,255)";
  const x = Math.min(1, Math.max(0, (Math.log2(v) - lo) / -lo)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i;
  const c = RAMP[i].map((a, k) => Math.round(a + f * (RAMP[i + 1][k] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
function setup(id, height, width = W) {
  const c = document.getElementById(id);
  c.width = width * DPR; c.height = height * DPR; c.style.width = width + "px"; c.style.height = height + "px";
  const ctx = c.getContext("2d"); ctx.setTransform(DPR, 0, 0, DPR, 0, 0);
  ctx.clearRect(0, 0, width, height); ctx.font = "10px system-ui";
  return [c, ctx];
}
function pooled(values, offset) {          // max over each pixel's tokens
  const out = new Float64Array(cols);
  for (let t = 0; t < T; t++) { const x = (t / perPixel) | 0, v = values[offset + t]; if (v > out[x]) out[x] = v; }
  return out;
}
function signature(arrays) {               // what the browser test reads back: a fingerprint of the data drawn
  let s = 0, n = 0;
  for (const a of arrays) for (let i = 0; i < a.length; i++) { s += a[i] * ((i % 97) + 1); n += a[i] > 0; }
  return s.toFixed(6) + ":" + n;
}
const LEFT = 56;                           // label margin
function shadeSpans(ctx, spans, y, h, x0 = LEFT) { // over the rows, at least 4 px wide so a sentence shows at 16k
  ctx.fillStyle = "rgba(44,160,44,0.3)";
  for (const [a, b] of spans) { const w = Math.max(4, (b - a) / perPixel); ctx.fillRect(x0 + (a + b) / 2 / perPixel - w / 2, y, w, h); }
}
function marker(ctx, q, h, x0 = LEFT) {
  ctx.fillStyle = "#d62728"; ctx.fillRect(x0 + q / perPixel - 0.5, 0, 1.5, h);
}

const state = {q: 0, layer: 0, mode: "attn", global: 0, summary: -1, pinned: -1};

function drawField(struct, weighted) {
  const win = Math.min(T, 6 * K), a = Math.max(0, Math.min(T - win, state.q - (win >> 1)));
  const rowH = 26, px = (W - LEFT) / win, H = (L + 1) * rowH + 14;
  const [c, ctx] = setup("field", H);
  c.dataset.window = a + ":" + (a + win);
  for (let l = 0; l <= L; l++) {
    const y = (L - l) * rowH, row = struct[l], w = weighted[l];
    let top = 0; for (let t = a; t < a + win; t++) top = Math.max(top, w[G + t]);
    for (let t = a; t < a + win; t++) {
      const x = LEFT + (t - a) * px;
      ctx.fillStyle = row[t] === 2 ? "#3a6fc4" : row[t] === 1 ? "#cfe0f7" : "#fff";
      ctx.fillRect(x, y + 2, Math.max(px, 0.6), rowH - 4);
      const v = w[G + t];
      if (v > 0) {                         // bar height: log share of the row's largest weight
        const hgt = Math.max(0, 1 + Math.log2(v / top) / 10) * (rowH - 6);
        ctx.fillStyle = "rgba(20,20,20,0.75)"; ctx.fillRect(x, y + rowH - 2 - hgt, Math.max(px * 0.8, 0.6), hgt);
      }
    }
    ctx.fillStyle = "#222"; ctx.fillText(l === 0 ? "input" : "after L" + (l - 1), 2, y + rowH / 2 + 3);
    if (l > 0) {                           // the blocks of the layer that made this row
      ctx.strokeStyle = "#000"; ctx.lineWidth = 1.2; ctx.beginPath();
      const s = layers[l - 1].shift;
      for (let b = Math.ceil((a + s) / K) * K - s; b <= a + win; b += K) {
        const x = LEFT + (b - a) * px; ctx.moveTo(x, y); ctx.lineTo(x, y + rowH);
      }
      ctx.stroke();
    }
  }
  ctx.fillStyle = "#d62728"; ctx.fillRect(LEFT + (state.q - a) * px, 0, Math.max(px, 1.5), H - 14);
  ctx.fillStyle = "#555"; ctx.fillText(`tokens ${a}-${a + win - 1} (${win / K} blocks of K=${K})`, LEFT, H - 2);
  c.dataset.signature = signature([struct.slice(1).map(r => r.reduce((x, y) => x + y, 0))]);
  c.onclick = e => select(Math.min(T - 1, a + Math.floor((e.offsetX - LEFT) / px)));
}
function drawRows(id, rows, labels, rowH, extra) {
  const H = rows.length * rowH + 14;
  const [c, ctx] = setup(id, H);
  const pooledRows = rows.map(r => pooled(r, r.length - T));
  pooledRows.forEach((p, i) => {
    const y = i * rowH;
    for (let x = 0; x < cols; x++) if (p[x] > 0) { ctx.fillStyle = colour(p[x]); ctx.fillRect(LEFT + x, y, 1, rowH - 1); }
    ctx.fillStyle = "#222"; ctx.fillText(labels[i], 2, y + rowH / 2 + 3);
    if (extra && extra.ticks) {
      ctx.fillStyle = "#666";
      const s = layers[extra.ticks[i]].shift;
      for (let b = (K - s) % K; b < T; b += K) ctx.fillRect(LEFT + b / perPixel, y + rowH - 4, 1, 3);
    }
    if (extra && extra.globals) {           // the G global keys, squeezed left of the label margin
      const g = rows[i], gw = (LEFT - 40) / G;
      for (let j = 0; j < G; j++) { ctx.fillStyle = colour(g[j]); ctx.fillRect(40 + j * gw, y, Math.max(gw, 0.5), rowH - 1); }
    }
  });
  if (extra && extra.shade) shadeSpans(ctx, extra.shade, 0, H - 14);
  if (extra && extra.mark != null) { ctx.fillStyle = "rgba(0,0,0,0.12)"; ctx.fillRect(0, extra.mark * rowH, W, rowH); }
  if (extra && extra.query != null) marker(ctx, extra.query, H - 14);
  ctx.fillStyle = "#555"; ctx.fillText(`0 … ${T - 1} tokens, ${perPixel} per pixel (max)`, LEFT, H - 2);
  c.dataset.signature = signature(pooledRows);
  c.onclick = e => {                       // a canvas may be shown scaled (the summary's): undo it
    const t = Math.floor((e.offsetX * W / c.clientWidth - LEFT) * perPixel); if (t >= 0 && t < T) select(t);
  };
  return c;
}

// ---------------------------------------------------------------- text and summary
const text = document.getElementById("text"), spans = [];
{
  const frag = document.createDocumentFragment(), key = new Uint8Array(T);
  for (const [a, b] of D.keySpans) for (let t = a; t < b; t++) key[t] = 1;
  D.tokens.forEach((tok, t) => {
    const s = document.createElement("span");
    s.className = key[t] ? "t key" : "t"; s.dataset.t = t; s.textContent = tok;
    spans.push(s); frag.append(s);
  });
  text.append(frag);
}
const sentenceOf = new Int32Array(T);
D.sentences.forEach(([a, b], i) => { for (let t = a; t < b; t++) sentenceOf[t] = i; });
function colourText(values, offset) {
  let top = 0; for (let t = 0; t < T; t++) top = Math.max(top, values[offset + t]);
  for (let t = 0; t < T; t++) {
    const v = values[offset + t];
    spans[t].style.backgroundColor = v > 0 ? colour(v / top, -10) : "";
  }
  text.dataset.signature = signature([values]);
}
function status(t) {
  const blocks = layers.map((l, i) => `${i}:${blockOf(i, t)}`).join(" ");
  document.getElementById("status").textContent =
    `token ${t} "${D.tokens[t].trim()}" · sentence ${sentenceOf[t]} · block per layer ${blocks}` +
    (t === state.q ? "  (selected)" : `  · selected: ${state.q} "${D.tokens[state.q].trim()}"`);
}
text.addEventListener("click", e => { const t = e.target.dataset.t; if (t !== undefined) select(+t, false); });
text.addEventListener("mouseover", e => { const t = e.target.dataset.t; if (t !== undefined) status(+t); });

let cross = null;
if (D.summary) {
  const p = unpack(D.summary.cross), S = D.summary.tokens.length;
  cross = [];
  for (let s = 0; s < S; s++) { const row = new Float64Array(T); eachEntry(p, s, (j, v) => { row[j] = v; }); cross.push(row); }
  const box = document.getElementById("summary");
  D.summary.tokens.forEach((tok, s) => {
    const e = document.createElement("span"); e.className = "s"; e.textContent = tok; e.dataset.s = s;
    e.onmouseenter = () => showSummary(s); e.onmouseleave = () => showSummary(state.pinned);
    e.onclick = () => { state.pinned = state.pinned === s ? -1 : s; showSummary(state.pinned); };
    box.append(e);
  });
}
function bestSentence(row) {
  const mass = new Float64Array(D.sentences.length);
  for (let t = 0; t < T; t++) mass[sentenceOf[t]] += row[t];
  let best = 0; for (let i = 1; i < mass.length; i++) if (mass[i] > mass[best]) best = i;
  return [best, mass[best]];
}
function showSummary(s) {
  state.summary = s;
  document.querySelectorAll("#summary span.s").forEach(e => e.classList.toggle("on", +e.dataset.s === s));
  if (!cross) return;
  drawRows("cross", cross, D.summary.tokens.map(t => t.trim().slice(0, 8)), Math.max(3, Math.min(12, 240 / cross.length)),
           {shade: D.keySpans, mark: s >= 0 ? s : null});
  spans.forEach(e => { e.style.outline = ""; });
  if (s < 0) { draw(); return; }
  colourText(cross[s], 0);
  const [best, mass] = bestSentence(cross[s]), [a, b] = D.sentences[best];
  for (let t = a; t < b; t++) spans[t].style.outline = "1px solid #1f77b4";
  spans[a].scrollIntoView({block: "center"});
  document.getElementById("status").textContent =
    `summary word ${s} "${D.summary.tokens[s].trim()}" read sentence ${best} most (${(100 * mass).toFixed(0)}% of its cross-attention): ` +
    D.tokens.slice(a, b).join("").trim().slice(0, 160);
  document.getElementById("cross").dataset.best = best;
}

// ---------------------------------------------------------------- controls
function options(id, n, label) {
  const sel = document.getElementById(id);
  for (let i = 0; i < n; i++) { const o = document.createElement("option"); o.value = i; o.textContent = label(i); sel.append(o); }
  return sel;
}
options("layer", L, i => `${i}${layers[i].shift ? " (staggered)" : ""}`).onchange = e => { state.layer = +e.target.value; draw(); };
options("global", G, i => `g${i}`).onchange = e => { state.global = +e.target.value; draw(); };
document.getElementById("mode").onchange = e => { state.mode = e.target.value; draw(); };
document.getElementById("title").textContent = D.title;
for (const [name, value] of D.config || []) {  // text nodes only: a value is shown, never parsed as HTML
  const row = document.getElementById("config").insertRow();
  row.insertCell().textContent = name; row.insertCell().textContent = value;
}
document.getElementById("meta").textContent =
  ` · ${D.model} · T=${T} tokens, K=${K}, G=${G}, ${L} encoder layers, mean over ${D.H} heads`;
document.addEventListener("keydown", e => {
  if (e.target.tagName === "SELECT") return;
  if (e.key === "ArrowRight") select(Math.min(T - 1, state.q + 1));
  if (e.key === "ArrowLeft") select(Math.max(0, state.q - 1));
});

window.explore = {D, state, select, tokenAttention, globalRow, reachStructure, reachWeighted, showSummary};
function draw() {
  const q = state.q, struct = reachStructure(q), weighted = reachWeighted(q);
  const attn = layers.map((_, l) => tokenAttention(l, q));
  drawField(struct, weighted);
  drawRows("reach", weighted.slice().reverse(), weighted.map((_, i) => i === L ? "input" : `after L${L - 1 - i}`), 14, {query: q});
  drawRows("attn", attn, attn.map((_, l) => `L${l}`), 16, {ticks: attn.map((_, l) => l), globals: true, query: q});
  const grows = Array.from({length: G}, (_, g) => globalRow(state.layer, g));
  drawRows("globals", grows, grows.map((_, g) => `g${g}`), Math.max(3, Math.min(10, 200 / G)), {shade: D.keySpans, query: q, mark: state.global});
  if (state.summary < 0) {
    if (state.mode === "attn") colourText(attn[state.layer], G);
    else if (state.mode === "reach") colourText(weighted[state.layer + 1], G);
    else colourText(grows[state.global], G);
  }
  document.body.dataset.query = q;
  window.explore.last = {struct, weighted, attn};
}
function select(q, scroll = true) {
  if (spans[state.q]) spans[state.q].classList.remove("q");
  state.q = q; spans[q].classList.add("q");
  if (scroll) spans[q].scrollIntoView({block: "center"});
  draw(); status(q);
}
showSummary(-1);
document.getElementById("start").textContent = D.startNote;
select(D.start);
