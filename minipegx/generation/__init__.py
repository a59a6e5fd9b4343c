"""Generation: greedy search, sampling and beam search, one decoder step at a time, step-through friendly,
reproducing transformers 5.x generate() for an encoder-decoder, option for option.

    options.py     option names, defaults, precedence and one checking rule per option
    processors.py  logits processors and sampling warps, in transformers' order
    cache.py       encode once, cross keys/values once, one token per row per step, beam reordering
    search.py      greedy search / sampling steps and `generate`, the driver
    beam.py        beam search steps (BeamState, BeamStep)

The package is `generation`, not `generate`, so the module and its main function no longer share a
name; `minipegx.generate` stays as an alias module re-exporting these names.
"""

from .beam import BeamState, BeamStep, beam_search_steps
from .options import GenerationOptions, check_options, resolve_options
from .search import GenerateOutput, GreedyStep, generate, greedy_steps

__all__ = ["BeamState", "BeamStep", "GenerateOutput", "GenerationOptions", "GreedyStep", "beam_search_steps",
           "check_options", "generate", "greedy_steps", "resolve_options"]
