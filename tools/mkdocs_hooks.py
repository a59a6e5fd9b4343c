"""mkdocs hooks: the notebooks (and the few other repository files the docs link to) on the site.

The pages in docs/ link to ``../notebooks/03_decoding.ipynb`` so that they read the same on GitHub. The
site has no ``..``: this hook adds the files under SITE_FILES to the site under their repository path
(``notebooks/03_decoding.ipynb``, rendered as a page by mkdocs-jupyter) and rewrites each page's
``](../X)`` links to ``](X)``. mkdocs then checks every such link like any other (mkdocs.yml's
``validation``: a link to a file that is not on the site is a warning, and ``--strict`` makes it an
error), so a dead link into the notebooks fails the build.

The Notebooks section of the navigation is every ``notebooks/NN_*.ipynb``, in order, titled by the
notebook's first heading: a new notebook appears on the site with no edit here or in mkdocs.yml.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
# Repository files on the site besides docs/: notebooks (pages), their exercise notebooks, and the
# files the docs link to.
SITE_FILES = ("notebooks/*.ipynb", "notebooks/exercises/*.ipynb", "notebooks/jupytext.toml",
              "benchmarks/README.md")
NAV_NOTEBOOKS = "notebooks/[0-9][0-9]_*.ipynb"
UP_LINK = re.compile(r"\]\(\.\./(?!\.\./)")


def notebook_title(path: Path) -> str:
    """The first Markdown heading of a notebook, without its '#'s ('03 decoding' when it has none)."""
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem.replace("_", " ")


def on_config(config):
    """Append the Notebooks section to the navigation."""
    notebooks = sorted(ROOT.glob(NAV_NOTEBOOKS))
    config.nav = list(config.nav or []) + [
        {"Notebooks": [{notebook_title(p): p.relative_to(ROOT).as_posix()} for p in notebooks]}]
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns the .ipynb files into pages
def on_files(files, config):
    for pattern in SITE_FILES:
        for path in sorted(ROOT.glob(pattern)):
            files.append(File(path.relative_to(ROOT).as_posix(), str(ROOT), config.site_dir,
                              config.use_directory_urls))
    return files


def on_page_markdown(markdown, page, config, files):
    """docs/X.md's ``](../notebooks/...)`` is ``](notebooks/...)`` on the site (pages of docs/ itself only)."""
    if Path(page.file.abs_src_path).parent == Path(config.docs_dir).resolve():
        return UP_LINK.sub("](", markdown)
    return markdown
