"""Replace a minipegx function for a while -- a student's layer norm, a planted bug -- and put it back.

Used by the parity tool (compare(patch=...)) and the course checker (check_function).
"""

from __future__ import annotations

import contextlib
import importlib
import sys

from .errors import InputError


@contextlib.contextmanager
def patched(patch):
    """Temporarily replace functions, e.g. {"minipegx.layers.layer_norm": my_fn}, and put them back on exit.

    Named by its home module (where it is defined: minipegx.layers.layer_norm), a function is replaced
    wherever minipegx calls it: encoder.py and decoder.py import the layer functions by name
    (`from .layers import layer_norm`), so the function object is swapped in every loaded minipegx module
    that binds it. Named by another module ({"minipegx.decoder.sinusoidal_positions": fn}), only that
    module's use is replaced (here the decoder's positions, not the encoder's). A replaced layer_norm,
    linear, softmax or activation replaces the precision seam around it too (precision.float32_inside):
    at float32 the seam is the plain formula, so the model computes the same."""
    saved = []
    try:
        for dotted, fn in (patch or {}).items():
            module_name, _, attr = dotted.rpartition(".")
            try:
                module = importlib.import_module(module_name)
            except ImportError as e:
                raise InputError(f"cannot patch {dotted}: no module {module_name}") from e
            if not hasattr(module, attr):
                raise InputError(f"cannot patch {dotted}: {module_name} has no {attr}")
            original = getattr(module, attr)
            home = getattr(original, "__module__", None) == module_name
            for holder, name in (_bindings(original) if home else []) or [(module, attr)]:
                saved.append((holder, name, original))
                setattr(holder, name, fn)
        yield
    finally:
        for holder, name, original in reversed(saved):
            setattr(holder, name, original)


def _bindings(obj):
    """(module, attribute name) of every loaded minipegx module attribute that is `obj` itself."""
    return [(module, name) for mod_name, module in list(sys.modules.items())
            if module is not None and (mod_name == "minipegx" or mod_name.startswith("minipegx."))
            for name, value in list(vars(module).items()) if value is obj and not name.startswith("__")]
