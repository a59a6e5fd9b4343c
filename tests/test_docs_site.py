"""The documentation site builds with `mkdocs build --strict`: every page, the notebooks as pages, the API
reference generated from the docstrings, and no dead link -- links into the notebooks included.

The build here does not execute the notebooks (MINIPEGX_DOCS_EXECUTE=false): the suite already runs
each one with nbmake, and executing them again would double that time. The published site
(`mkdocs build`, execution on by default in mkdocs.yml) shows their outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build(config: Path, site: Path):
    env = {**os.environ, "MINIPEGX_DOCS_EXECUTE": "false", "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", site)
    assert done.returncode == 0, done.stderr[-4000:]
    return site


def test_every_notebook_is_a_page_in_the_navigation(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert (site / "notebooks" / notebook.stem / "index.html").exists(), notebook.name
        assert f'href="notebooks/{notebook.stem}/"' in index, f"{notebook.name} is not in the navigation"


def test_every_docs_page_is_in_the_navigation(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.stem != "index":
            assert f'href="{page.stem}/"' in index, f"docs/{page.name} is not in mkdocs.yml's nav"


def test_the_docs_links_into_notebooks_reach_the_notebook_pages(site):
    page = (site / "parity" / "index.html").read_text(encoding="utf-8")
    assert 'href="../notebooks/04_parity_exercise/"' in page


def test_the_api_reference_is_generated_from_the_docstrings(site):
    from minipegx.model import from_pretrained

    page = (site / "api" / "index.html").read_text(encoding="utf-8")
    first_line = from_pretrained.__doc__.split("\n")[0].split("(")[0]
    assert 'id="minipegx.model.from_pretrained"' in page and first_line in page


def test_a_dead_link_into_the_notebooks_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("[there](../notebooks/01_architecture.ipynb) "
                                   "[not there](../notebooks/99_missing.ipynb)\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"site_name: t\ndocs_dir: {docs}\nhooks: [{ROOT / 'tools' / 'mkdocs_hooks.py'}]\n"
                      "plugins: [{mkdocs-jupyter: {include: ['*.ipynb'], execute: false, cache: false}}]\n"
                      "validation: {links: {not_found: warn}}\n")
    done = build(config, tmp_path / "site")
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert done.returncode != 0
    assert any("99_missing.ipynb" in w for w in warnings) and not any("01_architecture" in w for w in warnings)
