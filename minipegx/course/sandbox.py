"""Run one submission's worker so that it cannot outlive its turn: a supervisor process, its own session,
limits, a deadline, and every process it started ended before the grader goes on.

    python -m minipegx.course.sandbox SPEC_JSON        (started by grade.py, one per submission)

The supervisor (this module's main) makes itself a *child subreaper* (Linux prctl PR_SET_CHILD_SUBREAPER):
a process the submission starts and detaches (double fork, setsid, nohup) is re-parented to the supervisor
instead of to init, so it stays findable. The worker runs in a new session and process group
(start_new_session) with an address-space limit (RLIMIT_AS), no core files and a cap on the size of any
file it writes; at the deadline, or when it ends, the supervisor kills its process group, then every
process still below the supervisor, until none is left, and prints one JSON line: the worker's exit status,
whether it timed out, how many stray processes it killed. The grader also kills any process still carrying
the submission's grading token in its environment (a process that left the supervisor's tree). With
spec["uid"] (the grader's --user, when it runs as root) the worker runs as that user, so it cannot write
the grades nor signal the grader. What this is not: a container. Without --user the submission runs as
your user, can read what you can, write where you can, use the network, and signal your other processes
(the grader's included); see docs/teaching.md for a container run.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def _subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants(root) -> list:
    """Every live process below `root` (by the parent links in /proc), children first."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def kill_all_below(root) -> int:
    """SIGSTOP then SIGKILL every process below `root` until none is left (a forking one is caught on a
    later round); reap the ones that are our children. Returns how many were killed."""
    killed = set()
    for _ in range(200):
        pids = descendants(root)
        if not pids:
            break
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        killed.update(pids)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
    return len(killed)


def _limits(memory_bytes, file_bytes):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    return apply


def supervise(spec) -> dict:
    """Run the worker for spec {notebook, results, cwd, timeout, memory, file_bytes} with this process's
    environment (the grader's, cleaned); see the module docstring."""
    reaper = _subreaper()
    log = open(os.path.join(spec["results"], "output.txt"), "wb")
    started = time.monotonic()
    as_user = {} if spec.get("uid") is None else {"user": spec["uid"], "group": spec["gid"], "extra_groups": []}
    proc = subprocess.Popen([sys.executable, "-m", "minipegx.course.worker", spec["notebook"], spec["results"]],
                            cwd=spec["cwd"], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_limits(spec["memory"], spec["file_bytes"]), **as_user)
    timed_out = False
    try:
        proc.wait(timeout=spec["timeout"])
    except subprocess.TimeoutExpired:
        timed_out = True
    try:
        os.killpg(proc.pid, signal.SIGKILL)          # the worker's group: whatever it started and kept there
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    strays = kill_all_below(os.getpid())
    log.close()
    return {"returncode": proc.returncode, "timed_out": timed_out, "strays": strays, "subreaper": reaper,
            "seconds": round(time.monotonic() - started, 2)}


def main() -> int:
    spec = json.loads(sys.argv[1])
    print(json.dumps(supervise(spec)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
