"""The submission's side of grading: run one notebook's code cells, then harvest the graded functions.

    python -m minipegx.course.worker NOTEBOOK.ipynb RESULTS_DIR

Started by the sandbox (sandbox.py) in the submission's scratch folder, in a session of its own, under
its limits. It executes every code cell except the check cells (tagged `grader_skip`) with IPython when it
is installed (so `%magics` work), else as plain Python, on in one namespace, an exception in one cell
being recorded and the next cells still run, as a student re-running a notebook would see. Then, for each
rubric name, harvest.harvest calls the notebook's function on the check inputs and in place in the demo
model, and the arrays go to RESULTS_DIR/outputs.npz (uncompressed, no pickles) and the notes (why an output
is missing, which cells raised) to RESULTS_DIR/notes.json. No verdict is computed here: the grader does
that in its own process (check.judge), from these files.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import numpy as np

from .harvest import harvest
from .notebook import RUBRIC, code_cells, read_notebook


def _runner():
    """A function running one cell's source in the notebook's namespace: IPython's if installed."""
    try:
        from IPython.core.interactiveshell import InteractiveShell
    except ImportError:
        namespace = {"__name__": "__main__"}

        def run(source):
            try:
                exec(compile(source, "<cell>", "exec"), namespace)
                return None
            except BaseException as e:   # SystemExit, KeyboardInterrupt too: the next cell still runs
                return f"{type(e).__name__}: {e}"
        return run, namespace
    shell = InteractiveShell.instance(colors="nocolor")

    def run(source):
        result = shell.run_cell(source, store_history=False, silent=False)
        error = result.error_before_exec or result.error_in_exec
        return None if error is None else f"{type(error).__name__}: {error}"
    return run, shell.user_ns


def main(argv=None) -> int:
    notebook, out = (argv or sys.argv[1:])[:2]
    save, dump, fdopen = np.savez, json.dumps, os.fdopen          # bound before any student code runs
    run, namespace = _runner()
    errors = []
    for i, source in code_cells(read_notebook(notebook)):
        problem = run(source)
        if problem:
            errors.append(f"cell {i}: {problem[:300]}")
    arrays, notes = {}, {"cells that raised": errors[:20]}
    for name in RUBRIC:
        try:
            got, note = harvest(name, namespace.get(name))
        except BaseException as e:                   # a harvest the notebook broke: that name gets nothing
            got, note = {}, {"not callable": f"checking it raised {type(e).__name__}: {e}\n"
                                             f"{traceback.format_exc(limit=-1)}"}
        arrays.update({f"{name}/{k}": v for k, v in got.items()})
        notes[name] = note
    with fdopen(os.open(os.path.join(out, "outputs.npz"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        save(f, **arrays)
    with fdopen(os.open(os.path.join(out, "notes.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(dump(notes))
    return 0


if __name__ == "__main__":
    sys.stdout.flush()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)          # no atexit handler a notebook registered runs after the results are written
