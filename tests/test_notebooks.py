"""The teaching notebooks: jupytext sources paired with output-free .ipynb files, linted, and executed.

Each notebook is a pair (notebooks/jupytext.toml): `NN_name.py`, the jupytext percent-format source
that is edited, diffed and linted like code, and `NN_name.ipynb`, what students open. These tests
check that the pair agrees cell for cell, that the .ipynb carries no outputs, and that the sources
pass ruff. Running them is nbmake's job: pyproject's `addopts = "--nbmake"` with `notebooks` in
`testpaths` makes `python3 -m pytest -q` execute every .ipynb top to bottom on a fresh kernel in
notebooks/ (about 5 s each on two CPU cores); any error, including a failed `assert` that pins a
number the prose states, fails that notebook's test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def cells(notebook):
    """(type, source) of every cell, the form in which a .py and its .ipynb must agree."""
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]


def test_every_notebook_is_a_py_source_paired_with_an_ipynb():
    assert SOURCES == ["01_architecture.py", "02_attention.py", "03_decoding.py",
                       "04_parity_exercise.py", "05_long_inputs.py", "06_ablations.py", "07_training.py",
                       "08_long_adaptation.py"]
    ipynbs = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert ipynbs == [s.replace(".py", ".ipynb") for s in SOURCES]
    assert 'formats = "ipynb,py:percent"' in (NOTEBOOKS / "jupytext.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("source", SOURCES)
def test_ipynb_has_the_cells_of_its_py_source(source):
    ipynb = NOTEBOOKS / source.replace(".py", ".ipynb")
    mine, theirs = cells(jupytext.read(NOTEBOOKS / source)), cells(nbformat.read(ipynb, as_version=4))
    differ = [i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b]
    assert len(mine) == len(theirs) and not differ, (
        f"{ipynb.name} is out of sync with {source} ({len(theirs)} vs {len(mine)} cells, first differing "
        f"cell {differ[:1]}): edit the .py and run `jupytext --sync notebooks/{source}`")


@pytest.mark.parametrize("source", SOURCES)
def test_committed_ipynb_has_no_outputs(source):
    nb = nbformat.read(NOTEBOOKS / source.replace(".py", ".ipynb"), as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{source}: cells {dirty} of the .ipynb carry outputs; clear them before committing"


def test_notebook_sources_pass_ruff():
    """Undefined or unused names, syntax errors: the checks pyproject's [tool.ruff] selects."""
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "notebooks"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("source", SOURCES)
def test_a_notebook_that_draws_shows_its_figures(source):
    """Without `%matplotlib inline` a returned Figure prints as text instead of a picture."""
    code = [c.source for c in jupytext.read(NOTEBOOKS / source).cells if c.cell_type == "code"]
    if any("viz.plot_" in c for c in code):
        assert "%matplotlib inline" in code[0], f"{source}: the first code cell must say %matplotlib inline"


def test_the_test_run_executes_the_notebooks(pytestconfig):
    """CI runs plain `python3 -m pytest -q`: pyproject must turn nbmake on and collect notebooks/."""
    assert pytestconfig.getoption("nbmake"), "add --nbmake to [tool.pytest.ini_options] addopts"
    assert "notebooks" in pytestconfig.getini("testpaths")


def test_notebook_03_document_is_the_demo_tasks_seed_32():
    """Notebook 03 embeds its document (the kernel cannot import tools/); it must stay the one it cites."""
    import ast
    import random

    from tools.demo_data import make_named_example

    source = ast.parse((NOTEBOOKS / "03_decoding.py").read_text(encoding="utf-8"))
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in source.body
              if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("DOCUMENT", "TRUE_SUMMARY")}
    assert (values["DOCUMENT"], values["TRUE_SUMMARY"]) == make_named_example(random.Random(32), 150)


def test_notebook_08_documents_are_the_long_tasks_seeds():
    """Notebook 08 reads its documents from notebooks/data (the kernel cannot import tools/); each must stay
    the long task's document of its stored seed and length."""
    import json
    import random

    from tools.demo_data import make_example

    docs = json.loads((NOTEBOOKS / "data" / "08_documents.json").read_text(encoding="utf-8"))
    assert [d["tokens"] for d in docs] == [1500, 4000, 7000, 12000]
    for d in docs:
        assert (d["document"], d["summary"]) == make_example(random.Random(d["seed"]), d["tokens"])


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


def test_notebook_04_needs_torch_only_in_its_guarded_last_cell():
    """Notebook 04 runs without torch: only its last code cell reaches transformers, under has_transformers()."""
    code = [c.source for c in jupytext.read(NOTEBOOKS / "04_parity_exercise.py").cells if c.cell_type == "code"]
    import re

    reference = re.compile(r"\b(torch|transformers|load_reference|compare)\b")     # not has_transformers
    assert not any(reference.search(cell) for cell in code[:-1])
    assert code[-1].startswith("if has_transformers():")
