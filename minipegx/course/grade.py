"""The exercise notebooks and their autograder: student notebooks made from the solutions, and otter-grader
wired to check_function, grading a folder of submissions into one CSV.

    python -m minipegx.course build notebooks/exercises        # SOLUTIONS.py -> both .ipynb
    python -m minipegx.course grade SUBMISSIONS_DIR --out grades.csv

One source: `pegasus_x_exercises_SOLUTIONS.py` (a jupytext percent-format notebook, paired with its .ipynb).
The student notebook, `pegasus_x_exercises_student.ipynb`, is that source with every `### BEGIN SOLUTION`
... `### END SOLUTION` block (nbgrader's markers) replaced by `raise NotImplementedError`, so the two
cannot diverge.

Grading uses otter-grader (https://otter-grader.readthedocs.io), non-containerized: `otter grade` needs
Docker, so each submission goes through `otter.api.grade_submission`, which executes the notebook on a
local kernel (cells tagged `otter_ignore`, the check cells, are skipped) and runs one otter test per
rubric line; each test calls check_function(name, the student's function, with_transformers=False), so the
verdict does not depend on what the grading machine has installed.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
import zipfile
from pathlib import Path

from ..errors import InputError

SOLUTIONS = "pegasus_x_exercises_SOLUTIONS.py"
STUDENT = "pegasus_x_exercises_student.ipynb"
# Points per exercise function: the exercises' headings state them too (a test keeps the two equal).
RUBRIC = {
    "layer_norm": 2, "ffn": 2,                                    # 1 · layer norm and the FFN
    "sinusoidal_positions": 2,                                    # 2 · the sinusoid
    "global_local_attention": 4,                                  # 3 · block-local attention, global tokens
    "stagger": 2, "encoder_layer": 3,                             # 4 · staggered blocks, the encoder layer
    "self_attention": 3, "cross_kv": 1, "cross_attention": 3,     # 5 · the decoder's attention and caches
    "beam_step": 4,                                               # 6 · one step of beam search
}
_BLOCK = re.compile(r"^([ \t]*)### BEGIN SOLUTION\n.*?^[ \t]*### END SOLUTION\n", re.M | re.S)


def strip_solutions(source: str) -> str:
    """The student version of a solution source: each marked block becomes `raise NotImplementedError`."""
    if source.count("### BEGIN SOLUTION") != source.count("### END SOLUTION"):
        raise InputError("unbalanced ### BEGIN SOLUTION / ### END SOLUTION markers")
    return _BLOCK.sub(lambda m: f"{m[1]}# YOUR CODE HERE\n{m[1]}raise NotImplementedError\n", source)


def student_notebook(solutions_source: str):
    """The student notebook (a jupytext notebook object) made from the SOLUTIONS source text."""
    import jupytext

    return jupytext.reads(strip_solutions(solutions_source), fmt="py:percent")


def build(folder) -> list:
    """Write the SOLUTIONS .ipynb (the pair of its .py) and the student .ipynb, both without outputs, from
    the SOLUTIONS source in `folder`. The student version has no .py of its own: its source is SOLUTIONS.py."""
    import jupytext

    folder = Path(folder)
    solutions = folder / SOLUTIONS
    written = {solutions.with_suffix(".ipynb"): jupytext.read(solutions),
               folder / STUDENT: student_notebook(solutions.read_text(encoding="utf-8"))}
    for path, notebook in written.items():
        for i, cell in enumerate(notebook.cells):  # ids by position: a rebuild changes only what changed
            cell.id = f"cell-{i:02d}"
        jupytext.write(notebook, path, fmt="ipynb")
    return list(written)


def _test_file(name, points):
    """An otter exception-format test: the student's function by name from the notebook's globals."""
    return (f"from otter.test_files import test_case\n\nOK_FORMAT = False\nname = {name!r}\npoints = {points}\n\n\n"
            f"@test_case(points={points})\ndef test_{name}({name}):\n"
            f"    from minipegx.parity import check_function\n"
            f"    result = check_function({name!r}, {name}, with_transformers=False)\n"
            f"    assert result.passed, result.message\n")


def autograder_zip(directory, rubric=None) -> Path:
    """The otter autograder zip (tests/<name>.py per rubric line, otter_config.json) in `directory`."""
    path = Path(directory) / "autograder.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, points in (rubric or RUBRIC).items():
            z.writestr(f"tests/{name}.py", _test_file(name, points))
        z.writestr("otter_config.json", json.dumps({"pdf": False, "print_summary": False}))
    return path


def _feedback(result):
    """check_function's message out of otter's failure text (which wraps it in the failed assert)."""
    text = "\n".join(r.message for r in result.test_case_results if not r.passed)
    return text.split("AssertionError: ", 1)[-1].strip() if text else ""


def grade_notebook(path, ag_zip) -> dict:
    """{name: points scored} plus 'feedback' for one submission, via otter.api.grade_submission."""
    from otter.api import grade_submission

    results = grade_submission(str(path), str(ag_zip), quiet=True)
    row = {name: results.get_score(name) for name in RUBRIC}
    row["feedback"] = "\n\n".join(_feedback(results.results[name]) for name in RUBRIC
                                  if results.get_score(name) < RUBRIC[name])
    return row


def submissions(folder) -> list:
    """Every .ipynb under `folder` (one per student, possibly in per-student folders), checkpoints excluded."""
    found = sorted(p for p in Path(folder).rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not found:
        raise InputError(f"no .ipynb submissions under {folder}")
    return found


def grade(folder, out) -> list:
    """Grade every submission under `folder` into the CSV `out`: one row per notebook with the points of each
    rubric line, the total, the possible total and the feedback of every failed check."""
    folder = Path(folder)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ag_zip = autograder_zip(tmp)
        for path in submissions(folder):
            row = {"submission": str(path.relative_to(folder)), **grade_notebook(path, ag_zip)}
            row["total"] = sum(row[name] for name in RUBRIC)
            row["possible"] = sum(RUBRIC.values())
            rows.append(row)
    columns = ["submission", *RUBRIC, "total", "possible", "feedback"]
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m minipegx.course", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the solutions' and the student's .ipynb from the SOLUTIONS source")
    b.add_argument("folder", nargs="?", default="notebooks/exercises")
    g = sub.add_parser("grade", help="grade a folder of submitted notebooks into a CSV")
    g.add_argument("submissions", help="a folder of .ipynb files (searched recursively)")
    g.add_argument("--out", default="grades.csv", help="the CSV to write (default grades.csv)")
    args = ap.parse_args(argv)
    if args.command == "build":
        for path in build(args.folder):
            print(f"wrote {path}")
        return 0
    rows = grade(args.submissions, args.out)
    for row in rows:
        print(f"{row['total']:>3}/{row['possible']}  {row['submission']}")
    print(f"wrote {args.out}")
    return 0
