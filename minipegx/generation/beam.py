"""Beam search, step by step, exactly as transformers' GenerationMixin._beam_search: the top
C = 2W candidates (more with several EOS ids) of all beams, -1e9 placeholders, the early-stopping
heuristic, the final crop. The whole search state is a value (BeamState); each step yields a BeamStep
that can be printed (BeamStep.table). Beam search runs the logits processors on the float32
log-softmax, as transformers. Exact ties (only -inf or -1e9 placeholder scores) go to the lower index
here; torch.topk orders them differently, and differently on CPU and GPU.

Shape legend: B inputs, W beams per input, C candidates per input, S tokens so far (start token
included), V vocab; the decoder sees N = B*W rows, the beams of one input side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backend import array_module, to_numpy
from .cache import decode_step, fetch, prepare_inputs, reorder_cache, start_decoding, step_checks
from .options import fail, resolve_options
from .processors import (encoder_ngrams, gumbel, is_eos, log_softmax, make_rng, process_scores, top_k,
                         warp_for_sampling)

NEG = -1.0e9                 # transformers' "finished / impossible" score (added in float32)


@dataclass
class BeamState:
    """The whole beam search as a value (transformers' _beam_search tensors, without the static padding).

    running [B, W, S] alive beams and running_scores [B, W] their cumulative log-probs, best first;
    running_parents [B, W, S-1] the flat row (b*W + beam) each token came from; pool [B, W, S] the best
    finished hypotheses (fill-padded), pool_scores [B, W] length-penalised, pool_parents [B, W, S-1]
    (-1 padded), pool_done [B, W]; improvable [B, 1] the early-stopping heuristic still open;
    hits [B, C] which of the last candidates hit EOS or max_length."""
    running: object
    running_scores: object
    running_parents: object
    pool: object
    pool_scores: object
    pool_parents: object
    pool_done: object
    improvable: object
    hits: object


@dataclass
class BeamStep:
    """One step of beam search, per input b (first axis B), W beams, C = 2W candidates.

    beams [B, W, step+1] the alive beams after this step and beam_scores [B, W] their cumulative log-probs;
    candidate_tokens / candidate_parents (beam 0..W-1 they extend) / candidate_scores [B, C] the best C
    continuations of all beams (cumulative log-probs), and of them kept (become alive beams), finished
    (entered the finished hypotheses) and pruned (neither) [B, C] bool; hypotheses [B, W, step+1] the
    best finished sequences (padded as transformers pads them) with hypothesis_scores [B, W]
    (sum of log-probs / generated_length ** length_penalty), hypothesis_lengths [B, W] (generated tokens,
    EOS included) and hypothesis_done [B, W] (False = empty slot); done [B] whether the search for input b is over;
    finished_all whether generation stops after this step; cross_kv_shape the shape of the cross keys
    given to the decoder ([B, H, T, D]: one per input, shared by its beams)."""
    step: int
    max_steps: int
    beams: object
    beam_scores: object
    candidate_tokens: object
    candidate_parents: object
    candidate_scores: object
    kept: object
    finished: object
    pruned: object
    hypotheses: object
    hypothesis_scores: object
    hypothesis_lengths: object
    hypothesis_done: object
    done: object
    finished_all: bool
    cross_kv_shape: tuple
    scores: object = None
    state: BeamState = field(default=None, repr=False)

    def table(self, b=0, decode=None):
        """A printable table for input b: the alive beams, then every candidate with its fate."""
        dec = decode or (lambda ids: " ".join(map(str, ids)))
        beams, bs = to_numpy(self.beams[b]).tolist(), to_numpy(self.beam_scores[b]).tolist()
        lines = [f"step {self.step}/{self.max_steps}" + ("  (search over)" if bool(self.done[b]) else "")]
        lines += [f"  beam {i}: {s:9.4f}  {dec(ids)}" for i, (ids, s) in enumerate(zip(beams, bs))]
        fate = to_numpy(self.kept[b]) * 1 + to_numpy(self.finished[b]) * 2
        for t, p, s, f in zip(*(to_numpy(a[b]).tolist() for a in (self.candidate_tokens, self.candidate_parents,
                                                                      self.candidate_scores)), fate.tolist()):
            lines.append(f"  cand beam {p} + {t:>6}: {s:9.4f}  {['pruned', 'kept', 'finished'][f]}")
        for ids, s, n, ok in zip(*(to_numpy(a[b]).tolist() for a in (self.hypotheses, self.hypothesis_scores,
                                                                      self.hypothesis_lengths, self.hypothesis_done))):
            if ok:
                lines.append(f"  done      {s:9.4f}  {dec(ids[:1 + n])}")
        return "\n".join(lines)


def beam_search_steps(model, input_ids, attention_mask=None, **options):
    """Beam search, yielding a BeamStep per generated token (num_beams defaults as generate's).
    input_ids / attention_mask [B, T]; each step's alive beams are [B, W, step+1] (W = num_beams)."""
    opts = resolve_options(model, options)
    if opts.num_beams < 2:
        fail(f"beam_search_steps needs num_beams >= 2, got {opts.num_beams}: pass num_beams=... or use greedy_steps")
    yield from beam_search(model, *prepare_inputs(model, input_ids, attention_mask), opts)


def gather(x, idx):
    """x [B, J, ...] -> [B, I, ...] with out[b, i] = x[b, idx[b, i]]."""
    xp = array_module(x)
    return x[xp.arange(x.shape[0])[:, None], idx]


def flag(cond):
    """A bool array as float32 -1e9 / 0 penalties (transformers adds cond * -1e9 in float32)."""
    xp = array_module(cond)
    return cond.astype("float32") * xp.float32(NEG)


def pad_last(x, value):
    """Append one column of `value` on the last axis."""
    xp = array_module(x)
    return xp.concatenate([x, xp.full(x.shape[:-1] + (1,), value, dtype=x.dtype)], axis=-1)


def fill_value(opts):
    """What transformers pads finished hypotheses with: `pad_token_id or eos_token_id[0] if eos else -1`.
    Python's `or` makes a pad id of 0 (PEGASUS's) fall through to the first EOS id."""
    if opts.eos_token_ids is None:
        return -1
    return opts.pad_token_id or opts.eos_token_ids[0]


def init_beams(B, W, C, start, xp):
    """Beam 0 starts at 0, the others at -1e9 (so step 1 does not pick W copies of one token)."""
    scores = xp.zeros((B, W), dtype="float32")
    scores[:, 1:] = NEG
    empty = xp.zeros((B, W, 0), dtype="int64")
    return BeamState(
        running=xp.full((B, W, 1), start, dtype="int64"), running_scores=scores, running_parents=empty,
        pool=xp.full((B, W, 1), start, dtype="int64"), pool_scores=xp.full((B, W), NEG, dtype="float32"),
        pool_parents=empty, pool_done=xp.zeros((B, W), dtype=bool), improvable=xp.ones((B, 1), dtype=bool),
        hits=xp.zeros((B, C), dtype=bool))


def beam_step(state, log_probs, opts, rng=None):
    """One step of transformers' _beam_search on the processed log-probs [B*W, V] of the alive beams.
    Returns the new state and, for the step record, (tokens, parents, scores, kept, finished) of the
    C candidates."""
    xp = array_module(log_probs)
    B, W, S = state.running.shape
    V = log_probs.shape[-1]
    n_eos = 0 if opts.eos_token_ids is None else len(opts.eos_token_ids)
    C = max(2, 1 + n_eos) * W

    # c. The best C continuations of all beams together (or C sampled without replacement).
    total = (log_probs.reshape(B, W, V) + state.running_scores[:, :, None]).reshape(B, W * V)  # [B, W*V]
    if opts.do_sample:
        _, idx = top_k(total + gumbel(rng, total.shape, xp), C)
        _, order = top_k(xp.take_along_axis(total, idx, axis=-1), C)           # by score, stable (no sort on a GPU)
        idx = xp.take_along_axis(idx, order, axis=-1)
        cand_scores = xp.take_along_axis(total, idx, axis=-1)
    else:
        cand_scores, idx = top_k(total, C)                                       # [B, C]
    parents, tokens = idx // V, idx % V                                          # [B, C]
    flat_parents = parents + (xp.arange(B) * W)[:, None]                         # row in [B*W]
    cand = xp.concatenate([gather(state.running, parents), tokens[..., None]], axis=-1)  # [B, C, S+1]
    cand_parents = xp.concatenate([gather(state.running_parents, parents), flat_parents[..., None]], axis=-1)

    # d. Which candidates stop here: EOS, or the maximum length reached.
    hits = is_eos(tokens, opts) | (S + 1 >= opts.max_length)                     # [B, C]

    # e. The best W candidates that did not stop become the alive beams.
    alive_scores = cand_scores + flag(hits)
    _, nxt = top_k(alive_scores, W)                                              # [B, W]
    running, running_scores = gather(cand, nxt), gather(alive_scores, nxt)
    running_parents = gather(cand_parents, nxt)

    # f. Stopped candidates among the top W enter the pool if they beat its worst, scored
    #    sum / generated_length ** length_penalty, generated length = S + 1 - 1 (EOS in, start token out).
    just = hits & (xp.arange(C) < W)[None]                                       # [B, C]
    fin_scores = cand_scores / xp.float32(S ** opts.length_penalty)
    fin_scores = fin_scores + flag(state.pool_done.all(axis=-1, keepdims=True) & (opts.early_stopping is True))
    fin_scores = fin_scores + flag(~state.improvable)
    fin_scores = fin_scores + flag(~just)
    fill = fill_value(opts)
    merged = xp.concatenate([pad_last(state.pool, fill), cand], axis=1)          # [B, W+C, S+1]
    merged_scores = xp.concatenate([state.pool_scores, fin_scores], axis=1)      # [B, W+C]
    merged_parents = xp.concatenate([pad_last(state.pool_parents, -1), cand_parents], axis=1)
    merged_done = xp.concatenate([state.pool_done, just], axis=1)
    pool_scores, keep = top_k(merged_scores, W)                                  # [B, W]

    # g. The early-stopping heuristic: can the best alive beam still beat the worst finished one?
    if opts.early_stopping == "never" and opts.length_penalty > 0:
        best_len = opts.max_length - 1
    else:
        best_len = S                                                             # generated tokens so far
    best_possible = running_scores[:, :1] / xp.float32(best_len ** opts.length_penalty)  # [B, 1]
    pool_done = gather(merged_done, keep)
    worst = xp.where(pool_done, pool_scores.min(axis=1, keepdims=True), xp.float32(NEG))  # [B, W]
    improvable = state.improvable & (best_possible > worst).any(axis=-1, keepdims=True)

    new = BeamState(running, running_scores, running_parents, gather(merged, keep), pool_scores,
                    gather(merged_parents, keep), pool_done, improvable, hits)
    kept = xp.zeros((B, C), dtype=bool)
    kept[xp.arange(B)[:, None], nxt] = True
    entered = xp.zeros((B, W + C), dtype=bool)
    entered[xp.arange(B)[:, None], keep] = True
    finished = entered[:, W:W + C] & just
    return new, (tokens, parents, cand_scores, kept & ~hits, finished)


def searching(state, opts):
    """[B] inputs whose search is still open (transformers' improvement / open-beam conditions)."""
    full = state.pool_done.all(axis=-1) & (opts.early_stopping is True)
    return state.improvable[:, 0] & ~full


def search_over(state, opts, flags=None):
    """transformers' _beam_search_has_unfinished_sequences, negated. flags: the host values of
    (improvable.any(), pool_done.all(), hits.all()) when already fetched (see over_flags)."""
    if flags is None:
        flags = [bool(f) for f in over_flags(state)]
    improvement_possible, all_done, all_hit = flags[:3]
    open_beam = not (all_done and opts.early_stopping is True)
    return not (improvement_possible and open_beam and not all_hit)


def over_flags(state):
    """The three device flags search_over decides on (0-d arrays, fetched with the step's one transfer)."""
    return state.improvable.any(), state.pool_done.all(), state.hits.all()


def beam_search(model, ids, mask, opts):
    xp = model.xp
    B, W = ids.shape[0], opts.num_beams
    C = max(2, 1 + (0 if opts.eos_token_ids is None else len(opts.eos_token_ids))) * W
    dec, cache = start_decoding(model, ids, mask, W, opts)
    grams = encoder_ngrams(ids, opts.encoder_no_repeat_ngram_size) if opts.encoder_no_repeat_ngram_size else None
    rng = make_rng(opts.seed, xp) if opts.do_sample else None
    state = init_beams(B, W, C, opts.decoder_start_token_id, xp)
    step = 0
    while True:
        step += 1
        seqs = state.running.reshape(B * W, -1)                                  # [B*W, S]
        checks = step_checks(model)
        logits, cache = decode_step(model, dec, seqs[:, -1], cache, checks)      # [B*W, V]
        log_probs = process_scores(seqs, log_softmax(logits), opts, grams)
        if opts.do_sample:
            log_probs = warp_for_sampling(log_probs, opts, keep=C // W)
        state, (tokens, parents, cand_scores, kept, finished) = beam_step(state, log_probs, opts, rng)
        # Cache rows follow the beams they now belong to.
        cache = reorder_cache(cache, state.running_parents[:, :, -1].reshape(-1))
        alive = searching(state, opts)
        *flags, n_alive = fetch(checks, *over_flags(state), alive.sum())   # the step's one transfer
        over = search_over(state, opts, flags)
        if opts.progress is not None:
            opts.progress(step, opts.max_steps, n_alive * W)
        yield BeamStep(step, opts.max_steps, state.running, state.running_scores, tokens, parents, cand_scores,
                       kept, finished, ~(kept | finished), state.pool, state.pool_scores,
                       (state.pool_parents != -1).sum(axis=-1), state.pool_done, ~alive,
                       over, tuple(dec.kvs[0][0].shape), log_probs if opts.output_scores else None, state)
        if over:
            return


def finish_beams(state, opts):
    """transformers' step 5: the best num_return_sequences hypotheses per input, cropped to the longest."""
    B, W, S = state.pool.shape
    n = opts.num_return_sequences
    seqs = state.pool[:, :n].reshape(B * n, S)
    scores = state.pool_scores[:, :n].reshape(B * n)
    parents = state.pool_parents[:, :n].reshape(B * n, S - 1)
    generated = int((parents != -1).sum(axis=1).max())
    return seqs[:, :1 + generated], scores, parents[:, :generated]
