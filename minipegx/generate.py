"""Generation: greedy, sampling and beam search, one decoder step at a time, step-through friendly.

Everything here reproduces transformers 5.x `generate()` for an encoder-decoder, option for option:
the same defaults and precedence (call options > model.generation_config > model.config > the
GenerationConfig defaults), the same logits processors in the same order, and beam search exactly as
`GenerationMixin._beam_search` (top 2*num_beams candidates, -1e9 placeholders, the early-stopping
heuristic, the final crop). The search is written once, as generators that yield one small dataclass
per step (`greedy_steps`, `beam_search_steps`); `generate` just runs them to the end.

As in transformers, greedy search and sampling run the logits processors on the float32 logits and beam
search on their float32 log-softmax (it matters for repetition_penalty, which scales by sign). Sampling
draws with the Gumbel-max trick from `seed`'s generator, so it follows the same distribution as
torch.multinomial but not torch's random stream. Exact ties (only -inf or -1e9 placeholder scores, e.g.
num_return_sequences > 1 when forced tokens leave fewer real hypotheses) go to the lower index here;
torch.topk orders them differently, and differently on CPU and GPU.

Caches: the encoder runs once; the cross-attention keys/values are computed once per input,
[B, H, T, D], and shared by that input's R rows (beams or return sequences), which sit side by side
in the decoder's [B*R, ...] arrays; only the self-attention cache follows the beams (a gather on
[B*R, H, L, D]). Caches are values: tuples in, tuples out.

Shape legend: B inputs, R rows per input, N = B*R decoder rows, K beams, C candidates (2K), L tokens
so far (start token included), T encoder tokens, H heads, D head dim, M d_model, V vocab.
"""

from __future__ import annotations

import difflib
import math
import numbers
import warnings
from dataclasses import dataclass, field, fields

from . import decoder as D
from .backend import array_module, resolve_dtype, to_device, to_numpy
from .errors import GenerationConfigError, MiniPegxWarning
from .layers import additive_mask, linear
from .model import as_ids, as_mask

NEG = -1.0e9                 # transformers' "finished / impossible" score (added in float32)
LONG_RUN = 1024              # warn above this many decoder steps when max_new_tokens is not given

# ================================================================================= options
# transformers' GenerationConfig._get_default_generation_params(), for the options minipegx implements.
TRANSFORMERS_DEFAULTS = dict(
    max_length=20, max_new_tokens=None, min_length=0, min_new_tokens=None, num_beams=1, length_penalty=1.0,
    early_stopping=False, do_sample=False, temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0,
    no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0, num_return_sequences=1, forced_bos_token_id=None,
    forced_eos_token_id=None, decoder_start_token_id=None, bos_token_id=None, eos_token_id=None,
    pad_token_id=None, output_scores=False, return_dict_in_generate=False, use_cache=True)
# minipegx's own options (never read from generation_config.json).
MINIPEGX_OPTIONS = dict(seed=None, static_cache=False, progress=None)
# use_cache is accepted for familiarity and ignored: minipegx always decodes with caches.
# Read from config.json when generation_config.json does not say (what GenerationConfig.from_model_config does).
FROM_MODEL_CONFIG = ("decoder_start_token_id", "eos_token_id", "pad_token_id", "forced_eos_token_id")
KNOWN_OPTIONS = tuple(sorted({**TRANSFORMERS_DEFAULTS, **MINIPEGX_OPTIONS}))
# generation_config.json keys that carry no decoding choice.
METADATA_KEYS = {"transformers_version", "output_attentions", "output_hidden_states", "output_logits"}


@dataclass(frozen=True)
class GenerationOptions:
    """Every option resolved to its final value; lengths count the decoder start token, as transformers'."""
    max_length: int
    min_length: int
    num_beams: int
    length_penalty: float
    early_stopping: bool | str
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    no_repeat_ngram_size: int
    encoder_no_repeat_ngram_size: int
    num_return_sequences: int
    forced_bos_token_id: int | None
    forced_eos_token_ids: tuple | None
    decoder_start_token_id: int
    eos_token_ids: tuple | None
    pad_token_id: int | None
    output_scores: bool
    return_dict_in_generate: bool
    static_cache: bool
    seed: object = None
    progress: object = None

    @property
    def max_steps(self):
        return self.max_length - 1


def _fail(msg):
    raise GenerationConfigError(msg)


def _as_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        _fail(f"{name} must be an integer >= {lo}, got {v!r}")
    if int(v) < lo:
        _fail(f"{name} must be >= {lo}, got {v}")
    return int(v)


def _as_number(name, v, ok, rule):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not ok(v):
        _fail(f"{name} must be {rule}, got {v!r}")
    return float(v)


def _as_ids(name, v, vocab_size):
    """None, an id or a list of ids -> None or a tuple of ids in [0, V)."""
    if v is None:
        return None
    ids = list(v) if isinstance(v, (list, tuple)) else [v]
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < vocab_size:
            _fail(f"{name} must hold token ids in [0, {vocab_size}), got {v!r}")
    return tuple(int(i) for i in ids) or None


def check_names(options):
    """Unknown option names are an error that names them, suggests the closest and lists the known ones."""
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    if unknown:
        hints = {u: difflib.get_close_matches(u, KNOWN_OPTIONS, 1) for u in unknown}
        hint = "; ".join(f"did you mean {h[0]!r} for {u!r}?" for u, h in hints.items() if h)
        _fail(f"unknown generation option(s) {', '.join(map(repr, unknown))}. {hint + ' ' if hint else ''}"
              f"Known options: {', '.join(KNOWN_OPTIONS)}")


def layered_options(model, options):
    """{name: (value, source)}: the call's options over model.generation_config (generation_config.json)
    over model.config (config.json, special tokens only) over transformers' GenerationConfig defaults.
    An explicit None means "unset": the default, skipping the model's files (as in transformers, where
    generate(forced_eos_token_id=None) turns forced EOS off)."""
    gen = {k: v for k, v in (model.generation_config or {}).items() if not k.startswith("_")}
    ignored = sorted(k for k, v in gen.items() if k not in TRANSFORMERS_DEFAULTS and k not in METADATA_KEYS
                     and v not in (None, False, 0, 1.0, [], {}))
    if ignored:
        warnings.warn(f"generation_config.json sets {', '.join(ignored)}, which minipegx does not implement; "
                      "they are ignored", MiniPegxWarning, stacklevel=4)
    defaults = {**TRANSFORMERS_DEFAULTS, **MINIPEGX_OPTIONS}
    out = {}
    for name in KNOWN_OPTIONS:
        if name in options and options[name] is not None:
            out[name] = options[name], "the call"
        elif name in options or name in MINIPEGX_OPTIONS:
            out[name] = defaults[name], "default"
        elif gen.get(name) is not None:
            out[name] = gen[name], "generation_config.json"
        elif name in FROM_MODEL_CONFIG and getattr(model.config, name, None) is not None:
            out[name] = getattr(model.config, name), "config.json"
        else:
            out[name] = defaults[name], "default"
    return out


def lengths(o, max_position_embeddings):
    """(max_length, min_length), both counting the decoder start token, as transformers'
    _prepare_generated_length computes them for an encoder-decoder (decoder input length 1)."""
    if o["max_new_tokens"][0] is not None:
        max_length = _as_int("max_new_tokens", o["max_new_tokens"][0], 1) + 1
    else:
        value, source = o["max_length"]
        max_length = _as_int("max_length", value, 0)
        if source == "default":  # 20 *new* tokens by default, capped at max_position_embeddings
            max_length = min(max_length + 1, max_position_embeddings)
        if max_length < 2:
            _fail(f"max_length={max_length} leaves no room to generate: it counts the decoder start token, so "
                  "use max_length >= 2 or, better, max_new_tokens >= 1")
        if max_length - 1 > LONG_RUN:
            warnings.warn(f"max_length={max_length} (from {source}) allows {max_length - 1} decoder steps; "
                          "pass max_new_tokens=... to bound the run", MiniPegxWarning, stacklevel=4)
    if o["min_new_tokens"][0] is not None:           # min_new_tokens wins over min_length
        min_length = _as_int("min_new_tokens", o["min_new_tokens"][0], 0) + 1
        what = f"min_new_tokens ({min_length - 1})"
    else:
        min_length = _as_int("min_length", o["min_length"][0], 0)
        what = f"min_length ({min_length})"
    if min_length > max_length:
        _fail(f"{what} asks for more tokens than the maximum (max_length {max_length}, start token included); "
              "lower the minimum or raise max_new_tokens / max_length")
    return max_length, min_length


def special_tokens(o, vocab_size):
    """(decoder start, EOS ids, pad) as transformers' _prepare_special_tokens: the start token falls back
    to bos_token_id, pad to the first EOS id."""
    eos = _as_ids("eos_token_id", o["eos_token_id"][0], vocab_size)
    pad = o["pad_token_id"][0]
    if pad is not None:
        pad = _as_ids("pad_token_id", pad, vocab_size)[0]
    elif eos is not None:
        pad = eos[0]
    start = o["decoder_start_token_id"][0]
    start = o["bos_token_id"][0] if start is None else start
    if start is None:
        _fail("decoder_start_token_id is not set (nor bos_token_id): pass decoder_start_token_id=... "
              "(PEGASUS-X uses 0, the pad token)")
    return _as_ids("decoder_start_token_id", start, vocab_size)[0], eos, pad


def resolve_options(model, options: dict) -> GenerationOptions:
    """Every option's final value (see layered_options for the precedence), checked: anything invalid
    raises GenerationConfigError naming the option and the fix."""
    check_names(options)
    o = layered_options(model, options)
    v = {name: value for name, (value, _) in o.items()}
    V = model.config.vocab_size

    num_beams = _as_int("num_beams", v["num_beams"], 1)
    nrs = _as_int("num_return_sequences", v["num_return_sequences"], 1)
    do_sample = bool(v["do_sample"])
    if num_beams > 1 and nrs > num_beams:
        _fail(f"num_return_sequences ({nrs}) must be <= num_beams ({num_beams}): beam search returns its best "
              f"num_beams hypotheses; raise num_beams or lower num_return_sequences")
    if num_beams == 1 and nrs > 1 and not do_sample:
        _fail(f"num_return_sequences={nrs} needs num_beams >= {nrs} (beam search) or do_sample=True; greedy "
              "search has a single answer")
    early_stopping = v["early_stopping"]
    if not (isinstance(early_stopping, bool) or early_stopping == "never"):
        _fail(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    max_length, min_length = lengths(o, model.config.max_position_embeddings)
    if do_sample:
        _as_number("temperature", v["temperature"], lambda t: t > 0, "a number > 0 with do_sample=True (for the "
                   "most likely tokens use do_sample=False: greedy or beam search)")
    seed = v["seed"]
    if not (seed is None or isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
            or hasattr(seed, "random")):
        _fail(f"seed must be None, an integer or a random Generator (numpy.random.default_rng(...)), "
              f"got {type(seed).__name__}")
    if v["progress"] is not None and not callable(v["progress"]):
        _fail(f"progress must be None or a callable (step, max_steps, num_alive_beams), got "
              f"{type(v['progress']).__name__}")
    start, eos, pad = special_tokens(o, V)
    forced_bos = _as_ids("forced_bos_token_id", v["forced_bos_token_id"], V)

    return GenerationOptions(
        max_length=max_length, min_length=min_length, num_beams=num_beams,
        length_penalty=_as_number("length_penalty", v["length_penalty"], lambda x: True,
                                  "a number (1.0 = average log-prob per token)"),
        early_stopping=early_stopping, do_sample=do_sample,
        temperature=_as_number("temperature", v["temperature"], lambda x: True, "a number"),
        top_k=_as_int("top_k", v["top_k"], 0),
        top_p=_as_number("top_p", v["top_p"], lambda p: 0 < p <= 1, "in (0, 1] (1 keeps every token)"),
        repetition_penalty=_as_number("repetition_penalty", v["repetition_penalty"], lambda r: r > 0,
                                      "a number > 0 (1.0 = off)"),
        no_repeat_ngram_size=_as_int("no_repeat_ngram_size", v["no_repeat_ngram_size"], 0),
        encoder_no_repeat_ngram_size=_as_int("encoder_no_repeat_ngram_size", v["encoder_no_repeat_ngram_size"], 0),
        num_return_sequences=nrs, forced_bos_token_id=None if forced_bos is None else forced_bos[0],
        forced_eos_token_ids=_as_ids("forced_eos_token_id", v["forced_eos_token_id"], V),
        decoder_start_token_id=start, eos_token_ids=eos, pad_token_id=pad,
        output_scores=bool(v["output_scores"]), return_dict_in_generate=bool(v["return_dict_in_generate"]),
        static_cache=bool(v["static_cache"]), seed=seed, progress=v["progress"])


# ================================================================================= logits processors
# Each takes the rows' tokens so far, seqs [N, L], and their scores [N, V] (raw logits in greedy and
# sampling, log-probs in beam search, as transformers) and returns new scores. Applied in
# transformers' order by process_scores.
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
    N, L = seqs.shape
    if L < n:
        return scores
    W = L - n + 1                                                           # windows [N, W, n]
    windows = xp.stack([seqs[:, i:i + W] for i in range(n)], axis=-1)
    prefix = seqs[:, L + 1 - n:]                                            # [N, n-1]
    match = (windows[..., :-1] == prefix[:, None, :]).all(axis=-1)          # [N, W]
    return ban(scores, token_mask(xp.where(match, windows[..., -1], -1), scores.shape[-1], xp))


def encoder_ngrams(encoder_ids, n):
    """Per input, {(n-1 tokens): [next tokens]} over the encoder ids, padding included (as transformers)."""
    table = []
    for row in to_numpy(encoder_ids).tolist():
        grams = {}
        for gram in zip(*[row[i:] for i in range(n)]):
            grams.setdefault(tuple(gram[:-1]), []).append(gram[-1])
        table.append(grams)
    return table


def encoder_no_repeat_ngram(seqs, scores, n, grams):
    """EncoderNoRepeatNGramLogitsProcessor: ban tokens that would copy an n-gram of the row's input.
    Row r belongs to input r // R (the rows of one input are consecutive)."""
    xp = array_module(scores)
    N, L = seqs.shape
    R = N // len(grams)
    host = to_numpy(seqs).tolist()
    start = L + 1 - n          # Python slicing as transformers' _get_generated_ngrams (negative start = no match)
    banned = [grams[r // R].get(tuple(host[r][start:L]), []) for r in range(N)]
    J = max(1, max(len(b) for b in banned))
    rows = [b + [-1] * (J - len(b)) for b in banned]
    return ban(scores, token_mask(to_device(rows, xp).astype("int64").reshape(N, J), scores.shape[-1], xp))


def only(scores, ids):
    """Every score -inf except `ids`, which get 0 (ForcedBOS / ForcedEOS processors)."""
    xp = array_module(scores)
    out = xp.full_like(scores, -math.inf)
    out[:, list(ids)] = 0
    return out


def process_scores(seqs, scores, opts, grams):
    """The logits processors transformers builds for these options, in its order."""
    L = seqs.shape[1]
    if opts.repetition_penalty != 1.0:
        scores = repetition_penalty(seqs, scores, opts.repetition_penalty)
    if opts.no_repeat_ngram_size > 0:
        scores = no_repeat_ngram(seqs, scores, opts.no_repeat_ngram_size)
    if opts.encoder_no_repeat_ngram_size > 0:
        scores = encoder_no_repeat_ngram(seqs, scores, opts.encoder_no_repeat_ngram_size, grams)
    if opts.eos_token_ids is not None and L < opts.min_length:              # MinLength (and MinNewTokens)
        xp = array_module(scores)
        eos = xp.zeros(scores.shape[-1], dtype=bool)
        eos[list(opts.eos_token_ids)] = True
        scores = ban(scores, eos[None])
    if opts.forced_bos_token_id is not None and L == 1:
        scores = only(scores, [opts.forced_bos_token_id])
    if opts.forced_eos_token_ids is not None and L == opts.max_length - 1:
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
        kth = -xp.partition(-scores, k - 1, axis=-1)[:, k - 1:k]            # [N, 1] k-th largest
        scores = ban(scores, scores < kth)
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
    """The k largest entries of each row, best first; ties go to the lower index. x [..., n] -> ([..., k], idx)."""
    xp = array_module(x)
    n = x.shape[-1]
    idx = xp.argpartition(-x, k - 1, axis=-1)[..., :k] if k < n else xp.broadcast_to(xp.arange(n), x.shape)
    idx = xp.sort(idx, axis=-1)
    order = xp.argsort(-xp.take_along_axis(x, idx, axis=-1), axis=-1, kind="stable")
    idx = xp.take_along_axis(idx, order, axis=-1)
    return xp.take_along_axis(x, idx, axis=-1), idx


# ================================================================================= decoding with caches
@dataclass
class Decoding:
    """What every step reuses: cross k/v per layer, each [B, H, T, D] (one per input, never per row),
    the cross-attention mask [B, 1, 1, T] and the model."""
    model: object
    kvs: tuple
    cross_mask: object
    static: bool


def start_decoding(model, input_ids, attention_mask, rows, opts):
    """Encode once, compute cross k/v once, and make an empty self-attention cache for B*rows rows:
    None (dynamic: grows by concatenation) or, with static_cache, per layer (k_buf, v_buf, 0) with
    buffers [B*rows, H, max_length-1, D] written in place."""
    cfg, xp = model.config, model.xp
    enc = model.encode(input_ids, attention_mask).last_hidden_state        # [B, T, M]
    layers = model.params["model"]["decoder"]["layers"]
    H = cfg.decoder_attention_heads
    kvs = tuple(D.cross_kv(enc, p["encoder_attn"], H) for p in layers)    # each ([B, H, T, D], [B, H, T, D])
    dtype = resolve_dtype(model.dtype, xp)                                  # the compute dtype, as forward's
    cross_mask = None if attention_mask is None else \
        additive_mask(attention_mask, dtype, xp)[:, None, None, :]         # [B, 1, 1, T]
    cache = None
    if opts.static_cache:
        shape = (enc.shape[0] * rows, H, opts.max_length - 1, cfg.d_model // H)  # [N, H, Lmax, D]
        cache = tuple((xp.zeros(shape, dtype), xp.zeros(shape, dtype), 0) for _ in layers)
    return Decoding(model, kvs, cross_mask, opts.static_cache), cache


def decode_step(dec, tokens, cache):
    """Feed each row's last token: tokens [N] -> next-token logits [N, V] in float32, new cache."""
    model = dec.model
    params = model.params["model"]
    check = model.check_finite
    h, cache, *_ = D.decoder(params, model.config, dec.kvs, dec.cross_mask, tokens[:, None], caches=cache,
                             check_finite=check)                                 # dynamic or static cache values
    logits = linear(h[:, -1], model.lm_head_weight)                              # [N, M] @ [M, V] -> [N, V]
    return logits.astype("float32"), cache


def reorder_cache(cache, index):
    """Beam search: row i of the new self-attention cache is row index[i] of the old, [N, H, L, D] gathers.
    The static buffers are gathered in place over their filled length."""
    if len(cache[0]) == 3:                                                       # static: (k_buf, v_buf, length)
        for k_buf, v_buf, length in cache:
            k_buf[:, :, :length] = k_buf[index, :, :length]
            v_buf[:, :, :length] = v_buf[index, :, :length]
        return cache
    return tuple((k[index], v[index]) for k, v in cache)


def prepare_inputs(model, input_ids, attention_mask):
    """Checked ids [B, T] and mask [B, T] (or None) on the model's backend."""
    ids = as_ids(model, input_ids, "input_ids")                                  # [B, T]
    mask = None if attention_mask is None else as_mask(model, attention_mask, ids.shape, "attention_mask")
    return ids, mask


def is_eos(tokens, opts):
    """[...] bool: the token is one of the EOS ids."""
    xp = array_module(tokens)
    if opts.eos_token_ids is None:
        return xp.zeros(tokens.shape, dtype=bool)
    return xp.isin(tokens, xp.asarray(list(opts.eos_token_ids)))


# ================================================================================= greedy and sampling
@dataclass
class GreedyStep:
    """One step of greedy search or sampling, rows [N = B * num_return_sequences].

    sequences [N, step+1] the tokens so far (start token first); tokens [N] chosen now; scores [N, V]
    the processed scores the choice was made from (transformers' output_scores); top_tokens /
    top_logprobs [N, 5] the five best candidates and their log-probs; finished [N] rows that have
    produced EOS (they are fed pad from then on); done whether generation stops after this step;
    cross_kv_shape the shape of the cross-attention keys given to the decoder ([B, H, T, D])."""
    step: int
    max_steps: int
    sequences: object
    tokens: object
    scores: object
    top_tokens: object
    top_logprobs: object
    finished: object
    done: bool
    cross_kv_shape: tuple

    @property
    def num_alive(self):
        return int((~self.finished).sum())


def greedy_steps(model, input_ids, attention_mask=None, **options):
    """Greedy search (or sampling with do_sample=True), yielding a GreedyStep per generated token."""
    opts = resolve_options(model, options)
    if opts.num_beams != 1:
        _fail(f"greedy_steps runs num_beams=1; got num_beams={opts.num_beams}: use beam_search_steps")
    yield from _greedy(model, *prepare_inputs(model, input_ids, attention_mask), opts)


def _greedy(model, ids, mask, opts):
    """transformers' _sample: processors on float32 logits, argmax (or a sample), finished rows get pad."""
    xp = model.xp
    B, R = ids.shape[0], opts.num_return_sequences
    dec, cache = start_decoding(model, ids, mask, R, opts)
    grams = encoder_ngrams(ids, opts.encoder_no_repeat_ngram_size) if opts.encoder_no_repeat_ngram_size else None
    rng = make_rng(opts.seed, xp) if opts.do_sample else None
    seqs = xp.full((B * R, 1), opts.decoder_start_token_id, dtype="int64")       # [N, 1]
    unfinished = xp.ones(B * R, dtype=bool)
    for step in range(1, opts.max_length):
        logits, cache = decode_step(dec, seqs[:, -1], cache)                      # [N, V]
        scores = process_scores(seqs, logits, opts, grams)
        if opts.do_sample:
            scores = warp_for_sampling(scores, opts, keep=1)
            tokens = xp.argmax(scores + gumbel(rng, scores.shape, xp), axis=-1)
        else:
            tokens = xp.argmax(scores, axis=-1)                                   # [N]
        if opts.eos_token_ids is not None:
            tokens = xp.where(unfinished, tokens, opts.pad_token_id)
        seqs = xp.concatenate([seqs, tokens[:, None]], axis=1)                    # [N, L+1]
        unfinished = unfinished & ~is_eos(tokens, opts)
        done = step == opts.max_length - 1 or not bool(unfinished.any())
        lp, top = top_k(log_softmax(scores), min(5, scores.shape[-1]))
        if opts.progress is not None:
            opts.progress(step, opts.max_steps, int(unfinished.sum()))
        yield GreedyStep(step, opts.max_steps, seqs, tokens, scores, top, lp, ~unfinished, done,
                         tuple(dec.kvs[0][0].shape))
        if done:
            return


# ================================================================================= beam search
@dataclass
class BeamState:
    """The whole beam search as a value (transformers' _beam_search tensors, without the static padding).

    running [B, K, L] alive beams and running_scores [B, K] their cumulative log-probs, best first;
    running_parents [B, K, L-1] the flat row (b*K + beam) each token came from; pool [B, K, L] the best
    finished hypotheses (fill-padded), pool_scores [B, K] length-penalised, pool_parents [B, K, L-1]
    (-1 padded), pool_done [B, K]; improvable [B, 1] the early-stopping heuristic still open;
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
    """One step of beam search, per input b (first axis B), K beams, C = 2K candidates.

    beams [B, K, step+1] the alive beams after this step and beam_scores [B, K] their cumulative log-probs;
    candidate_tokens / candidate_parents (beam 0..K-1 they extend) / candidate_scores [B, C] the best C
    continuations of all beams (cumulative log-probs), and of them kept (become alive beams), finished
    (entered the finished hypotheses) and pruned (neither) [B, C] bool; hypotheses [B, K, step+1] the
    best finished sequences (padded as transformers pads them) with hypothesis_scores [B, K]
    (sum of log-probs / generated_length ** length_penalty), hypothesis_lengths [B, K] (generated tokens,
    EOS included) and hypothesis_done [B, K] (False = empty slot); done [B] whether the search for input b is over;
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
    """Beam search, yielding a BeamStep per generated token (num_beams defaults as generate's)."""
    opts = resolve_options(model, options)
    if opts.num_beams < 2:
        _fail(f"beam_search_steps needs num_beams >= 2, got {opts.num_beams}: pass num_beams=... or use greedy_steps")
    yield from _beam_search(model, *prepare_inputs(model, input_ids, attention_mask), opts)


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


def init_beams(B, K, C, start, xp):
    """Beam 0 starts at 0, the others at -1e9 (so step 1 does not pick K copies of one token)."""
    scores = xp.zeros((B, K), dtype="float32")
    scores[:, 1:] = NEG
    empty = xp.zeros((B, K, 0), dtype="int64")
    return BeamState(
        running=xp.full((B, K, 1), start, dtype="int64"), running_scores=scores, running_parents=empty,
        pool=xp.full((B, K, 1), start, dtype="int64"), pool_scores=xp.full((B, K), NEG, dtype="float32"),
        pool_parents=empty, pool_done=xp.zeros((B, K), dtype=bool), improvable=xp.ones((B, 1), dtype=bool),
        hits=xp.zeros((B, C), dtype=bool))


def beam_step(state, log_probs, opts, rng=None):
    """One step of transformers' _beam_search on the processed log-probs [B*K, V] of the alive beams.
    Returns the new state and, for the step record, (tokens, parents, scores, kept, finished) of the
    C candidates."""
    xp = array_module(log_probs)
    B, K, L = state.running.shape
    V = log_probs.shape[-1]
    n_eos = 0 if opts.eos_token_ids is None else len(opts.eos_token_ids)
    C = max(2, 1 + n_eos) * K

    # c. The best C continuations of all beams together (or C sampled without replacement).
    total = (log_probs.reshape(B, K, V) + state.running_scores[:, :, None]).reshape(B, K * V)  # [B, K*V]
    if opts.do_sample:
        _, idx = top_k(total + gumbel(rng, total.shape, xp), C)
        order = xp.argsort(-xp.take_along_axis(total, idx, axis=-1), axis=-1, kind="stable")
        idx = xp.take_along_axis(idx, order, axis=-1)
        cand_scores = xp.take_along_axis(total, idx, axis=-1)
    else:
        cand_scores, idx = top_k(total, C)                                       # [B, C]
    parents, tokens = idx // V, idx % V                                          # [B, C]
    flat_parents = parents + (xp.arange(B) * K)[:, None]                         # row in [B*K]
    cand = xp.concatenate([gather(state.running, parents), tokens[..., None]], axis=-1)  # [B, C, L+1]
    cand_parents = xp.concatenate([gather(state.running_parents, parents), flat_parents[..., None]], axis=-1)

    # d. Which candidates stop here: EOS, or the maximum length reached.
    hits = is_eos(tokens, opts) | (L + 1 >= opts.max_length)                     # [B, C]

    # e. The best K candidates that did not stop become the alive beams.
    alive_scores = cand_scores + flag(hits)
    _, nxt = top_k(alive_scores, K)                                              # [B, K]
    running, running_scores = gather(cand, nxt), gather(alive_scores, nxt)
    running_parents = gather(cand_parents, nxt)

    # f. Stopped candidates among the top K enter the pool if they beat its worst, scored
    #    sum / generated_length ** length_penalty, generated length = L + 1 - 1 (EOS in, start token out).
    just = hits & (xp.arange(C) < K)[None]                                       # [B, C]
    fin_scores = cand_scores / xp.float32(L ** opts.length_penalty)
    fin_scores = fin_scores + flag(state.pool_done.all(axis=-1, keepdims=True) & (opts.early_stopping is True))
    fin_scores = fin_scores + flag(~state.improvable)
    fin_scores = fin_scores + flag(~just)
    fill = fill_value(opts)
    merged = xp.concatenate([pad_last(state.pool, fill), cand], axis=1)          # [B, K+C, L+1]
    merged_scores = xp.concatenate([state.pool_scores, fin_scores], axis=1)      # [B, K+C]
    merged_parents = xp.concatenate([pad_last(state.pool_parents, -1), cand_parents], axis=1)
    merged_done = xp.concatenate([state.pool_done, just], axis=1)
    pool_scores, keep = top_k(merged_scores, K)                                  # [B, K]

    # g. The early-stopping heuristic: can the best alive beam still beat the worst finished one?
    if opts.early_stopping == "never" and opts.length_penalty > 0:
        best_len = opts.max_length - 1
    else:
        best_len = L                                                             # generated tokens so far
    best_possible = running_scores[:, :1] / xp.float32(best_len ** opts.length_penalty)  # [B, 1]
    pool_done = gather(merged_done, keep)
    worst = xp.where(pool_done, pool_scores.min(axis=1, keepdims=True), xp.float32(NEG))  # [B, K]
    improvable = state.improvable & (best_possible > worst).any(axis=-1, keepdims=True)

    new = BeamState(running, running_scores, running_parents, gather(merged, keep), pool_scores,
                    gather(merged_parents, keep), pool_done, improvable, hits)
    kept = xp.zeros((B, C), dtype=bool)
    kept[xp.arange(B)[:, None], nxt] = True
    entered = xp.zeros((B, K + C), dtype=bool)
    entered[xp.arange(B)[:, None], keep] = True
    finished = entered[:, K:K + C] & just
    return new, (tokens, parents, cand_scores, kept & ~hits, finished)


def searching(state, opts):
    """[B] inputs whose search is still open (transformers' improvement / open-beam conditions)."""
    full = state.pool_done.all(axis=-1) & (opts.early_stopping is True)
    return state.improvable[:, 0] & ~full


def search_over(state, opts):
    """transformers' _beam_search_has_unfinished_sequences, negated."""
    improvement_possible = bool(state.improvable.any())
    open_beam = not (bool(state.pool_done.all()) and opts.early_stopping is True)
    valid_continuations = not bool(state.hits.all())
    return not (improvement_possible and open_beam and valid_continuations)


def _beam_search(model, ids, mask, opts):
    xp = model.xp
    B, K = ids.shape[0], opts.num_beams
    C = max(2, 1 + (0 if opts.eos_token_ids is None else len(opts.eos_token_ids))) * K
    dec, cache = start_decoding(model, ids, mask, K, opts)
    grams = encoder_ngrams(ids, opts.encoder_no_repeat_ngram_size) if opts.encoder_no_repeat_ngram_size else None
    rng = make_rng(opts.seed, xp) if opts.do_sample else None
    state = init_beams(B, K, C, opts.decoder_start_token_id, xp)
    step = 0
    while True:
        step += 1
        seqs = state.running.reshape(B * K, -1)                                  # [B*K, L]
        logits, cache = decode_step(dec, seqs[:, -1], cache)                     # [B*K, V]
        log_probs = process_scores(seqs, log_softmax(logits), opts, grams)
        if opts.do_sample:
            log_probs = warp_for_sampling(log_probs, opts, keep=C // K)
        state, (tokens, parents, cand_scores, kept, finished) = beam_step(state, log_probs, opts, rng)
        # Cache rows follow the beams they now belong to.
        cache = reorder_cache(cache, state.running_parents[:, :, -1].reshape(-1))
        over = search_over(state, opts)
        alive = searching(state, opts)
        if opts.progress is not None:
            opts.progress(step, opts.max_steps, int(alive.sum()) * K)
        yield BeamStep(step, opts.max_steps, state.running, state.running_scores, tokens, parents, cand_scores,
                       kept, finished, ~(kept | finished), state.pool, state.pool_scores,
                       (state.pool_parents != -1).sum(axis=-1), state.pool_done, ~alive,
                       over, tuple(dec.kvs[0][0].shape), log_probs if opts.output_scores else None, state)
        if over:
            return


# ================================================================================= generate
@dataclass
class GenerateOutput:
    """transformers' GenerateEncoderDecoderOutput / GenerateBeamEncoderDecoderOutput (the fields minipegx
    fills): sequences [B*num_return_sequences, S]; sequences_scores [B*num_return_sequences] (beam search,
    with output_scores); scores, per step the processed scores [rows, V] (with output_scores);
    beam_indices [B*num_return_sequences, S-1] (beam search: the flat beam each token came from, -1 pad)."""
    sequences: object
    sequences_scores: object = None
    scores: tuple | None = None
    beam_indices: object = None

    def __getitem__(self, i):
        return [getattr(self, f.name) for f in fields(self)][i]


def finish_beams(state, opts):
    """transformers' step 5: the best num_return_sequences hypotheses per input, cropped to the longest."""
    B, K, L = state.pool.shape
    n = opts.num_return_sequences
    seqs = state.pool[:, :n].reshape(B * n, L)
    scores = state.pool_scores[:, :n].reshape(B * n)
    parents = state.pool_parents[:, :n].reshape(B * n, L - 1)
    generated = int((parents != -1).sum(axis=1).max())
    return seqs[:, :1 + generated], scores, parents[:, :generated]


def generate(model, input_ids, attention_mask=None, **options):
    """Generated ids [B * num_return_sequences, S] starting with the decoder start token, as transformers'
    generate() for an encoder-decoder; a GenerateOutput when return_dict_in_generate=True.

    Options (transformers' names and meanings): max_new_tokens / max_length, min_new_tokens / min_length,
    num_beams, length_penalty, early_stopping (True, False, "never"), num_return_sequences,
    no_repeat_ngram_size, encoder_no_repeat_ngram_size, repetition_penalty, forced_bos_token_id,
    forced_eos_token_id, decoder_start_token_id, eos_token_id, pad_token_id, do_sample, temperature,
    top_k, top_p, output_scores, return_dict_in_generate; and minipegx's seed (int or Generator),
    static_cache (preallocated self-attention cache) and progress (called with
    (step, max_steps, num_alive_beams) after each step). Defaults: model.generation_config, then
    model.config, then transformers' GenerationConfig defaults."""
    opts = resolve_options(model, options)
    ids, mask = prepare_inputs(model, input_ids, attention_mask)
    beam = opts.num_beams > 1
    steps = (_beam_search if beam else _greedy)(model, ids, mask, opts)
    scores, last = [], None
    for last in steps:
        if opts.output_scores:
            scores.append(last.scores)
    if beam:
        seqs, seq_scores, beam_indices = finish_beams(last.state, opts)
    else:
        seqs, seq_scores, beam_indices = last.sequences, None, None
    if not opts.return_dict_in_generate:
        return seqs
    return GenerateOutput(seqs, seq_scores if opts.output_scores else None,
                          tuple(scores) if opts.output_scores else None, beam_indices)
