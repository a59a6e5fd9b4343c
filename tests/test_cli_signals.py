"""The CLI never prints a traceback: Ctrl-C at any moment exits 130 with one line, a closed pipe exits 141
quietly. Real processes and real signals: the moments are chosen by what the child has done so far
(a shared library mapped in, a line printed), not by guessed sleeps alone."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to see the child's start-up")

# Minutes of work if left alone (5000 tokens, 8 beams): every test interrupts it long before the end.
DEMO = [sys.executable, "-m", "minipegx", "demo", "--num-beams", "8", "--min-new-tokens", "5000",
        "--max-new-tokens", "5000", "--quiet"]


def start(argv=DEMO):
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_until_mapped(proc, library: str, timeout=60):
    """Until the child has loaded a shared library whose path contains `library` (it is importing)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(f"/proc/{proc.pid}/maps") as f:
            if library in f.read():
                return
        time.sleep(0.001)
    raise AssertionError(f"the child never loaded {library}")


def interrupt(proc):
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode()


@pytest.mark.parametrize("library", ["_multiarray_umath", "sentencepiece"])
def test_ctrl_c_while_importing_exits_130_with_one_line(library):
    """NumPy's and sentencepiece's C extensions are mapped while Python is importing them."""
    proc = start()
    wait_until_mapped(proc, library)
    assert interrupt(proc) == (130, "minipegx: interrupted\n")


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0])
def test_ctrl_c_while_loading_or_generating_exits_130_with_one_line(delay):
    proc = start()
    assert proc.stdout.readline().startswith(b"Document:")  # the demo has started its work
    time.sleep(delay)
    assert interrupt(proc) == (130, "minipegx: interrupted\n")


def test_a_second_ctrl_c_does_not_turn_into_a_traceback():
    proc = start()
    proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode, err.decode()) == (130, "minipegx: interrupted\n")


def test_a_reader_that_goes_away_exits_141_without_a_traceback(tmp_path):
    """`minipegx summarize --json FILE | head -c0`: head exits before minipegx writes."""
    doc = tmp_path / "doc.txt"
    doc.write_text("A short document about blankets and nets. " * 20)
    proc = subprocess.Popen([sys.executable, "-m", "minipegx", "summarize", "--json", "--quiet",
                             "--max-new-tokens", "4", str(doc)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reading end of the pipe: gone before anything is written
    err = proc.stderr.read().decode()
    assert (proc.wait(timeout=120), err) == (141, "")


def test_a_bug_is_one_line_with_exit_70(monkeypatch, capsys):
    from minipegx import cli

    def broken(argv):
        raise TypeError("something the code did not expect")

    monkeypatch.setattr(cli, "_main", broken)
    assert cli.main([]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" in err and "TypeError: something" in err
