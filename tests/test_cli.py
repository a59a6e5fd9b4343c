"""The command line and summarize(): the README's main command, files and stdin, JSON, and one-line
errors with a non-zero exit (never a traceback)."""

import json
import subprocess
import sys

import pytest

import minipegx
from minipegx.cli import main


@pytest.fixture
def doc(tmp_path):
    p = tmp_path / "doc.txt"
    p.write_text(minipegx.example_document("short"), encoding="utf-8")   # short: these tests are about the CLI
    return p


@pytest.fixture(scope="module")
def demo_output():
    r = subprocess.run([sys.executable, "-m", "minipegx", "demo", "--quiet"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_demo_command_prints_the_default_models_summary_of_the_long_example(demo_output):
    summary = demo_output.split("Summary by the bundled demo model:\n")[1].split("\n")[0]
    doc = minipegx.example_document("long")
    assert summary == minipegx.summarize(doc, model=minipegx.demo_model_path("long"))


def test_demo_command_prints_the_bundled_true_summary(demo_output):
    assert demo_output.split("The true summary:\n")[1].strip() == minipegx.example_summary("long").strip()


def test_demo_command_names_the_document_and_its_length_in_tokens(demo_output):
    doc = minipegx.example_document("long")
    n_tokens = len(minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path("long")).encode(doc))
    assert demo_output.startswith(f"Document: minipegx/data/example_long_document.txt ({n_tokens:,} tokens, ")


def test_summarize_command_reads_a_file(doc, capsys):
    assert main(["summarize", str(doc), "--quiet", "--num-beams", "2", "--max-new-tokens", "24"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == minipegx.summarize(doc.read_text(), num_beams=2, max_new_tokens=24)


def test_summarize_command_reads_standard_input(doc):
    r = subprocess.run([sys.executable, "-m", "minipegx", "summarize", "-", "--quiet", "--max-new-tokens", "8"],
                       input=doc.read_text(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == minipegx.summarize(doc.read_text(), max_new_tokens=8)


def test_json_output_lists_each_file_with_its_summary(doc, capsys):
    assert main(["summarize", str(doc), str(doc), "--json", "--quiet", "--max-new-tokens", "8"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [g["file"] for g in got] == [str(doc), str(doc)]
    assert got[0]["summary"] == got[1]["summary"] != ""


@pytest.mark.parametrize("argv, message", [
    (["summarize", "/no/such/file.txt"], "cannot read /no/such/file.txt"),
    (["summarize", "--model", "/no/such/dir", "-"], "/no/such/dir"),
])
def test_missing_inputs_give_a_one_line_error_and_exit_1(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("minipegx: error:") and message in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_a_file_that_is_not_utf8_names_the_byte_offset(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    assert main(["summarize", str(bad)]) == 1
    assert "offset 3" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--num-beams", "0"], ["--top-p", "x"], ["--early-stopping", "maybe"],
                                  ["--max-new-tokens", "-3"]])
def test_bad_flag_values_exit_2_with_a_usage_message(flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(["summarize", "-", *flag])
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_inconsistent_generation_options_are_a_one_line_error(doc, capsys):
    assert main(["summarize", str(doc), "--min-new-tokens", "50", "--max-new-tokens", "10"]) == 1
    assert "min" in capsys.readouterr().err


def test_summarize_returns_a_string_for_a_string_and_a_list_for_a_list():
    doc = minipegx.example_document("short")
    one = minipegx.summarize(doc, max_new_tokens=8)
    assert isinstance(one, str)
    assert minipegx.summarize([doc, doc], max_new_tokens=8) == [one, one]
