"""The grader on whole notebooks, hostile ones included: submissions built here from the SOLUTIONS source
(and the unfilled student notebook), graded in one run of `python -m minipegx.course grade`.

One submission per behaviour or class of hostile notebook: the solutions (all points), the unfilled notebook
(0), functions re-exported from minipegx (0), a replaced checker (0), a softmax without max subtraction (loses
exercise 3's points), a layer norm backward without its mean terms (loses its 2 points), stagger padding
that the mask hides (all points), an endless loop, os._exit, a crash, a file that is not JSON (0 with the
reason, the others still graded), a detached process that tries to rewrite the grades after its turn (killed
first), names that a spreadsheet would run as a formula or that forge a line of the summary (escaped). A
short --timeout keeps the run brief; the solutions need a few seconds.
"""

import contextlib
import os
import csv
import io
import time
from pathlib import Path

import pytest

from minipegx.course.grade import RUBRIC, SOLUTIONS, STUDENT, grade, main, read_rows, shown

EXERCISES = Path(__file__).resolve().parents[1] / "notebooks" / "exercises"
FULL = sum(RUBRIC.values())
TIMEOUT = 45            # seconds per notebook here: the solutions take ~5 s alone, ~20 s on a loaded machine


def notebook(folder, name, old=None, new=None, extra=None, base=SOLUTIONS):
    """A submission: the SOLUTIONS source (or the student notebook) with one replacement and/or a last cell."""
    import jupytext

    if base == STUDENT:
        from minipegx.course.grade import strip_solutions
        source = strip_solutions((EXERCISES / SOLUTIONS).read_text(encoding="utf-8"))
    else:
        source = (EXERCISES / SOLUTIONS).read_text(encoding="utf-8")
    if old is not None:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    if extra is not None:
        source += "\n\n# %%\n" + extra + "\n"
    path = Path(folder) / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(jupytext.reads(source, fmt="py:percent"), path)
    return path


REEXPORT = ("from minipegx.layers import layer_norm, ffn, sinusoidal_positions\n"
            "from minipegx.encoder import global_local_attention, stagger, encoder_layer\n"
            "from minipegx.decoder import self_attention, cross_kv, cross_attention\n"
            "from minipegx.generation.beam import beam_step\n"
            "from minipegx.layers import layer_norm_backward, softmax_backward\n"
            "from minipegx.encoder import global_local_attention_backward")
PATCH_CHECKER = ("import minipegx.parity, minipegx.course, minipegx.course.check as C\n"
                 "fake = lambda name, fn, *a, **k: C.CheckResult(name, True, name + ': passed.')\n"
                 "minipegx.parity.check_function = minipegx.course.check_function = C.check_function = fake\n"
                 "C.judge = lambda name, *a, **k: C.CheckResult(name, True, 'passed')")
NAIVE = "(lambda s: np.exp(s) / np.exp(s).sum(-1, keepdims=True))("
LAYER_NORM_DX = "dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))"
STAGGER_PAD = "x = np.pad(x, ((0, 0), (h, h), (0, 0)))"
STAGGER_MASK = "constant_values=np.finfo(mask.dtype).min)"


def detach(marker, target):
    """A cell that leaves a double-forked, setsid'ed process which, 8 s later, overwrites `target`."""
    return (f"import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(8)\n"
            f"        open({str(target)!r}, 'w').write('student,total\\nmallory,26\\n')\n"
            f"        open({str(marker)!r}, 'w').write('survived')\n    os._exit(0)")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    pytest.importorskip("jupytext")
    root = tmp_path_factory.mktemp("course")
    subs, out = root / "submissions", root / "grades" / "grades.csv"
    out.parent.mkdir()
    marker = root / "detached_survived"
    (subs / "alice").mkdir(parents=True)
    (subs / "alice" / "exercises.ipynb").write_bytes((EXERCISES / Path(SOLUTIONS).with_suffix(".ipynb")).read_bytes())
    notebook(subs / '=HYPERLINK("x")', "unfilled", base=STUDENT)
    notebook(subs, "reexport", base=STUDENT, extra=REEXPORT)
    notebook(subs, "patched_checker", base=STUDENT, extra=PATCH_CHECKER)
    notebook(subs, "naive_softmax", "lprobs = L.softmax(", "lprobs = " + NAIVE)
    notebook(subs, "no_mean_terms", LAYER_NORM_DX, "dx = rstd * g")
    notebook(subs, "stagger_edge", STAGGER_PAD, 'x = np.pad(x, ((0, 0), (h, h), (0, 0)), mode="edge")')
    notebook(subs, "stagger_1e9", STAGGER_MASK, "constant_values=-1e9)")
    notebook(subs, "endless", extra="while True:\n    pass")
    notebook(subs, "exits", extra="import os\nos._exit(0)")
    notebook(subs, "crashes", extra="import ctypes\nctypes.string_at(0)")
    notebook(subs, "detaches", extra=detach(marker, out))
    (subs / "not_json.ipynb").write_text("this is not JSON {", encoding="utf-8")
    notebook(subs, "eve\n 26/26  forged", base=STUDENT)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["grade", str(subs), "--out", str(out), "--timeout", str(TIMEOUT)]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        raw = list(csv.DictReader(f))
    time.sleep(10)                                              # longer than the detached process would sleep
    return {"rows": {r["submission"]: r for r in read_rows(out)}, "raw": raw, "printed": printed.getvalue(),
            "out": out, "marker": marker, "csv": out.read_text(encoding="utf-8"), "subs": subs}


def row(graded, name):
    return graded["rows"][name]


def test_the_solutions_get_full_marks_and_a_student_column(graded):
    r = row(graded, str(Path("alice") / "exercises.ipynb"))
    assert (r["student"], int(r["total"]), int(r["possible"]), r["feedback"]) == ("alice", FULL, FULL, "")


def test_the_unfilled_notebook_scores_zero(graded):
    r = row(graded, str(Path('=HYPERLINK("x")') / "unfilled.ipynb"))
    assert int(r["total"]) == 0 and "not implemented yet" in r["feedback"]


def test_minipegx_functions_re_exported_score_zero_and_say_why(graded):
    r = row(graded, "reexport.ipynb")
    assert int(r["total"]) == 0
    assert r["feedback"].count("minipegx's own") == len(RUBRIC), r["feedback"]


def test_a_replaced_checker_changes_nothing(graded):
    r = row(graded, "patched_checker.ipynb")
    assert int(r["total"]) == 0 and "not implemented yet" in r["feedback"]


def test_a_softmax_without_max_subtraction_loses_its_exercise(graded):
    r = row(graded, "naive_softmax.ipynb")
    assert int(r["global_local_attention"]) == 0 and int(r["total"]) == FULL - RUBRIC["global_local_attention"]
    assert "max is subtracted" in r["feedback"]


def test_a_layer_norm_backward_without_its_mean_terms_loses_its_points_with_the_hint(graded):
    r = row(graded, "no_mean_terms.ipynb")
    assert int(r["layer_norm_backward"]) == 0 and int(r["total"]) == FULL - RUBRIC["layer_norm_backward"]
    assert "the two mean terms left out" in r["feedback"], r["feedback"]


@pytest.mark.parametrize("name", ["stagger_edge.ipynb", "stagger_1e9.ipynb"])
def test_stagger_padding_the_mask_hides_gets_full_marks(graded, name):
    assert int(row(graded, name)["total"]) == FULL, row(graded, name)["feedback"]


@pytest.mark.parametrize("name, reason", [
    ("endless.ipynb", f"ran past the time limit of {TIMEOUT:g}"),
    ("exits.ipynb", "ended its process (exit status 0)"),
    ("crashes.ipynb", "ended its process (killed by signal 11)"),
    ("not_json.ipynb", "not a notebook: not valid JSON")])
def test_a_notebook_that_never_finishes_scores_zero_with_its_reason(graded, name, reason):
    r = row(graded, name)
    assert int(r["total"]) == 0 and r["feedback"].startswith("not graded") and reason in r["feedback"], r["feedback"]


def test_every_notebook_gets_a_row(graded):
    assert len(graded["rows"]) == 14


def test_a_detached_process_is_killed_before_it_can_touch_the_grades(graded):
    assert not graded["marker"].exists()
    assert "mallory" not in graded["out"].read_text(encoding="utf-8")
    assert int(row(graded, "detaches.ipynb")["total"]) == FULL        # its functions were still graded


def test_cells_a_spreadsheet_would_run_are_escaped(graded):
    raw = {r["submission"]: r for r in graded["raw"]}
    cell = raw["'" + str(Path('=HYPERLINK("x")') / "unfilled.ipynb")]
    assert cell["student"] == "'=HYPERLINK(\"x\")"
    assert not any(v[:1] in "=+-@\t\r" for r in graded["raw"] for v in r.values() if v)


def test_a_name_with_a_newline_cannot_forge_a_line_of_the_summary(graded):
    lines = graded["printed"].splitlines()
    assert not any(line.lstrip().startswith("26/26  forged") for line in lines), graded["printed"]
    assert any("eve\\n 26/26  forged.ipynb" in line for line in lines)
    assert shown("a\rb\x1b[2J") == "a\\rb\\x1b[2J"


def test_resume_grades_only_the_notebooks_not_in_the_csv(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "grades.csv"
    notebook(subs, "new", base=STUDENT)
    notebook(subs, "old", base=STUDENT)
    out.write_text("student,submission,total,possible,feedback\nold,old.ipynb,25,26,kept\n", encoding="utf-8")
    rows = grade(subs, out, timeout=TIMEOUT, resume=True)
    assert [r["submission"] for r in rows] == ["old.ipynb", "new.ipynb"]
    kept = {r["submission"]: r for r in read_rows(out)}
    assert kept["old.ipynb"]["total"] == "25" and kept["new.ipynb"]["total"] == "0"


def test_the_grades_cannot_be_written_inside_the_submissions(graded):
    import minipegx

    with pytest.raises(minipegx.InputError, match="inside the submissions folder"):
        grade(graded["subs"], graded["subs"] / "grades.csv")


def test_memory_beyond_the_limit_is_refused_to_the_notebook(tmp_path):
    subs = tmp_path / "subs"
    notebook(subs, "hog", base=STUDENT, extra="import numpy as np\nx = np.ones(2**28)   # 2 GiB")
    rows = grade(subs, tmp_path / "grades.csv", timeout=TIMEOUT, memory=2**30)
    assert int(rows[0]["total"]) == 0 and "MemoryError" in rows[0]["feedback"], rows[0]["feedback"]


def test_an_unknown_user_is_refused_before_any_notebook_runs(tmp_path):
    import minipegx

    notebook(tmp_path / "subs", "a", base=STUDENT)
    with pytest.raises(minipegx.InputError, match="no such user"):
        grade(tmp_path / "subs", tmp_path / "grades.csv", user="no-such-user-here")
    assert not (tmp_path / "grades.csv").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs a grader running as root (as in a container)")
def test_as_another_user_a_notebook_can_neither_write_the_grades_nor_signal_the_grader(tmp_path):
    import minipegx
    from minipegx.course.grade import _can_run_as

    try:
        _can_run_as("nobody")
    except minipegx.InputError as e:      # e.g. a Python installed under /root: the grader says so, as here
        pytest.skip(str(e))
    grades = tmp_path / "grades"
    grades.mkdir()
    tamper = (f"import os, signal\nopen({str(grades / 'forged.csv')!r}, 'w').write('x')\n"
              f"os.kill({os.getpid()}, signal.SIGTERM)")
    notebook(tmp_path / "subs", "tamper", base=STUDENT, extra=tamper)
    rows = grade(tmp_path / "subs", grades / "grades.csv", timeout=TIMEOUT, user="nobody")
    assert not (grades / "forged.csv").exists()
    assert "PermissionError" in rows[0]["feedback"]                 # the cell's first line was refused


def test_a_linked_notebook_and_an_undecodable_name_get_rows_of_their_own(tmp_path):
    subs = tmp_path / "subs"
    real = notebook(tmp_path / "elsewhere", "real", base=STUDENT)
    subs.mkdir()
    (subs / "link.ipynb").symlink_to(real)
    odd = os.path.join(os.fsencode(subs), b"\xff\xfe.ipynb")
    with open(odd, "wb") as f:
        f.write(real.read_bytes())
    rows = {r["submission"]: r for r in grade(subs, tmp_path / "grades.csv", timeout=TIMEOUT)}
    assert rows["link.ipynb"]["feedback"].startswith("not graded: a symbolic link")
    assert int(rows["\\xff\\xfe.ipynb"]["total"]) == 0 and "not implemented yet" in rows["\\xff\\xfe.ipynb"]["feedback"]


def test_the_command_line_says_what_is_wrong_in_one_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "subs").mkdir()
    for args, message in ((["--memory", "lots"], "invalid memory_size value"),
                          ([], "no .ipynb submissions under")):
        run = subprocess.run([sys.executable, "-m", "minipegx.course", "grade", str(tmp_path / "subs"),
                              "--out", str(tmp_path / "g.csv"), *args], capture_output=True, text=True)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr
