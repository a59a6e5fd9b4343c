"""Whole corpora (minipegx.corpus): malformed and duplicate input, atomic resumable output, length batches,
and the same summaries on a Dask cluster as in one process, through a killed worker and a killed client.

The corpus: 24 documents of the demo task (300-800 tokens, tools/demo_data.py), so the demo model
summarizes each in a fraction of a second. One LocalCluster of 2 worker *processes* serves the whole
module (a worker process is what the fault tests kill). "One process" is summarize_corpus(workers=0),
itself checked against minipegx.summarize of each document alone.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import minipegx
from minipegx.corpus import files, summarize_corpus
from minipegx.corpus.work import plan_batches
from minipegx.errors import CorpusError
from tools.demo_data import make_example  # the default (long) demo model's task

distributed = pytest.importorskip("distributed")

N_DOCS = 24


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_output(path):
    """{id: summary}, asserting every id is there once."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "an id was written twice"
    return {r["id"]: r["summary"] for r in rows}


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """This process computes with 1 BLAS thread, as each Dask worker does: on 2 shared cores a second
    OpenBLAS thread that spins waiting for a core makes the small demo model several times slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(18)
    rows = []
    for i in range(N_DOCS):
        doc, summary = make_example(rng, rng.randint(300, 800))
        rows.append({"id": f"doc-{i:02d}", "text": doc, "summary": summary})
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", rows)


@pytest.fixture(scope="module")
def one_process(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "out.jsonl"
    run = summarize_corpus(corpus, out, workers=0, progress=False)
    assert run.written == N_DOCS
    return read_output(out)


@pytest.fixture(scope="module")
def client():
    from minipegx.corpus.cluster import local_cluster

    with local_cluster(n_workers=2) as cluster, distributed.Client(cluster) as c:
        yield c


def loads_in_this_process():
    """{model path: loads} of the process it runs in (imported there: a global would travel by value)."""
    from minipegx.corpus import work

    return {spec.path: n for spec, n in work.LOADS.items()}


def worker_pids(client):
    return client.run(os.getpid)


def wait_for_lines(path, n, timeout=120):
    """Poll until `path` has at least n complete lines; the count seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            count = path.read_bytes().count(b"\n")
            if count >= n:
                return count
        time.sleep(0.005)
    raise AssertionError(f"{path} did not reach {n} lines in {timeout} s")


# ----------------------------------------------------------------------------------------- input files

def test_a_malformed_line_stops_the_run_naming_its_line_number(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n\n{"id": 2, "text": "b"\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"c\.jsonl line 3: not JSON"):
        files.read_corpus(path)


def test_skip_malformed_leaves_bad_lines_out_and_lists_each_with_its_line_number(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": 1, "text": "a"}\n{"id": 2}\n[1, 2]\n{"id": 3, "text": "\xff"}\n'
                     b'{"id": true, "text": "c"}\n{"id": "x", "text": "d"}\n')
    records, malformed = files.read_corpus(path, on_malformed="skip")
    assert [r.id for r in records] == [1, "x"]
    assert [m.split(": ", 1)[0] for m in malformed] == [f"{path} line {n}" for n in (2, 3, 4, 5)]
    assert "'text' field must be a string (no such field)" in malformed[0]
    assert "expected a JSON object, got list" in malformed[1]


def test_a_duplicate_id_is_an_error_naming_both_lines(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"},
                                              {"id": "a", "text": "z"}])
    with pytest.raises(CorpusError, match=r"line 3: duplicate id 'a', first seen at .*line 1"):
        files.read_corpus(path, on_malformed="skip")


def test_a_folder_of_txt_files_is_a_corpus_with_file_names_as_ids(tmp_path):
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    records, _ = files.read_corpus(tmp_path)
    assert [(r.id, r.fields["text"]) for r in records] == [("a", "first"), ("b", "second")]


def test_repair_cuts_off_a_torn_last_line_and_nothing_else(tmp_path):
    path = tmp_path / "out.jsonl"
    whole = b'{"id": 1, "summary": "a"}\n{"id": 2, "summary": "b"}\n'
    path.write_bytes(whole + b'{"id": 3, "summ')
    assert files.repair_output(path) == len(b'{"id": 3, "summ')
    assert path.read_bytes() == whole
    assert files.repair_output(path) == 0
    assert files.read_done(path) == {1, 2}


def test_a_second_writer_on_the_same_output_is_refused(tmp_path):
    with files.Appender(tmp_path / "out.jsonl"):
        with pytest.raises(CorpusError, match="being written by another run"):
            files.Appender(tmp_path / "out.jsonl")


def test_batches_are_sorted_by_length_and_bounded_by_size_and_padded_tokens():
    lengths = [100, 700, 300, 300, 650, 120, 800, 90]
    batches = plan_batches(lengths, batch_size=3, batch_tokens=1500)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches == [[6], [1, 4], [2, 3, 5], [0, 7]]   # 800 | 700+650 (3 would pad to 2100) | ...
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 1500)


# ------------------------------------------------------------------------------------------- runs

def test_one_process_gives_each_documents_own_summary(corpus, one_process):
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    alone = minipegx.summarize([r["text"] for r in rows], batch_size=1)
    assert one_process == {r["id"]: s for r, s in zip(rows, alone)}


def test_a_dask_run_gives_the_one_process_summaries_and_loads_the_model_once_per_worker(corpus, one_process,
                                                                                      client, tmp_path):
    for out in (tmp_path / "a.jsonl", tmp_path / "b.jsonl"):        # two runs on the same workers
        run = summarize_corpus(corpus, out, scheduler=client, batch_size=2, progress=False)
        assert run.written == N_DOCS and run.batches == N_DOCS // 2
        assert read_output(out) == one_process
    loads = client.run(loads_in_this_process)
    assert list(loads.values()) == [{minipegx.demo_model_path(): 1}] * 2


def blas_threads_in_this_process():
    from threadpoolctl import threadpool_info

    return sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})


def test_each_worker_process_runs_one_task_with_one_blas_thread(client):
    assert set(client.nthreads().values()) == {1}
    assert list(client.run(blas_threads_in_this_process).values()) == [[1], [1]]


def test_a_rerun_skips_what_is_done_and_redoes_a_torn_last_line(corpus, one_process, client, tmp_path):
    out = tmp_path / "out.jsonl"
    lines = [json.dumps({"id": i, "summary": s}) + "\n" for i, s in list(one_process.items())[:11]]
    out.write_text("".join(lines[:10]) + lines[10][:25], encoding="utf-8")      # 10 whole lines, 1 torn
    run = summarize_corpus(corpus, out, scheduler=client, progress=False)
    assert (run.already_done, run.written, run.repaired_bytes) == (10, N_DOCS - 10, 25)
    assert read_output(out) == one_process


def test_a_worker_killed_mid_run_has_its_batches_recomputed(corpus, one_process, client, tmp_path):
    out = tmp_path / "out.jsonl"
    before = worker_pids(client)
    result = {}
    thread = threading.Thread(target=lambda: result.update(run=summarize_corpus(
        corpus, out, scheduler=client, batch_size=1, progress=False)))
    thread.start()
    wait_for_lines(out, 1)
    busy = [w for w, tasks in client.processing().items() if tasks]
    os.kill(before[busy[0]], signal.SIGKILL)
    killed_at = out.read_bytes().count(b"\n")
    thread.join(timeout=300)
    assert killed_at < N_DOCS, "the run ended before the kill; the test proved nothing"
    assert result["run"].written == N_DOCS
    assert read_output(out) == one_process
    assert busy[0] not in worker_pids(client)            # that worker is gone (its nanny started a new one)


def cli(*args):
    return [sys.executable, "-m", "minipegx", "summarize", *map(str, args)]


def test_a_client_killed_and_started_again_finishes_with_every_summary_once(corpus, one_process, client,
                                                                            tmp_path):
    out = tmp_path / "out.jsonl"
    command = cli("--input", corpus, "--output", out, "--scheduler", client.scheduler.address,
                  "--batch-size", "1", "--quiet")
    first = subprocess.Popen(command, stderr=subprocess.PIPE)
    wait_for_lines(out, 3)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    done_by_first = out.read_bytes().count(b"\n")
    assert done_by_first < N_DOCS, "the first client finished before the kill; the test proved nothing"
    with open(out, "ab") as f:                       # what a crash inside a write would leave
        f.write(b'{"id": "doc-99", "summ')
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "torn last line" in second.stderr and f"{done_by_first} already done" in second.stderr
    assert read_output(out) == one_process


def test_the_cli_names_a_malformed_line_and_exits_1(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"id": 1, "text": "a b c."}\nnot json\n', encoding="utf-8")
    r = subprocess.run(cli("--input", bad, "--output", tmp_path / "o.jsonl", "--workers", "0", "--quiet"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "line 2: not JSON" in r.stderr and "Traceback" not in r.stderr


def test_the_cli_skips_malformed_lines_with_a_flag_and_lists_them(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"id": 1, "text": "a b c."}\nnot json\n{"id": 2, "text": "d e f."}\n', encoding="utf-8")
    out = tmp_path / "o.jsonl"
    r = subprocess.run(cli("--input", bad, "--output", out, "--workers", "0", "--quiet", "--skip-malformed"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"skipped {bad} line 2: not JSON" in r.stderr
    assert set(read_output(out)) == {1, 2}


def test_the_corpus_benchmark_runs_every_setting_and_finds_the_same_summaries(tmp_path):
    out = tmp_path / "bench.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "benchmarks.corpus_bench", "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"one process, 1 BLAS thread", f"one process, {os.cpu_count()} BLAS threads",
                                      "Dask, 1 worker", "Dask, 2 workers"}
    assert all(r["docs"] == 6 and r["docs_per_second"] > 0 for r in report["results"].values())
    assert all(report["same_summaries"].values())
    assert "Dask 2 workers / Dask 1 worker" in report["ratios"]
