"""Generation options: transformers' names, defaults and precedence, each value checked by one rule.

Precedence (as transformers 5.x generate() for an encoder-decoder): the call's options > the model's
generation_config.json > config.json (special tokens only) > transformers' GenerationConfig defaults.
Every value, whatever its source, goes through its rule in RULES (type, range, NaN/inf) and then the
rules between options (lengths, beams vs return sequences, sampling); anything wrong raises
GenerationConfigError naming the option, where the value came from and the fix. `check_options`
runs the same per-option rules without a model, so summarize() refuses bad options before loading.
"""

from __future__ import annotations

import difflib
import math
import numbers
import warnings
from dataclasses import dataclass

from ..errors import GenerationConfigError, MiniPegxWarning
from ..inputs import as_flag, as_int, as_real, check_model, short

LONG_RUN = 1024              # warn above this many decoder steps when max_new_tokens is not given
# Stated limits (raise them here for a legitimate need): they bound the memory one call can ask for.
MAX_LENGTH = 1 << 16         # decoder steps + 1: 4x PEGASUS-X's 16,384 positions
MAX_BEAMS = 1024             # num_beams and num_return_sequences: rows x vocabulary scores per step
MAX_PENALTY_EXPONENT = 80.0  # |length_penalty| * ln(max_length): keeps length ** penalty finite in float32

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


def fail(msg):
    raise GenerationConfigError(msg)


# ================================================================================= one rule per option
# rule(name, value, V) -> the checked value; V is the vocabulary size, or None when no model is at hand.
def _count(lo, hi=None):
    return lambda name, v, V: as_int(name, v, lo, hi, GenerationConfigError)


def _real(ok, rule):
    return lambda name, v, V: as_real(name, v, ok, rule, GenerationConfigError)


def _flag(name, v, V):
    return as_flag(name, v, GenerationConfigError)


def _id(name, v, V):
    """One token id in [0, V)."""
    hi = None if V is None else V - 1
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0 or (hi is not None and v > hi):
        fail(f"{name} must be one token id in [0, {V if V is not None else 'vocab_size'}), got {short(v)}")
    return int(v)


def _ids(name, v, V):
    """A token id or a list of them -> a tuple of ids, or None for an empty list (no such token)."""
    ids = list(v) if isinstance(v, (list, tuple)) else [v]
    if len(ids) > MAX_BEAMS:
        fail(f"{name} lists {len(ids)} ids; at most {MAX_BEAMS}")
    return tuple(_id(name, i, V) for i in ids) or None


def _early_stopping(name, v, V):
    if isinstance(v, str) and v == "never":
        return v
    if not isinstance(v, bool) and type(v).__name__ != "bool_":
        fail(f"early_stopping must be True, False or 'never', got {short(v)}")
    return bool(v)


def _seed(name, v, V):
    if hasattr(v, "random") and not isinstance(v, (numbers.Number, str)):
        return v                                           # a Generator, used as is
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < 2 ** 64:
        fail(f"seed must be None, an integer in [0, 2**64) or a random Generator (numpy.random.default_rng(...)), "
             f"got {short(v)}")
    return int(v)


def _progress(name, v, V):
    if not callable(v):
        fail(f"progress must be None or a callable (step, max_steps, num_alive_beams), got {type(v).__name__}")
    return v


RULES = dict(
    max_length=_count(0, MAX_LENGTH), max_new_tokens=_count(1, MAX_LENGTH - 1),
    min_length=_count(0, MAX_LENGTH), min_new_tokens=_count(0, MAX_LENGTH - 1),
    num_beams=_count(1, MAX_BEAMS), num_return_sequences=_count(1, MAX_BEAMS),
    top_k=_count(0), no_repeat_ngram_size=_count(0), encoder_no_repeat_ngram_size=_count(0),
    length_penalty=_real(lambda x: True, "a finite number (1.0 = average log-prob per token)"),
    temperature=_real(lambda x: True, "a finite number (> 0 with do_sample=True)"),
    top_p=_real(lambda p: 0 < p <= 1, "in (0, 1] (1 keeps every token)"),
    repetition_penalty=_real(lambda r: r > 0, "a finite number > 0 (1.0 = off)"),
    early_stopping=_early_stopping, do_sample=_flag, output_scores=_flag, return_dict_in_generate=_flag,
    static_cache=_flag, use_cache=_flag,
    forced_bos_token_id=_id, decoder_start_token_id=_id, bos_token_id=_id, pad_token_id=_id,
    eos_token_id=_ids, forced_eos_token_id=_ids, seed=_seed, progress=_progress)
assert set(RULES) == set(KNOWN_OPTIONS)


def check_names(options):
    """Unknown option names are an error that names them, suggests the closest and lists the known ones."""
    unknown = sorted(str(u)[:80] for u in set(options) - set(KNOWN_OPTIONS))
    if unknown:
        hints = {u: difflib.get_close_matches(u, KNOWN_OPTIONS, 1) for u in unknown}
        hint = "; ".join(f"did you mean {h[0]!r} for {u!r}?" for u, h in hints.items() if h)
        fail(f"unknown generation option(s) {', '.join(map(repr, unknown))}. {hint + ' ' if hint else ''}"
             f"Known options: {', '.join(KNOWN_OPTIONS)}")


def check_options(options, vocab_size=None):
    """The call's options, each checked by its rule (None = unset), without a model: names, types, ranges,
    NaN and inf. Returns {name: checked value}."""
    check_names(options)
    return {name: None if v is None else RULES[name](name, v, vocab_size) for name, v in options.items()}


# ================================================================================= layering and resolving
def layered_options(model, options):
    """{name: (value, source)}: the call's options over model.generation_config (generation_config.json)
    over model.config (config.json, special tokens only) over transformers' GenerationConfig defaults.
    An explicit None means "unset": the default, skipping the model's files (as in transformers, where
    generate(forced_eos_token_id=None) turns forced EOS off)."""
    gen = model.generation_config or {}
    if not isinstance(gen, dict):
        fail(f"model.generation_config must be a dict (generation_config.json's object), got {type(gen).__name__}")
    gen = {k: v for k, v in gen.items() if isinstance(k, str) and not k.startswith("_")}
    ignored = sorted(k[:80] for k, v in gen.items() if k not in TRANSFORMERS_DEFAULTS and k not in METADATA_KEYS
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


def checked(layered, vocab_size):
    """{name: (checked value, source)}: each value through its rule; a value from a file names the file."""
    out = {}
    for name, (value, source) in layered.items():
        label = name if source in ("the call", "default") else f"{name} (from {source})"
        out[name] = (None if value is None else RULES[name](label, value, vocab_size)), source
    return out


def lengths(o, max_position_embeddings):
    """(max_length, min_length), both counting the decoder start token, as transformers'
    _prepare_generated_length computes them for an encoder-decoder (decoder input length 1)."""
    if o["max_new_tokens"][0] is not None:
        max_length = o["max_new_tokens"][0] + 1
    else:
        max_length, source = o["max_length"]
        if source == "default":  # 20 *new* tokens by default, capped at max_position_embeddings
            max_length = min(max_length + 1, max_position_embeddings)
        if max_length < 2:
            fail(f"max_length={max_length} leaves no room to generate: it counts the decoder start token, so "
                  "use max_length >= 2 or, better, max_new_tokens >= 1")
        if max_length - 1 > LONG_RUN:
            warnings.warn(f"max_length={max_length} (from {source}) allows {max_length - 1} decoder steps; "
                          "pass max_new_tokens=... to bound the run", MiniPegxWarning, stacklevel=4)
    if o["min_new_tokens"][0] is not None:           # min_new_tokens wins over min_length
        min_length = o["min_new_tokens"][0] + 1
        what = f"min_new_tokens ({min_length - 1})"
    else:
        min_length = o["min_length"][0]
        what = f"min_length ({min_length})"
    if min_length > max_length:
        fail(f"{what} asks for more tokens than the maximum (max_length {max_length}, start token included); "
             "lower the minimum or raise max_new_tokens / max_length")
    return max_length, min_length


def special_tokens(v):
    """(decoder start, EOS ids, pad) as transformers' _prepare_special_tokens: the start token falls back
    to bos_token_id, pad to the first EOS id."""
    eos, pad = v["eos_token_id"], v["pad_token_id"]
    if pad is None and eos is not None:
        pad = eos[0]
    start = v["bos_token_id"] if v["decoder_start_token_id"] is None else v["decoder_start_token_id"]
    if start is None:
        fail("decoder_start_token_id is not set (nor bos_token_id): pass decoder_start_token_id=... "
             "(PEGASUS-X uses 0, the pad token)")
    return start, eos, pad


def resolve_options(model, options: dict) -> GenerationOptions:
    """Every option's final value (see layered_options for the precedence), checked: anything invalid
    raises GenerationConfigError naming the option and the fix."""
    check_model(model)
    check_names(options)
    o = checked(layered_options(model, options), model.config.vocab_size)
    v = {name: value for name, (value, _) in o.items()}
    num_beams, nrs, do_sample = v["num_beams"], v["num_return_sequences"], v["do_sample"]
    if num_beams > 1 and nrs > num_beams:
        fail(f"num_return_sequences ({nrs}) must be <= num_beams ({num_beams}): beam search returns its best "
             f"num_beams hypotheses; raise num_beams or lower num_return_sequences")
    if num_beams == 1 and nrs > 1 and not do_sample:
        fail(f"num_return_sequences={nrs} needs num_beams >= {nrs} (beam search) or do_sample=True; greedy "
             "search has a single answer")
    max_length, min_length = lengths(o, model.config.max_position_embeddings)
    if do_sample and not v["temperature"] > 0:
        fail(f"temperature must be a number > 0 with do_sample=True, got {v['temperature']} (for the most "
             "likely tokens use do_sample=False: greedy or beam search)")
    if abs(v["length_penalty"]) * math.log(max_length) > MAX_PENALTY_EXPONENT:
        fail(f"length_penalty={v['length_penalty']} makes length ** length_penalty overflow float32 at "
             f"max_length={max_length}; keep |length_penalty| <= {MAX_PENALTY_EXPONENT / math.log(max_length):.3g}")
    start, eos, pad = special_tokens(v)
    return GenerationOptions(
        max_length=max_length, min_length=min_length, num_beams=num_beams, length_penalty=v["length_penalty"],
        early_stopping=v["early_stopping"], do_sample=do_sample, temperature=v["temperature"], top_k=v["top_k"],
        top_p=v["top_p"], repetition_penalty=v["repetition_penalty"],
        no_repeat_ngram_size=v["no_repeat_ngram_size"], encoder_no_repeat_ngram_size=v["encoder_no_repeat_ngram_size"],
        num_return_sequences=nrs, forced_bos_token_id=v["forced_bos_token_id"],
        forced_eos_token_ids=v["forced_eos_token_id"], decoder_start_token_id=start, eos_token_ids=eos,
        pad_token_id=pad, output_scores=v["output_scores"], return_dict_in_generate=v["return_dict_in_generate"],
        static_cache=v["static_cache"], seed=v["seed"], progress=v["progress"])
