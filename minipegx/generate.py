"""Compatibility alias: generation moved to the package minipegx.generation (options, processors, cache,
search, beam). `from minipegx.generate import generate, greedy_steps, ...` keeps working; new code
imports from minipegx.generation. The package is named `generation` so that the module and its main
function, `generate`, no longer share a name."""

from .decoding import Decoding  # noqa: F401
from .generation import *  # noqa: F401,F403
from .generation.beam import (NEG, beam_search, beam_step, fill_value, finish_beams, flag, gather,  # noqa: F401
                              init_beams, pad_last, search_over, searching)
from .generation.cache import decode_step, prepare_inputs, reorder_cache, start_decoding  # noqa: F401
from .generation.options import (FROM_MODEL_CONFIG, KNOWN_OPTIONS, LONG_RUN, METADATA_KEYS,  # noqa: F401
                                 MINIPEGX_OPTIONS, TRANSFORMERS_DEFAULTS, check_names, layered_options, lengths,
                                 special_tokens)
from .generation.processors import (ban, encoder_ngrams, encoder_no_repeat_ngram, gumbel, is_eos,  # noqa: F401
                                    log_softmax, make_rng, no_repeat_ngram, only, process_scores,
                                    repetition_penalty, token_mask, top_k, warp_for_sampling)
from .generation.search import greedy  # noqa: F401
from .generation.options import fail as _fail  # noqa: F401,E402  (the old private names)

_beam_search, _greedy = beam_search, greedy
