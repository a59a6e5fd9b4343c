"""The corpus runner (`minipegx summarize --input`) on hostile input, one test per class of attack: it
never writes where it reads, refuses an output that is not a regular file before any work, bounds its
memory whatever a document's size, and checks ids when it reads them. Each case ends in a correct
result or a one-line error (exit 1) that names the problem, and the input is never changed."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

import minipegx
from minipegx.corpus import files
from minipegx.corpus.jsonstream import parse_long_line
from minipegx.corpus.run import char_budget
from minipegx.errors import CorpusError


def cli(*args, timeout=120):
    r = subprocess.run([sys.executable, "-m", "minipegx", "summarize", "--workers", "0", "--quiet",
                        "--max-new-tokens", "2", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stderr


def one_line_error(code, err, *words):
    assert code == 1 and err.startswith("minipegx: error:") and err.count("\n") == 1, (code, err)
    assert all(w in err for w in words), err


@pytest.fixture
def corpus(tmp_path):
    """Two documents and no final newline: a resume that took the input for its output would cut the
    last one off as a torn line."""
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"id": 1, "text": "Mirela carried 47 lanterns to Ostbridge."}) + "\n"
                    + json.dumps({"id": 2, "text": "Tobias sold 12 barrels to Kellin."}), encoding="utf-8")
    return path


@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink"])
def test_an_output_that_is_the_input_under_any_name_is_refused_and_the_input_kept(corpus, tmp_path, alias):
    before = corpus.read_bytes()
    out = {"same": corpus, "symlink": tmp_path / "link.jsonl", "hardlink": tmp_path / "hard.jsonl"}[alias]
    if alias == "symlink":
        out.symlink_to(corpus)
    elif alias == "hardlink":
        os.link(corpus, out)
    one_line_error(*cli("--input", corpus, "--output", out), "is the input")
    assert corpus.read_bytes() == before


def test_an_output_inside_a_folder_corpus_or_linked_to_one_of_its_files_is_refused(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Mirela carried 47 lanterns to Ostbridge.", encoding="utf-8")
    one_line_error(*cli("--input", folder, "--output", folder / "out.jsonl"), "inside the corpus folder")
    os.link(folder / "a.txt", tmp_path / "out.jsonl")
    one_line_error(*cli("--input", folder, "--output", tmp_path / "out.jsonl"), "is the input")
    assert (folder / "a.txt").read_text() == "Mirela carried 47 lanterns to Ostbridge." and os.listdir(folder) == ["a.txt"]


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "symlink to a fifo"])
def test_an_output_that_is_not_a_regular_file_is_refused_before_any_work(corpus, tmp_path, kind):
    """A FIFO would block the open until a reader came: the run must end, with a one-line error."""
    out = tmp_path / "out"
    if kind in ("fifo", "symlink to a fifo"):
        os.mkfifo(tmp_path / "fifo")
        out = tmp_path / "fifo" if kind == "fifo" else out
        if kind != "fifo":
            out.symlink_to(tmp_path / "fifo")
    elif kind == "device":
        out = "/dev/null"
    else:
        out.mkdir()
    one_line_error(*cli("--input", corpus, "--output", out, timeout=60), "not a regular file")


def test_the_appender_refuses_a_fifo_put_in_place_after_the_checks(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CorpusError, match="FIFO|regular file"):
        files.Appender(tmp_path / "fifo")


@pytest.mark.parametrize("rid, reason", [
    ("9" * 5000, "more than 40 digits"),
    ("2" + "0" * 20, "out of range"),
    ('"\\ud800 lone"', "lone surrogate"),
    ('"' + "x" * 2000 + '"', "more than 1,024 characters"),
    ("true", "string or an integer"),
    ("1.5", "string or an integer"),
    ("null", "string or an integer"),
    ("[1]", "string or an integer"),
])
def test_an_id_that_is_not_a_bounded_string_or_integer_is_malformed_at_its_line(tmp_path, rid, reason):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "ok", "text": "a b c."}\n{"id": ' + rid + ', "text": "d e f."}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=f"line 2: .*{reason}") as e:
        files.read_corpus(path)
    assert len(str(e.value)) < 400                              # the message does not quote the whole id
    records, malformed = files.read_corpus(path, on_malformed="skip")
    assert [r.id for r in records] == ["ok"] and malformed[0].startswith(f"{path} line 2: ")


def test_the_cli_skips_a_malformed_id_with_the_flag_and_writes_every_other_summary(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": ' + "9" * 5000 + ', "text": "a b."}\n{"id": "\\udc00", "text": "c d."}\n'
                    '{"id": "fine", "text": "Mirela carried 47 lanterns to Ostbridge."}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    one_line_error(*cli("--input", path, "--output", out), "line 1")
    code, err = cli("--input", path, "--output", out, "--skip-malformed")
    assert code == 0 and "line 1:" in err and "line 2:" in err and "Traceback" not in err
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == ["fine"]


def test_a_long_line_read_as_a_stream_gives_what_json_gives_cut_to_the_budget():
    """Random records of every escape (surrogate pairs, lone surrogates, quotes, U+2028), in chunks of 1
    to 20 bytes so that every escape is split somewhere: the kept text is json's, cut to `keep`."""
    rng = random.Random(0)
    alphabet = ["a", "é", "😀", "\ud800", "\udc00", '"', "\\", "\n", " ", "\u2028", "<"]
    joined = lambda s: s.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")  # noqa: E731
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        record = {"id": rng.choice([1, "x😀", -5]), "text": text, "other": [1, {"a": text}], "n": rng.random()}
        line = json.dumps(record, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:                                 # a raw lone surrogate: not UTF-8
            continue
        keep, chunk = rng.randint(0, 50), rng.randint(1, 20)
        rest = iter([line[i:i + chunk] for i in range(chunk, len(line), chunk)])
        got = parse_long_line(line[:chunk], lambda: next(rest, b""), keep={"text": keep}, small=("id",))
        want = json.loads(line)
        assert got["id"] == want["id"]
        assert got["text"] == joined(want["text"])[:keep]
        assert ("text" in got.cut) == (len(joined(want["text"])) > keep)


@pytest.mark.parametrize("line", [b'{"id": 1, "text": "abc', b'{"id": 1, "text": "a"} x', b'{"id": 1 "text": "a"}',
                                  b'{"id": [1,}', b'{"id": 1, "text": "\xff"}', b'{"id": 1, "text": "\\q"}'])
def test_a_damaged_long_line_is_malformed_like_a_short_one(line):
    with pytest.raises(CorpusError, match="not JSON|not valid UTF-8|expected"):
        parse_long_line(line[:3], iter([line[3:], b""]).__next__, keep={"text": 2}, small=("id",))


def test_a_document_cut_to_its_character_budget_gives_the_tokens_of_the_whole_document():
    """The words kept before the cut are whole, and the tokenizer encodes each word alone: the first
    `limit` tokens are the same, at the cost of reading char_budget characters only."""
    tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path())
    doc = minipegx.example_document("long")
    for limit in (50, 333, 2048):
        budget = char_budget(limit, tok)
        cut, was_cut = files.cut_text(doc, budget)
        assert was_cut and len(cut) <= budget and doc.startswith(cut)
        assert tok.encode(cut)[:limit] == tok.encode(doc)[:limit]


def peak_rss_of_a_run(tmp_path, name, make):
    """Peak resident memory (bytes) of one `summarize --input` run in a child, the corpus made by make(path)."""
    path = tmp_path / name
    make(path)
    # VmHWM: this process image's peak (ru_maxrss would also count the forking parent's pages before exec)
    code = ("import re, sys, minipegx.cli as c; rc = c.main(sys.argv[1:]); "
            "print(re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read()).group(1))")
    r = subprocess.run([sys.executable, "-c", code, "summarize", "--input", str(path), "--output",
                        str(tmp_path / (name + ".out")), "--workers", "0", "--quiet", "--max-new-tokens", "2",
                        "--max-input-length", "256"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1]) * 1024


def test_memory_does_not_grow_with_a_documents_size(tmp_path):
    """A 60 MB JSON line, a 60 MB line of escapes and a 60 MB .txt without a space against the same
    corpora of 1 KB: the model reads 256 tokens of each, and the run holds no more than a few read
    chunks (1 MiB each) and each document's budget of characters beyond the small run's peak."""
    big = 60 * 10**6
    doc = lambda n: ("Mirela carried 47 lanterns to Ostbridge. " * (n // 40 + 1))[:n]  # noqa: E731

    def jsonl(n, ascii_only):
        return lambda p: p.write_text(json.dumps({"text": doc(n) if ascii_only else "é" * n, "id": 1},
                                                 ensure_ascii=True) + "\n", encoding="utf-8")

    def folder(n):
        def make(p):
            p.mkdir()
            (p / "one.txt").write_text("a" * n, encoding="utf-8")
        return make
    bound = 32 * 2**20                   # a few 1 MiB chunks and budgets; holding the document would be 60 MB+
    for name, small, large in [("line", jsonl(1000, True), jsonl(big, True)),
                               ("escapes", jsonl(1000, False), jsonl(big // 6, False)),
                               ("txt", folder(1000), folder(big))]:
        base = peak_rss_of_a_run(tmp_path, name + "_small", small)
        peak = peak_rss_of_a_run(tmp_path, name + "_large", large)
        assert peak - base < bound, (name, base, peak)


def test_a_folder_file_with_bad_utf8_after_its_budget_is_still_malformed(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "bad.txt").write_bytes(b"word " * 400_000 + b"\xff")
    with pytest.raises(CorpusError, match=r"bad\.txt: not valid UTF-8 \(bad byte at offset 2000000\)"):
        files.read_corpus(folder, budget=1000)


def test_the_budget_docs_corpus_md_states_for_the_demo_models():
    """docs/corpus.md and docs/security.md: 2 L p + p = 393,228 characters at L = 16,384 (p = 12)."""
    for which in ("short", "long"):
        tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path(which))
        assert char_budget(16384, tok) == 393_228


def test_an_output_that_is_one_of_the_models_files_is_refused(corpus, tmp_path):
    model = tmp_path / "model"
    import shutil

    shutil.copytree(minipegx.demo_model_path("short"), model)
    before = (model / "config.json").read_bytes()
    one_line_error(*cli("--input", corpus, "--output", model / "config.json", "--model", model), "which this run reads")
    assert (model / "config.json").read_bytes() == before


def test_an_input_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    one_line_error(*cli("--input", tmp_path / "fifo", "--output", tmp_path / "o.jsonl", timeout=60), "FIFO")


def test_a_long_line_of_whitespace_is_blank_and_a_long_damaged_one_is_malformed(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b" " * 3_000_000 + b"\n" + b'{"id": 1, "text": "a b."}\n' + b'{"id": 2, "text": "' + b"x" * 3_000_000
                     + b"\n")
    with pytest.raises(CorpusError, match="line 3: not JSON"):
        files.read_corpus(path, budget=100)
    records, malformed = files.read_corpus(path, budget=100, on_malformed="skip")
    assert [r.id for r in records] == [1] and len(malformed) == 1
