"""Load untrusted checkpoint directories in a child process with a time and an address-space limit.

The parent (``load_in_child``) sends a list of cases; the child (``python -m loading_worker``) loads
each and prints one JSON line per case: "ok", or the exception's type, whether it is a MiniPegxError,
and the start of its message. A case that hangs is killed by the timeout and named; one that blows up
memory dies on RLIMIT_AS (a MemoryError, which is not a MiniPegxError, or a killed child).

Case kinds: "model" (from_pretrained, then the tokenizer when the directory has spiece.model),
"state_dict" (read_state_dict of a path), "config" (PegasusXConfig.from_json_file + expected_shapes).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

MEMORY_LIMIT = 768 << 20  # the child imports NumPy and sentencepiece in ~140 MB of address space
TESTS = os.path.dirname(os.path.abspath(__file__))


def load(kind: str, path: str) -> None:
    import minipegx
    from minipegx.checkpoint import expected_shapes, read_state_dict
    from minipegx.config import PegasusXConfig

    if kind == "model":
        minipegx.from_pretrained(path)
        if os.path.isfile(os.path.join(path, "spiece.model")):
            minipegx.Tokenizer.from_pretrained(path)
    elif kind == "tokenizer":
        minipegx.Tokenizer.from_pretrained(path)
    elif kind == "state_dict":
        read_state_dict(path)
    elif kind == "config":
        expected_shapes(PegasusXConfig.from_json_file(path))
    else:
        raise AssertionError(kind)


def child() -> None:
    from minipegx.errors import MiniPegxError

    cases = json.load(sys.stdin)
    for i, (kind, path) in enumerate(cases):
        print(f"case {i}: {kind} {path}", file=sys.stderr, flush=True)
        try:
            load(kind, path)
            result = {"case": i, "ok": True}
        except BaseException as e:  # noqa: BLE001 -- the point is to see whatever escapes
            result = {"case": i, "ok": False, "type": type(e).__name__, "minipegx": isinstance(e, MiniPegxError),
                      "message": str(e)[:400]}
        print(json.dumps(result), flush=True)


def _limit_memory(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def load_in_child(cases, timeout: float = 120, memory: int = MEMORY_LIMIT) -> list[dict]:
    """[(kind, path), ...] -> one result dict per case; AssertionError naming the case on a hang or crash."""
    repo = os.path.dirname(TESTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, TESTS]), "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "loading_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_limit_memory(memory))
    try:
        out, err = proc.communicate(json.dumps([[k, os.fspath(p)] for k, p in cases]), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        started = [line for line in err.splitlines() if line.startswith("case ")]
        raise AssertionError(f"loading hung (killed after {timeout} s) at {started[-1] if started else 'start-up'}")
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or len(results) != len(cases):
        raise AssertionError(f"the loading child died (exit {proc.returncode}) after {len(results)} of {len(cases)} "
                             f"cases:\n{err[-2000:]}")
    return results


def escaped(results, cases) -> list[str]:
    """The cases where something other than a MiniPegxError escaped, described for an assertion message."""
    return [f"{cases[r['case']]}: {r['type']}: {r['message'][:200]}"
            for r in results if not r["ok"] and not r["minipegx"]]


if __name__ == "__main__":
    child()
