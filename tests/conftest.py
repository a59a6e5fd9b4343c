"""Fixtures shared by test modules."""

from __future__ import annotations

import sys

import pytest

import cupy_standin as standin


@pytest.fixture(scope="module")
def cp():
    """The CuPy stand-in (tests/cupy_standin.py) as `cupy` for one module's tests (removed afterwards); its
    counts reset."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "cupy", standin)
        standin.COUNTS.reset()
        yield standin
