"""Logits processors and sampling warps: transformers' processors for the options minipegx implements,
applied in transformers' order by process_scores, plus the Gumbel-max sampler and a tie-stable top-k.

Each processor takes the rows' tokens so far, seqs [N, S] (start token included), and their scores
[N, V] (raw float32 logits in greedy search and sampling, their log-softmax in beam search, as
transformers) and returns new scores. N decoder rows (inputs x beams or x return sequences), S steps
so far, V vocabulary.
"""

from __future__ import annotations

import math
import numbers

from ..backend import array_module, is_device_array, to_device, to_numpy


def log_softmax(x):
    """log softmax over the last axis, x - max - log(sum(exp(x - max))), as torch's."""
    xp = array_module(x)
    s = x - x.max(axis=-1, keepdims=True)
    return s - xp.log(xp.exp(s).sum(axis=-1, keepdims=True))


def ban(scores, banned):
    """scores with -inf where banned [N, V] (or broadcastable) is True."""
    xp = array_module(scores)
    return xp.where(banned, scores.dtype.type(-math.inf), scores)


def token_mask(tokens, V, xp):
    """[N, V] bool, True at each row's listed tokens (-1 or V entries are ignored). tokens [N, J]."""
    N = tokens.shape[0]
    mask = xp.zeros((N, V + 1), dtype=bool)
    mask[xp.arange(N)[:, None], xp.where((tokens < 0) | (tokens >= V), V, tokens)] = True
    return mask[:, :V]


def repetition_penalty(seqs, scores, penalty):
    """RepetitionPenaltyLogitsProcessor: every token already in the row is made less likely:
    negative scores times the penalty, positive ones divided by it."""
    xp = array_module(scores)
    seen = token_mask(seqs, scores.shape[-1], xp)                           # [N, V]
    p = scores.dtype.type(penalty)
    return xp.where(seen, xp.where(scores < 0, scores * p, scores / p), scores)


def no_repeat_ngram(seqs, scores, n):
    """NoRepeatNGramLogitsProcessor: a token that would complete an n-gram already in the row is banned.
    Every window of n tokens whose first n-1 equal the row's last n-1 tokens bans its last token."""
    xp = array_module(scores)
    N, S = seqs.shape
    if S < n:
        return scores
    J = S - n + 1                                                           # windows [N, J, n]
    windows = xp.stack([seqs[:, i:i + J] for i in range(n)], axis=-1)
    prefix = seqs[:, S + 1 - n:]                                            # [N, n-1]
    match = (windows[..., :-1] == prefix[:, None, :]).all(axis=-1)          # [N, J]
    return ban(scores, token_mask(xp.where(match, windows[..., -1], -1), scores.shape[-1], xp))


def encoder_ngrams(encoder_ids, n):
    """Per input, {(n-1 tokens): [next tokens]} over the encoder ids, padding included (as transformers)."""
    table = []
    for row in to_numpy(encoder_ids).tolist():
        grams = {}
        for gram in zip(*[row[i:] for i in range(n)]) if n <= len(row) else ():  # n > T: no n-gram
            grams.setdefault(tuple(gram[:-1]), []).append(gram[-1])
        table.append(grams)
    return table


def encoder_no_repeat_ngram(seqs, scores, n, grams):
    """EncoderNoRepeatNGramLogitsProcessor: ban tokens that would copy an n-gram of the row's input.
    Row r belongs to input r // R (the rows of one input are consecutive)."""
    xp = array_module(scores)
    N, S = seqs.shape
    R = N // len(grams)
    host = to_numpy(seqs).tolist()
    start = S + 1 - n          # Python slicing as transformers' _get_generated_ngrams (negative start = no match)
    banned = [grams[r // R].get(tuple(host[r][start:S]), []) for r in range(N)]
    J = max(1, max(len(b) for b in banned))
    rows = [b + [-1] * (J - len(b)) for b in banned]
    return ban(scores, token_mask(to_device(rows, xp).astype("int64").reshape(N, J), scores.shape[-1], xp))


def only(scores, ids):
    """Every score -inf except `ids`, which get 0 (ForcedBOS / ForcedEOS processors)."""
    xp = array_module(scores)
    out = xp.full_like(scores, -math.inf)
    for i in ids:                            # Python ints: nothing copied to a GPU
        out[:, int(i)] = 0
    return out


def process_scores(seqs, scores, opts, grams):
    """The logits processors transformers builds for these options, in its order."""
    S = seqs.shape[1]
    if opts.repetition_penalty != 1.0:
        scores = repetition_penalty(seqs, scores, opts.repetition_penalty)
    if opts.no_repeat_ngram_size > 0:
        scores = no_repeat_ngram(seqs, scores, opts.no_repeat_ngram_size)
    if opts.encoder_no_repeat_ngram_size > 0:
        scores = encoder_no_repeat_ngram(seqs, scores, opts.encoder_no_repeat_ngram_size, grams)
    if opts.eos_token_ids is not None and S < opts.min_length:              # MinLength (and MinNewTokens)
        scores = ban(scores, is_eos(array_module(scores).arange(scores.shape[-1]), opts)[None])
    if opts.forced_bos_token_id is not None and S == 1:
        scores = only(scores, [opts.forced_bos_token_id])
    if opts.forced_eos_token_ids is not None and S == opts.max_length - 1:
        scores = only(scores, opts.forced_eos_token_ids)
    return scores


def warp_for_sampling(scores, opts, keep):
    """Temperature, top-k, top-p (transformers' warpers, in its order); `keep` tokens always survive."""
    xp = array_module(scores)
    if opts.temperature != 1.0:
        scores = scores / scores.dtype.type(opts.temperature)
    V = scores.shape[-1]
    if opts.top_k != 0:
        k = min(max(opts.top_k, keep), V)
        if not is_device_array(scores):
            kth = -xp.partition(-scores, k - 1, axis=-1)[:, k - 1:k]        # [N, 1] k-th largest
            scores = ban(scores, scores < kth)
        else:                                                               # no sort on a GPU (see kth_key)
            key = order_key(scores)
            scores = ban(scores, key < kth_key(key, k))
    if opts.top_p < 1.0:
        order = xp.argsort(scores, axis=-1)                                 # ascending, [N, V]
        ranked = xp.take_along_axis(scores, order, axis=-1)
        cum = xp.cumsum(xp.exp(log_softmax(ranked)), axis=-1)               # [N, V]
        drop = cum <= scores.dtype.type(1 - opts.top_p)                     # the tail holding <= 1-p of the mass
        drop[:, V - keep:] = False
        removed = xp.zeros_like(drop)
        removed[xp.arange(drop.shape[0])[:, None], order] = drop           # back to vocabulary order
        scores = ban(scores, removed)
    return scores


def make_rng(seed, xp):
    """The random generator for sampling: a seed, a Generator (used as is) or None (fresh entropy)."""
    if seed is None or isinstance(seed, numbers.Integral):
        return xp.random.default_rng(None if seed is None else int(seed))
    return seed


def gumbel(rng, shape, xp):
    """Gumbel(0, 1) noise: argmax(scores + noise) samples from softmax(scores) (the Gumbel-max trick), and
    its top-k samples k tokens without replacement (what torch.multinomial(..., k) does)."""
    u = to_device(rng.random(shape), xp)                       # float64 in [0, 1)
    exponential = -xp.log1p(-u)                                # Exp(1)
    return (-xp.log(exponential + 1e-300)).astype("float32")


def top_k(x, k):
    """The k largest entries of each row, best first; ties go to the lower index. x [..., n] -> ([..., k], idx).

    NumPy: a partition for the k-th largest value, the entries above it and the lowest-index ones equal to
    it, then a small stable sort. On a GPU a sort is a full sort of the row (CuPy's argpartition sorts
    everything) and, before CuPy 14, a synchronisation; there the k (beam search's 2W or W, a handful) are
    picked one by one with argmax, which also takes the lowest index among ties: the same result."""
    xp = array_module(x)
    n = x.shape[-1]
    if is_device_array(x):
        return top_k_by_argmax(x, k)
    if k < n:
        sel = xp.where(x == x, x, -xp.inf)                                  # NaN counts as -inf (last)
        kth = -xp.partition(-sel, k - 1, axis=-1)[..., k - 1:k]             # [..., 1] the k-th largest
        above, tie = sel > kth, sel == kth
        room = k - above.sum(axis=-1, keepdims=True)                        # ties that still fit
        chosen = above | (tie & (xp.cumsum(tie, axis=-1) <= room))          # exactly k per row
        idx = xp.nonzero(chosen)[-1].reshape(*x.shape[:-1], k)              # ascending index
    else:
        idx = xp.broadcast_to(xp.arange(n), x.shape)
    order = xp.argsort(-xp.take_along_axis(x, idx, axis=-1), axis=-1, kind="stable")
    idx = xp.take_along_axis(idx, order, axis=-1)
    return xp.take_along_axis(x, idx, axis=-1), idx


def top_k_by_argmax(x, k):
    """top_k without a sort: k rounds of argmax, each taking the best entry not yet taken (the lowest index
    among equals, also among -inf). x [..., n] -> ([..., k], idx); ~5 small kernels per round."""
    xp = array_module(x)
    taken = xp.zeros(x.shape, dtype=bool)                                   # [..., n]
    neg_inf = x.dtype.type(-math.inf)
    picks = []
    for _ in range(min(k, x.shape[-1])):
        free = xp.where(taken, neg_inf, x)                                  # [..., n]
        best = free.max(axis=-1, keepdims=True)                             # [..., 1]
        i = xp.argmax((free == best) & ~taken, axis=-1)[..., None]          # [..., 1] lowest free index
        taken = taken | (xp.arange(x.shape[-1]) == i)                       # [..., n]
        picks.append(i)
    idx = xp.concatenate(picks, axis=-1)                                    # [..., k]
    return xp.take_along_axis(x, idx, axis=-1), idx


def order_key(x):
    """float32 -> int64 keys in the same order (negative floats' bits reversed), so the k-th largest value
    can be found by bisection on integers. x [..., n] -> [..., n]."""
    xp = array_module(x)
    bits = xp.ascontiguousarray(x.astype("float32")).view("int32").astype("int64")
    return xp.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def kth_key(key, k):
    """The k-th largest key of each row without sorting: the largest t with count(key >= t) >= k, by
    bisection over the 32-bit key range (32 rounds of a count, no synchronisation). key [N, n] -> [N, 1]."""
    xp = array_module(key)
    lo = key.min(axis=-1, keepdims=True)                                    # count(key >= lo) = n >= k
    hi = key.max(axis=-1, keepdims=True)
    for _ in range(33):
        mid = lo + (hi - lo + 1) // 2
        enough = (key >= mid).sum(axis=-1, keepdims=True) >= k              # [N, 1]
        lo, hi = xp.where(enough, mid, lo), xp.where(enough, hi, mid - 1)
    return lo


def is_eos(tokens, opts):
    """[...] bool: the token is one of the EOS ids (compared with Python ints: nothing copied to a GPU)."""
    xp = array_module(tokens)
    hit = xp.zeros(tokens.shape, dtype=bool)
    for e in opts.eos_token_ids or ():
        hit = hit | (tokens == int(e))
    return hit
