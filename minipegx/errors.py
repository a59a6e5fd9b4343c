"""minipegx's own exception and warning types.

Every error raised at a boundary (config, checkpoint, tokenizer, model input, generation options,
backend, command line) is one of these, so callers can catch ``minipegx.MiniPegxError`` and still
catch the matching built-in (``ValueError``, ``FileNotFoundError`` ...) where that reads better.
Layer functions raise nothing of their own: they stay free of checks that hide the math.
"""


class MiniPegxError(Exception):
    """Base class of every error minipegx raises on purpose."""


class ConfigError(MiniPegxError, ValueError):
    """config.json (or a PegasusXConfig built by hand) is missing, unreadable or invalid."""


class CheckpointError(MiniPegxError, ValueError):
    """A checkpoint file is missing, corrupt, unsafe or does not fit the config."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint directory or one of its files does not exist."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint asked for something outside the small set of allowed globals."""


class TokenizerError(MiniPegxError, ValueError):
    """spiece.model is missing or corrupt, or the text cannot be tokenized."""


class InputError(MiniPegxError, ValueError):
    """Arrays given to the model have the wrong shape, dtype or values."""


class GenerationConfigError(MiniPegxError, ValueError):
    """Generation options are inconsistent (num_beams < 1, min length above max length, ...)."""


class BackendError(MiniPegxError, RuntimeError):
    """The requested array backend (CuPy, a GPU, a dtype) is not available here."""


class NumericalError(MiniPegxError, FloatingPointError):
    """A forward pass produced inf or NaN; the message names the first layer where it appeared."""


class CorpusError(MiniPegxError, ValueError):
    """A corpus file or its output is unusable: malformed lines, duplicate ids, a locked or corrupt output."""


class MissingDependencyError(MiniPegxError, ImportError):
    """An optional extra (dask for clusters, rouge-score for evaluation, matplotlib for plots) is not installed."""


class MiniPegxWarning(UserWarning):
    """Base class of minipegx's warnings: the work goes on, but you should know."""


class TruncationWarning(MiniPegxWarning):
    """An input was cut to a maximum length."""


class LongInputWarning(MiniPegxWarning):
    """An input is longer than config.max_position_embeddings (positions are sinusoidal, so it works)."""


__all__ = [name for name in dir() if name[0].isupper()]
