"""The reference model, transformers' PegasusXForConditionalGeneration, loaded quietly for comparisons.

Imported lazily: minipegx's runtime never needs torch or transformers; the parity tool and the course
checker's optional second check do.
"""

from __future__ import annotations

import importlib
import warnings

from .errors import BackendError


def _reference_modules():
    try:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
    except ImportError as e:
        raise BackendError("minipegx.parity compares with transformers: pip install 'minipegx[test]' "
                           "(transformers and torch==2.13.0 CPU)") from e
    return torch, transformers


def load_reference(checkpoint):
    """transformers' PegasusXForConditionalGeneration from a checkpoint directory, in eval mode, with
    its progress bars, info logs and tqdm's "IProgress not found" notebook hint silenced (notebooks and
    reports stay readable)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        _, transformers = _reference_modules()
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        return transformers.PegasusXForConditionalGeneration.from_pretrained(checkpoint).eval()
