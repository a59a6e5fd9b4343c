"""minipegx: PEGASUS-X (Phang, Zhao & Liu 2022) from scratch, as small array functions over NumPy / CuPy.

    import minipegx
    model = minipegx.from_pretrained("path/to/pegasus-x-base")     # or None: the bundled (long) demo model
    tok = minipegx.Tokenizer.from_pretrained("path/to/pegasus-x-base")
    batch = tok(["a long document ..."], return_tensors="np")
    out = model(**batch, decoder_input_ids=[[0]])                   # .logits [B, S, V]
    ids = model.generate(batch["input_ids"], batch["attention_mask"], num_beams=4)
    minipegx.summarize(["a long document ..."])                     # text in, summary out
"""

from .errors import *  # noqa: F401,F403  (MiniPegxError and friends)

__version__ = "0.1.0"

_LAZY = {
    "Tokenizer": ("tokenizer", "Tokenizer"),
    "summarize": ("pipeline", "summarize"),
    "PegasusXConfig": ("config", "PegasusXConfig"),
    **{name: ("model", name) for name in ("EncoderOutput", "PegasusX", "Seq2SeqLMOutput", "demo_model_path",
                                           "from_pretrained")},
}


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def __getattr__(name):
    # NumPy and the model load on first use, so `import minipegx` (and the CLI's start-up, where Ctrl-C
    # must already be handled) stays light.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'minipegx' has no attribute {name!r}")


# Each demo model's bundled example (held out from its training): "long" (the default model, ~12,000 tokens of
# the roles task) and "short" (the first demo model, ~2,500 tokens of its named task).
EXAMPLES = {"long": "example_long", "short": "example"}


def example_path(model: str = "long", kind: str = "document") -> str:
    """The bundled example file of demo model `model`: kind "document" or "summary" (its true summary)."""
    import os

    from .errors import InputError

    if model not in EXAMPLES:
        raise InputError(f"no bundled example for demo model {model!r}; choose one of {', '.join(EXAMPLES)}")
    if kind not in ("document", "summary"):
        raise InputError(f"example kind must be 'document' or 'summary', got {kind!r}")
    return os.path.join(os.path.dirname(__file__), "data", f"{EXAMPLES[model]}_{kind}.txt")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def example_document(model: str = "long") -> str:
    """The bundled example document of demo model `model` ("long", the default, or "short"), held out from
    its training."""
    return _read(example_path(model, "document"))


def example_summary(model: str = "long") -> str:
    """The true summary of example_document(model)."""
    return _read(example_path(model, "summary"))
