"""The training benchmark runs end to end (toy shape, one process per configuration) and writes its JSON.

Timings are not checked (they depend on the machine and its load). What is checked: every configuration is
there with its time and peak memory, and both libraries computed the same first loss from the same random
checkpoint and batch (fp32 losses: the LOGITS rung), so the two sides time the same work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from minipegx.tolerances import LOGITS

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_toy_training_benchmark_writes_every_configuration(tmp_path):
    out = tmp_path / "toy.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_bench", "--only", "toy", "--repeat", "1",
                           "--threads", "1", "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| toy | minipegx (recompute) |" in proc.stdout
    report = json.loads(out.read_text())
    assert report["machine"]["threads"] == 1
    runs = {(r["side"], r["recompute"]): r for r in report["results"]}
    assert set(runs) == {("torch", False), ("torch", True), ("minipegx", False), ("minipegx", True)}
    for r in runs.values():
        assert r["seconds"] > 0 and (r["peak_rss"] is None or r["peak_rss"] > 0)
        assert LOGITS.holds(r["first_loss"], runs["torch", False]["first_loss"])


def test_a_configuration_out_of_memory_is_a_row_not_a_crash(monkeypatch):
    """A worker whose steps run out of memory (NumPy's MemoryError, or torch's allocator refusing) reports it as
    its result, and the table shows it in place of a time; any other failure still propagates."""
    from benchmarks import train_bench

    def refuse(job):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 3221225472 bytes")

    monkeypatch.setattr(train_bench, "run_steps", refuse)
    job = dict(case="base-16k", side="torch", recompute=False, memory_cap=None)
    row = {**job, **train_bench.worker(job)}
    assert row["error"] == "out of memory" and "DefaultCPUAllocator" in row["detail"]
    at_failure = f"{row['peak_rss'] / 2**30:.2f}"      # the peak reached before the refusal: a lower bound
    assert f"| base-16k | torch | out of memory | - | - | > {at_failure} | - | - |" in train_bench.table([row])

    monkeypatch.setattr(train_bench, "run_steps", lambda job: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train_bench.worker(job)
