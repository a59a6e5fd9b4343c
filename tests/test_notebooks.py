"""The teaching notebooks run top to bottom, offline, and are committed without outputs.

Each notebook is executed with nbclient on a fresh `python3` kernel (the interpreter running pytest),
in notebooks/, with a per-cell timeout; any error fails the test. The committed .ipynb files must
carry no outputs (outputs are personal, large, and go stale) and must equal what
notebooks/build_notebooks.py writes, so the builder stays the one place the notebooks are edited.
Together the five take about a minute on two CPU cores.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT = 300            # seconds per cell: the slowest cell takes a few seconds; room for slow CI machines
NEEDS_REFERENCE = {"04_parity_exercise.ipynb"}   # compares with transformers (the test extra)


def load_builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_five_notebooks_are_there():
    assert NAMES == ["01_architecture.ipynb", "02_attention.ipynb", "03_decoding.ipynb",
                     "04_parity_exercise.ipynb", "05_long_inputs.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{name}: cells {dirty} carry outputs; strip them (rebuild with notebooks/build_notebooks.py)"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_equals_the_builder_output(name, tmp_path):
    builder = load_builder()
    builder.build(name, builder.NOTEBOOKS[name], out_dir=tmp_path)
    assert (tmp_path / name).read_text(encoding="utf-8") == (NOTEBOOKS / name).read_text(encoding="utf-8"), \
        f"{name} differs from notebooks/build_notebooks.py: edit the builder and run it, not the .ipynb"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, monkeypatch):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    if name in NEEDS_REFERENCE:
        pytest.importorskip("torch")
        pytest.importorskip("transformers")
    from nbclient import NotebookClient

    # The python3 kernelspec usually runs `python` from PATH: make that the interpreter running the tests.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.perf_counter()
    client.execute()          # raises CellExecutionError, naming the cell, on any error
    elapsed = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # Every figure cell must show its figure (a Figure without `%matplotlib inline` prints as text).
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if any("viz.plot_" in c.source for c in nb.cells if c.cell_type == "code"):
        assert images > 0, f"{name} draws figures but none was displayed"
    print(f"{name}: {elapsed:.1f} s")


# ------------------------------------------------------------------------------------------- docs
# The docs are teaching material too: their relative links must resolve on GitHub and in mkdocs.
DOCS = ROOT / "docs"


def test_docs_relative_links_resolve():
    import re

    broken = []
    for page in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue                                   # http(s)://, mailto:, in-page anchors
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.name} -> {target}")
    assert not broken, "broken relative links: " + ", ".join(broken)


def test_api_reference_names_every_public_function():
    import re

    import minipegx
    from minipegx import checkpoint

    api = (DOCS / "api.md").read_text(encoding="utf-8")
    names = ["from_pretrained", "demo_model_path", "example_document", "summarize", "Tokenizer", "PegasusX",
             "PegasusXConfig", "Seq2SeqLMOutput", "EncoderOutput", "greedy_steps", "beam_search_steps",
             "GenerateOutput", "compare", "ParityReport"]
    names += [n for n in checkpoint.__all__ if not n.isupper()]
    names += [n for n in dir(minipegx) if n.endswith(("Error", "Warning"))]
    if os.path.exists(Path(minipegx.__file__).parent / "viz.py"):
        from minipegx import viz
        names += viz.__all__
    missing = [n for n in names if not re.search(rf"`[^`]*\b{re.escape(n)}\b[^`]*`", api)]
    assert not missing, f"docs/api.md does not document: {', '.join(missing)}"
