"""The benchmark script runs end to end (toy shape, --quick, one process per library) and writes its JSON.

Timings are not checked: they depend on the machine and its load. What is checked is that every
measurement is there, with the keys the README's table is made from, and that both libraries generated
the same ids from the same random checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_toy_benchmark_writes_the_table_as_json(tmp_path):
    out = tmp_path / "toy.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--shape", "toy", "--quick", "--grouped", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ratio" in proc.stdout

    report = json.loads(out.read_text())
    assert {"name", "shape", "config", "plan", "machine", "table", "results", "same_beam_search_ids"} <= set(report)
    assert report["machine"]["threads"] == 1
    plan = report["plan"]
    tasks = {(r["side"], r["task"], r["length"]) for r in report["results"]}
    for side in ("minipegx", "transformers"):
        assert (side, "blas", max(plan["encoder_lengths"])) in tasks
        assert all((side, "encoder", L) in tasks for L in plan["encoder_lengths"])
        assert all((side, "beam", L) in tasks for L in plan["beam_lengths"])
    for r in report["results"]:
        assert r["peak_rss"] is None or r["peak_rss"] > 0
        assert r["maxrss_process"] > 0
        if r["task"] == "encoder":
            assert r["seconds"] > 0 and r["gflops"] > 0 and r["first_call"] > 0
        if r["task"] == "blas":
            assert r["gflops"] > 0 and r["read_gbs"] > 0
        if r["task"] == "beam":
            assert r["steps"] == plan["new_tokens"] and len(r["step_times"]) == plan["new_tokens"] - 1
            assert all(len(row) == 1 + plan["new_tokens"] for row in r["sequences"])

    names = {row["name"] for row in report["table"]}
    assert "BLAS matmul, encoder shapes" in names
    assert {f"encoder {L} tokens, share of own BLAS" for L in plan["encoder_lengths"]} <= names
    assert {f"beam search {L} tokens, per decoding step" for L in plan["beam_lengths"]} <= names
    assert all(row["ratio"] is not None for row in report["table"])
    # Each encoder time is read against its GEMM limit and each beam step against its memory floor.
    limited = {row["name"] for row in report["table"] if row["minipegx_of_limit"] is not None}
    assert {f"encoder {L} tokens" for L in plan["encoder_lengths"]} <= limited
    assert {f"encoder {L} tokens, first call" for L in plan["encoder_lengths"]} <= limited
    assert {f"beam search {L} tokens, per decoding step" for L in plan["beam_lengths"]} <= limited
    # ... and beside the floor, the same bytes at the rate BLAS reads them in a step's few-row products.
    assert {f"beam search {L} tokens, the step's bytes at the few-row product rate" for L in plan["beam_lengths"]} <= limited
    assert all(r["few_row_gbs"] > 0 for r in report["results"] if r["task"] == "beam" and r["side"] == "minipegx")
    assert report["machine"]["cpu"] is not None and "load_average" in report["machine"]
    # Same random weights, same beam search: the same ids (toy model, fp32).
    assert all(report["same_beam_search_ids"].values())
