"""The exercise notebooks and their grader: student notebooks made from the solutions, and a grader that runs
each submission in its own sandboxed process and computes every verdict in its own.

    python -m minipegx.course build notebooks/exercises        # SOLUTIONS.py -> both .ipynb
    python -m minipegx.course grade SUBMISSIONS_DIR --out grades.csv [--timeout 300] [--memory 4GiB] [--resume]

One source: `pegasus_x_exercises_SOLUTIONS.py` (a jupytext percent-format notebook, paired with its .ipynb).
The student notebook, `pegasus_x_exercises_student.ipynb`, is that source with every `### BEGIN SOLUTION`
... `### END SOLUTION` block (nbgrader's markers) replaced by `raise NotImplementedError`, so the two
cannot diverge.

Grading, per submission (one at a time): the notebook and the other files of its folder are copied to a
scratch folder; a supervisor (sandbox.py) runs the worker (worker.py) there, in a session of its own under a
timeout and an address-space limit; the worker runs the notebook's cells (not the check cells) and brings
back each graded function's outputs on the check inputs as arrays; every process the submission started is
killed; then this process reads the arrays (no pickles) and computes the verdicts (check.judge) with code
the notebook never reached. A function the notebook does not define with its own `def`, or that calls
minipegx's function of the same name, scores 0. Each row is written as soon as its notebook is graded:
the whole CSV is rewritten atomically (temporary file, fsync, rename), so a killed grader leaves a complete
CSV and `--resume` grades only the notebooks not in it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from .notebook import RUBRIC, NotANotebook, own_definitions, read_notebook

__all__ = ["RUBRIC", "SOLUTIONS", "STUDENT", "build", "grade", "main", "strip_solutions", "student_notebook"]

SOLUTIONS = "pegasus_x_exercises_SOLUTIONS.py"
STUDENT = "pegasus_x_exercises_student.ipynb"
TIMEOUT = 300                       # seconds per notebook; the solutions take about 10 s on 2 CPU cores
MEMORY = 4 * 2**30                  # address space per submission; the solutions peak at about 0.3 GiB
FILE_BYTES = 256 * 2**20            # the largest file a submission may write
MAX_RESULTS_BYTES = 256 * 2**20     # what the grader reads back of one submission's arrays
COPY_BYTES = 64 * 2**20             # the most of a student's folder copied beside their notebook
TOKEN = "MINIPEGX_GRADING_TOKEN"
COLUMNS = ["student", "submission", *RUBRIC, "total", "possible", "feedback"]
_BLOCK = re.compile(r"^([ \t]*)### BEGIN SOLUTION\n.*?^[ \t]*### END SOLUTION\n", re.M | re.S)


# ----------------------------------------------------------------------------------------------- build
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


# ------------------------------------------------------------------------------------------- the CSV
def csv_cell(value):
    """A cell no spreadsheet runs as a formula: text starting with = + - @ tab or CR gets a leading '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _uncell(value):
    return value[1:] if value[:2] in ("'=", "'+", "'-", "'@", "'\t", "'\r") else value


def _text(name):
    """A file or folder name as valid UTF-8 text for the CSV: undecodable bytes written as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def shown(name):
    """A name for the terminal: control and other unprintable characters escaped (no forged lines)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in name)


def write_rows(out, rows):
    """The whole CSV, atomically: a temporary file beside `out`, fsync'ed, renamed over it."""
    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: csv_cell(row.get(k, "")) for k in COLUMNS} for row in rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_rows(out) -> list:
    """The rows of an existing grades CSV (for --resume), its escaping undone."""
    with open(out, newline="", encoding="utf-8") as f:
        return [{k: _uncell(v or "") for k, v in row.items()} for row in csv.DictReader(f)]


# --------------------------------------------------------------------------------------- submissions
def submissions(folder) -> list:
    """Every .ipynb under `folder` (one per student, possibly in per-student folders), checkpoints excluded."""
    found = sorted(p for p in Path(folder).rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts and (p.is_symlink() or p.is_file()))
    if not found:
        raise InputError(f"no .ipynb submissions under {folder}")
    return found


def student_of(path, folder):
    """The per-student folder's name, else the notebook's file name without .ipynb."""
    parts = Path(path).relative_to(folder).parts
    return parts[0] if len(parts) > 1 else Path(path).stem


def _scratch_copy(path, scratch):
    """The notebook and the other files of its folder (not other notebooks, not links), up to COPY_BYTES."""
    budget = COPY_BYTES
    for item in sorted(path.parent.iterdir()):
        if item == path or item.is_symlink() or not item.is_file() or item.suffix == ".ipynb":
            continue
        size = item.stat().st_size
        if size <= budget:
            shutil.copyfile(item, scratch / item.name)
            budget -= size
    shutil.copyfile(path, scratch / "submission.ipynb")
    return scratch / "submission.ipynb"


def _account(user):
    """(uid, gid) of `user` for the worker, or (None, None) without --user; only root may switch users."""
    if user is None:
        return None, None
    import pwd

    try:
        entry = pwd.getpwnam(user) if not str(user).isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        raise InputError(f"--user {user}: no such user on this machine") from None
    if os.geteuid() != 0:
        raise InputError(f"--user {user} needs the grader to run as root (it starts each notebook as that user)")
    if entry.pw_uid == 0:
        raise InputError("--user root would give each notebook the grader's own rights: name an unprivileged user")
    return entry.pw_uid, entry.pw_gid


def _can_run_as(user):
    """InputError unless `user` (if given) can start this Python and import this minipegx."""
    uid, gid = _account(user)
    if uid is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        try:
            run = subprocess.run([sys.executable, "-c", "import minipegx.course.worker"], user=uid, group=gid,
                                 extra_groups=[], cwd=tmp, env=_environment(Path(tmp), "check"),
                                 capture_output=True, timeout=120)
            problem = run.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] if run.returncode else None
        except (OSError, subprocess.SubprocessError) as e:
            problem = [f"{type(e).__name__}: {e}"]
    if problem:
        raise InputError(f"--user {user} cannot run this Python with minipegx ({problem[0] if problem else ''}): "
                         f"install both where that user can read them (e.g. a system-wide install in a container)")


def _hand_over(root, uid, gid):
    """Make the scratch tree the worker's own (it runs as uid)."""
    for folder, dirs, files in os.walk(root):
        os.chown(folder, uid, gid)
        for name in files:
            os.chown(os.path.join(folder, name), uid, gid)


def _environment(scratch, token):
    """The worker's environment: the grader's minus anything naming the grades, homes inside the scratch."""
    keep = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "SYSTEMROOT")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    package_root = str(Path(__file__).resolve().parents[2])      # this minipegx, installed or not
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(HOME=str(scratch), TMPDIR=str(scratch), IPYTHONDIR=str(scratch / ".ipython"),
               MPLCONFIGDIR=str(scratch / ".mpl"),
               MPLBACKEND="Agg", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               **{TOKEN: token})
    return env


def kill_by_token(token) -> int:
    """Kill every process of ours whose environment carries this submission's token (one that left the
    supervisor's tree); returns how many."""
    needle, killed = f"{TOKEN}={token}".encode(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(entry), 9)
                    killed += 1
        except (OSError, ValueError):
            continue
    return killed


def run_submission(path, timeout=TIMEOUT, memory=MEMORY, user=None) -> tuple:
    """Run one notebook in a scratch folder under the sandbox. Returns (arrays, notes) or (None, reason)."""
    uid, gid = _account(user)
    with tempfile.TemporaryDirectory(prefix="minipegx-grade-") as tmp:
        scratch, results = Path(tmp) / "work", Path(tmp) / "results"
        scratch.mkdir()
        results.mkdir()
        notebook = _scratch_copy(path, scratch)
        if uid is not None:
            _hand_over(scratch, uid, gid)
            _hand_over(results, uid, gid)
            os.chmod(tmp, 0o711)                      # the worker may pass through, not list
        token = secrets.token_hex(16)
        spec = {"notebook": str(notebook), "results": str(results), "cwd": str(scratch), "timeout": timeout,
                "memory": memory, "file_bytes": FILE_BYTES, "uid": uid, "gid": gid}
        status, crash = None, ""
        try:
            run = subprocess.run([sys.executable, "-m", "minipegx.course.sandbox", json.dumps(spec)],
                                 env=_environment(scratch, token), capture_output=True, timeout=timeout + 60,
                                 stdin=subprocess.DEVNULL)
            lines = run.stdout.decode("utf-8", "replace").strip().splitlines()
            status = json.loads(lines[-1]) if lines else None
            status = status if isinstance(status, dict) and "timed_out" in status else None
            if status is None and run.returncode > 0:     # the supervisor itself failed, before or after
                crash = run.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        except (subprocess.TimeoutExpired, ValueError):
            pass
        finally:
            kill_by_token(token)
        tail = _tail(results / "output.txt")
        if status is None and crash:
            return None, f"the grader could not run the notebook: {shown(crash[0])}"
        if status is None:
            return None, "the grading supervisor was ended from inside the notebook; nothing of it was graded"
        if status["timed_out"]:
            return None, f"the notebook ran past the time limit of {timeout} s (an endless loop?){tail}"
        problem = _read_results(results)
        if isinstance(problem, str):
            code = status["returncode"]
            why = (f"killed by signal {-code}" if code < 0 else f"exit status {code}")
            limit = " (the memory limit is {:.1f} GiB)".format(memory / 2**30) if code in (-9, -6, 1) else ""
            return None, f"the notebook ended its process ({why}){limit} before its functions were checked{tail}"
        return problem


def _tail(path, n=600):
    try:
        text = path.read_bytes()[-n:].decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f"; its last output:\n{shown(text)}" if text else ""


def _read_results(results):
    """(arrays, notes) from the worker's files, or a string saying why they cannot be read."""
    npz, notes_path = results / "outputs.npz", results / "notes.json"
    if not (npz.is_file() and notes_path.is_file()):
        return "no results"
    if notes_path.stat().st_size > 4 * 2**20 or npz.stat().st_size > MAX_RESULTS_BYTES:
        return "results too large"
    try:
        with zipfile.ZipFile(npz) as z:          # stored members only: no decompression bomb
            if any(i.compress_type != zipfile.ZIP_STORED for i in z.infolist()):
                return "compressed results"
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        notes = json.loads(notes_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, zipfile.BadZipFile, RecursionError):
        return "unreadable results"
    if not isinstance(notes, dict):
        return "unreadable results"
    return arrays, notes


# --------------------------------------------------------------------------------------------- grade
def grade_submission(path, timeout=TIMEOUT, memory=MEMORY, user=None) -> dict:
    """{rubric name: points, "feedback": text} for one notebook."""
    from .check import judge, not_own

    row = {name: 0 for name in RUBRIC}
    if Path(path).is_symlink():
        return {**row, "feedback": "not graded: a symbolic link, not followed (submit the notebook itself)"}
    try:
        nb = read_notebook(path)
    except NotANotebook as e:
        return {**row, "feedback": f"not graded: {e}"}
    except OSError as e:
        return {**row, "feedback": f"not graded: the file cannot be read ({e.strerror})"}
    own = own_definitions(nb)
    got = run_submission(path, timeout, memory, user)
    if got[0] is None:
        return {**row, "feedback": f"not graded (0 points): {got[1]}"}
    arrays, notes = got
    feedback = []
    for name in RUBRIC:
        note = notes.get(name) if isinstance(notes.get(name), dict) else {"not callable": "no output came back"}
        note = {k: v for k, v in note.items() if isinstance(v, (str, bool))}
        mine = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(name + "/")}
        if own[name]:
            result_passed, message = False, f"{not_own(name)} ({own[name]})"
        else:
            result = judge(name, mine, note, with_transformers=False)
            result_passed, message = result.passed, result.message
        row[name] = RUBRIC[name] if result_passed else 0
        if not result_passed:
            feedback.append(message)
    raised = notes.get("cells that raised")
    if feedback and isinstance(raised, list) and raised:
        feedback.append("cells that raised: " + "; ".join(str(r) for r in raised[:5]))
    row["feedback"] = "\n\n".join(feedback)
    return row


def _inside(path, folder):
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def grade(folder, out, timeout=TIMEOUT, memory=MEMORY, resume=False, progress=None, user=None) -> list:
    """Grade every submission under `folder` into the CSV `out`, one row per notebook (see the module
    docstring). resume: keep the rows already in `out` and grade only the others. user: run each notebook
    as this unprivileged user (the grader must run as root): then it can neither write the grades nor
    signal the grader."""
    folder, out = Path(folder), Path(out)
    if _inside(out, folder):
        raise InputError(f"--out {out} is inside the submissions folder {folder}: write the grades elsewhere "
                         f"(a submission's files live there)")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: no folder {out.parent}")
    if timeout <= 0 or memory <= 2**28:
        raise InputError("--timeout must be positive and --memory at least 256 MiB")
    _can_run_as(user)                                 # a wrong --user fails before any notebook runs
    rows = read_rows(out) if resume and out.exists() else []
    done = {row.get("submission") for row in rows}
    for path in submissions(folder):
        name = _text(str(path.relative_to(folder)))
        if name in done:
            continue
        row = {"student": _text(student_of(path, folder)), "submission": name,
               **grade_submission(path, timeout, memory, user)}
        row["total"] = sum(row[n] for n in RUBRIC)
        row["possible"] = sum(RUBRIC.values())
        rows.append(row)
        write_rows(out, rows)               # after every notebook: a killed run loses only the current one
        if progress:
            progress(row)
    if not rows:
        write_rows(out, rows)
    return rows


def memory_size(text):
    """'4GiB', '512MiB', '1.5G', '1000000' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?)?\s*", text, re.I)
    if not m:
        raise ValueError(text)
    unit = (m[2] or "").upper()[:1]
    return int(float(m[1]) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[unit])


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m minipegx.course", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the solutions' and the student's .ipynb from the SOLUTIONS source")
    b.add_argument("folder", nargs="?", default="notebooks/exercises")
    g = sub.add_parser("grade", help="grade a folder of submitted notebooks into a CSV")
    g.add_argument("submissions", help="a folder of .ipynb files (searched recursively)")
    g.add_argument("--out", default="grades.csv", help="the CSV to write, outside the submissions folder "
                                                       "(default grades.csv)")
    g.add_argument("--timeout", type=float, default=TIMEOUT,
                   help=f"seconds a notebook may run, checks included (default {TIMEOUT})")
    g.add_argument("--memory", type=memory_size, default=MEMORY,
                   help=f"address-space limit per notebook, e.g. 4GiB, 512MiB (default {MEMORY // 2**30}GiB)")
    g.add_argument("--resume", action="store_true", help="keep the rows already in --out, grade the rest")
    g.add_argument("--user", help="run each notebook as this unprivileged user (the grader must run as root, "
                                  "e.g. in a container): it can then neither write the grades nor signal the grader")
    args = ap.parse_args(argv)
    if args.command == "build":
        for path in build(args.folder):
            print(f"wrote {path}")
        return 0

    def progress(row):
        print(f"{row['total']:>3}/{row['possible']}  {shown(row['submission'])}", flush=True)

    grade(args.submissions, args.out, args.timeout, args.memory, args.resume, progress, args.user)
    print(f"wrote {shown(str(args.out))}")
    return 0
