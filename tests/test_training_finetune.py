"""`minipegx finetune`: it trains, resumes with the same losses, writes a model both libraries read alike, never
touches its input model, and names every bad argument.

A tiny random PEGASUS-X (tests/reference.py's TINY: block_size 4, 2 global tokens, stagger) with the first demo
model's vocabulary and tokenizer, on a few demo-task documents of ~60 words: each run is a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil

import numpy as np
import pytest

import minipegx
from minipegx.cli import main
from minipegx.errors import CorpusError, InputError
from minipegx.tolerances import LOGITS
from minipegx.training import data as D
from minipegx.training.finetune import finetune

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random model with the short demo model's vocabulary (784) and its tokenizer files."""
    from reference import hf_model

    path = tmp_path_factory.mktemp("tiny") / "model"
    hf_model(0, vocab_size=784, max_position_embeddings=512).save_pretrained(path)
    demo = minipegx.demo_model_path("short")
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(demo, name), path / name)
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """train.jsonl (6 pairs) and valid.jsonl (2 pairs) of the short demo model's task."""
    from tools.demo_data import make_named_example

    folder = tmp_path_factory.mktemp("data")
    files = {}
    for name, seed, n in (("train", 1, 6), ("valid", 100, 2)):
        rng = random.Random(seed)
        pairs = [make_named_example(rng, rng.randint(40, 70), n_facts=2) for _ in range(n)]
        files[name] = str(folder / f"{name}.jsonl")
        with open(files[name], "w") as f:
            for doc, summ in pairs:
                f.write(json.dumps({"text": doc, "summary": summ}) + "\n")
    return files


def run(tiny_dir, corpus, out, **kw):
    args = dict(model=tiny_dir, steps=6, lr=1e-2, batch_tokens=200, max_target_length=32, eval_docs=1, quiet=True)
    return finetune(corpus["train"], str(out), **{**args, **kw})


def losses(result):
    return [row["loss"] for row in result.history if "loss" in row]


def digest(folder):
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            h.update(name.encode() + f.read())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- training
def test_the_loss_falls_on_the_training_pairs_and_evaluations_are_logged(tiny_dir, corpus, tmp_path):
    result = run(tiny_dir, corpus, tmp_path / "out", valid=corpus["valid"], steps=12, eval_every=6)
    steps = losses(result)
    assert len(steps) == 12 and np.mean(steps[-3:]) < np.mean(steps[:3])
    evals = [row for row in result.history if "valid_loss" in row]
    assert [e["step"] for e in evals] == [0, 6, 12]
    assert all(0 <= e["rouge1"] <= 1 and isinstance(e["example"], str) for e in evals)
    logged = [json.loads(line) for line in open(tmp_path / "out" / "train_log.jsonl")]
    assert logged == json.loads(json.dumps(result.history))


def test_a_resumed_run_takes_the_same_steps_with_the_same_losses(tiny_dir, corpus, tmp_path):
    """The batch of step i depends only on (data, seed, i) and the AdamW moments are saved with the weights, so
    the process stopped after step 4 and the one that resumes from its checkpoint compute exactly what one
    uninterrupted process computes: the same operations on the same numbers (equality, not a tolerance)."""
    whole = run(tiny_dir, corpus, tmp_path / "whole", save_every=3)
    first = run(tiny_dir, corpus, tmp_path / "parts", save_every=3, stop_at=4)
    assert first.steps_done == 4 and not os.path.exists(tmp_path / "parts" / "model.safetensors")
    # saving every step and keeping one checkpoint removes the one it resumed from as it goes: nothing may
    # still need that folder (the tokenizer is read from OUT)
    second = run(tiny_dir, corpus, tmp_path / "parts", save_every=1, keep_checkpoints=1)
    assert second.resumed_from == 4
    assert os.listdir(tmp_path / "parts" / "checkpoints") == ["step-000006"]
    assert losses(second) == losses(whole)
    a = minipegx.from_pretrained(tmp_path / "whole").params
    b = minipegx.from_pretrained(tmp_path / "parts").params
    np.testing.assert_array_equal(a["model"]["shared"]["weight"], b["model"]["shared"]["weight"])


def test_a_finished_run_rerun_does_nothing_more(tiny_dir, corpus, tmp_path):
    run(tiny_dir, corpus, tmp_path / "out", steps=2)
    again = run(tiny_dir, corpus, tmp_path / "out", steps=2)
    assert again.resumed_from == 2 and len(losses(again)) == 2


def test_the_output_loads_in_minipegx_and_transformers_with_equal_logits(tiny_dir, corpus, tmp_path):
    run(tiny_dir, corpus, tmp_path / "out", steps=3)
    out = tmp_path / "out"
    ref = transformers.PegasusXForConditionalGeneration.from_pretrained(out).eval()
    mine = minipegx.from_pretrained(out)
    tok = minipegx.Tokenizer.from_pretrained(out)
    batch = tok(["According to the market ledger, Wendel returned 87 blankets to Ironmere.", "Una lent nets."],
                padding=True, return_tensors="np")
    dec = np.array([[0, 150, 160], [0, 170, 1]])
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(batch["input_ids"]), attention_mask=torch.tensor(batch["attention_mask"]),
                   decoder_input_ids=torch.tensor(dec)).logits.numpy()
    got = mine(**batch, decoder_input_ids=dec).logits
    assert LOGITS.holds(got, want), LOGITS.error(got, want)
    trained = minipegx.from_pretrained(tmp_path / "out").params["model"]["shared"]["weight"]
    start = minipegx.from_pretrained(tiny_dir).params["model"]["shared"]["weight"]
    assert not np.array_equal(trained, start)


def test_the_output_and_every_checkpoint_are_save_pretrained_folders(tiny_dir, corpus, tmp_path):
    """One writer for every save: the model's save_pretrained writes OUT and each checkpoint's model folder, so
    both hold exactly what save_pretrained writes (the tokenizer's four files included), and OUT's tokenizer
    gives minipegx's ids in transformers."""
    from test_save_pretrained import HF_FILES

    run(tiny_dir, corpus, tmp_path / "out", steps=2, save_every=1)
    out = tmp_path / "out"
    assert HF_FILES <= set(os.listdir(out))
    assert set(os.listdir(out / "checkpoints")) == {"step-000001", "step-000002"}
    for step in os.listdir(out / "checkpoints"):
        assert set(os.listdir(out / "checkpoints" / step)) == HF_FILES | {"optimizer.safetensors",
                                                                          "trainer_state.json"}
    text = "According to the market ledger, Wendel returned 87 blankets to Ironmere."
    want = minipegx.Tokenizer.from_pretrained(tiny_dir).encode(text)
    assert transformers.AutoTokenizer.from_pretrained(out)(text)["input_ids"] == want


def test_a_float64_run_exports_float32_and_checkpoints_float64(tiny_dir, corpus, tmp_path):
    """The export is float32 whatever the training dtype; a checkpoint keeps the training dtype (a resumed run
    goes on with the same numbers)."""
    from safetensors import safe_open

    run(tiny_dir, corpus, tmp_path / "out", steps=1, dtype="float64")
    out = tmp_path / "out"
    for folder, dtype in ((out, "F32"), (out / "checkpoints" / "step-000001", "F64")):
        with safe_open(folder / "model.safetensors", "np") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {dtype}
        assert json.loads((folder / "config.json").read_text())["dtype"] == {"F32": "float32", "F64": "float64"}[dtype]


def test_the_input_model_directory_is_never_written(tiny_dir, corpus, tmp_path):
    before = digest(tiny_dir)
    run(tiny_dir, corpus, tmp_path / "out", steps=2)
    assert digest(tiny_dir) == before
    with pytest.raises(InputError, match="never overwrites its input"):
        run(tiny_dir, corpus, tiny_dir, steps=2)
    with pytest.raises(InputError, match="never overwrites its input"):
        run(tiny_dir, corpus, os.path.join(tiny_dir, "inside"), steps=2)
    with pytest.raises(InputError, match="never overwrites its input"):
        run(tiny_dir, corpus, os.path.dirname(tiny_dir), steps=2)
    assert digest(tiny_dir) == before


def test_a_rerun_with_other_settings_is_refused(tiny_dir, corpus, tmp_path):
    run(tiny_dir, corpus, tmp_path / "out", steps=2)
    with pytest.raises(InputError, match=r"other settings \(lr"):
        run(tiny_dir, corpus, tmp_path / "out", steps=2, lr=2e-2)


def test_an_unrelated_non_empty_out_is_refused(tiny_dir, corpus, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a minipegx finetune run"):
        run(tiny_dir, corpus, tmp_path / "out", steps=2)


# ---------------------------------------------------------------------------------------------- data
def test_batches_are_packed_by_length_within_the_budget():
    lengths = [5, 30, 7, 29, 6, 31, 60, 8]
    batches = D.pack_by_length(lengths, 64)
    assert sorted(i for b in batches for i in b) == list(range(8))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 64
    assert [sorted(lengths[i] for i in b) for b in batches] == [[5, 6, 7, 8], [29, 30], [31], [60]]


def test_the_batch_of_a_step_depends_only_on_seed_and_step():
    batches = [[0], [1, 2], [3], [4, 5, 6]]
    epoch = [D.batch_indices(batches, 7, i) for i in range(4)]
    assert sorted(map(tuple, epoch)) == sorted(map(tuple, batches))
    second = [D.batch_indices(batches, 7, i) for i in range(4, 8)]
    assert sorted(map(tuple, second)) == sorted(map(tuple, batches))
    assert [D.batch_indices(batches, 7, i) for i in range(8)] == epoch + second       # asked again: the same
    assert [D.batch_indices(batches, 8, i) for i in range(8)] != epoch + second       # another seed: another order


def test_a_malformed_line_is_named_by_its_line_number(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "summary": "b"}\n\nnot json\n')
    with pytest.raises(CorpusError, match=r"t.jsonl line 3: not JSON"):
        D.read_pairs(str(path))
    pairs, malformed = D.read_pairs(str(path), on_malformed="skip")
    assert len(pairs) == 1 and malformed[0].endswith("line 3: not JSON (Expecting value at column 1)")
    path.write_text('{"document": "a", "summary": "b"}\n')
    with pytest.raises(CorpusError, match=r"line 1: the 'text' field must be a string \(no such field; "
                                          r"fields: 'document', 'summary'; choose one with --text-field\)"):
        D.read_pairs(str(path))
    pairs, _ = D.read_pairs(str(path), text_field="document")
    assert pairs[0][:2] == ("a", "b")


# ---------------------------------------------------------------------------------------------- the command
def test_the_command_trains_and_reports(tiny_dir, corpus, tmp_path, capsys):
    code = main(["finetune", "--train", corpus["train"], "--valid", corpus["valid"], "--model", tiny_dir,
                 "--out", str(tmp_path / "out"), "--steps", "2", "--lr", "1e-2", "--batch-tokens", "200",
                 "--max-target-length", "16", "--eval-docs", "1", "--log-every", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "step 2/2  loss" in err and "tokens/s" in err and "eval at step 2: valid loss" in err
    assert "rouge1" in err
    assert os.path.isfile(tmp_path / "out" / "model.safetensors")


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "--steps must be a whole number >= 1"),
    (["--lr", "-1"], "--lr must be a number > 0"),
    (["--lr", "nan"], "--lr must be a number > 0"),
    (["--batch-tokens", "0"], "--batch-tokens must be a whole number >= 2"),
    (["--batch-tokens", "10"], "--batch-tokens 10 is smaller than the longest document"),
    (["--warmup", "50"], "--warmup 50 is longer than --steps 2"),
    (["--schedule", "step"], "--schedule must be one of cosine, linear, constant"),
    (["--label-smoothing", "1"], "--label-smoothing must be a number >= 0 and < 1"),
    (["--eval-every", "0"], "--eval-every must be a whole number >= 1"),
    (["--max-target-length", "1"], "--max-target-length must be a whole number >= 2"),
    (["--text-field", "body"], "the 'body' field must be a string (no such field"),
    (["--valid", "/nonexistent.jsonl"], "--valid /nonexistent.jsonl: no such file"),
    (["--model", "/nonexistent-model"], "--model /nonexistent-model: no such directory"),
])
def test_every_bad_argument_is_one_clear_line(tiny_dir, corpus, tmp_path, capsys, extra, message):
    args = ["finetune", "--train", corpus["train"], "--model", tiny_dir, "--out", str(tmp_path / "out"),
            "--steps", "2", "--batch-tokens", "200", "--quiet"]
    code = main(args + extra)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("minipegx: error: ") and message in err, err
    assert err.count("\n") == 1


def test_a_missing_train_file_or_out_that_is_a_file_is_named(tiny_dir, corpus, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for extra, message in ((["--train", "/nonexistent.jsonl", "--out", str(tmp_path / "o")], "--train"),
                           (["--train", corpus["train"], "--out", str(tmp_path / "file")], "is a file")):
        assert main(["finetune", "--model", tiny_dir, "--quiet"] + extra) == 1
        assert message in capsys.readouterr().err


@pytest.mark.skipif(minipegx.backend.cupy_available(), reason="here CuPy and a GPU exist: the error cannot happen")
def test_backend_cupy_without_cupy_says_how_to_get_it(tiny_dir, corpus, tmp_path, capsys):
    assert main(["finetune", "--train", corpus["train"], "--model", tiny_dir, "--out", str(tmp_path / "o"),
                 "--backend", "cupy", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "needs CuPy" in err or "needs a CUDA GPU" in err, err
    assert not os.path.exists(tmp_path / "o")


def test_backend_cupy_on_the_standin_trains_resumes_and_saves_as_numpy_does(tiny_dir, corpus, tmp_path, monkeypatch):
    """On the CuPy stand-in (tests/cupy_standin.py: device arrays that refuse implicit host conversion) a run
    cut at step 2 and resumed takes NumPy's steps: the losses within TINY_FP32 (float32 on both sides, the same
    operations; the stand-in computes with NumPy), and the saved model is NumPy's within it too."""
    import cupy_standin

    from minipegx.tolerances import TINY_FP32

    want = run(tiny_dir, corpus, tmp_path / "numpy", steps=3, save_every=1)
    monkeypatch.setitem(__import__("sys").modules, "cupy", cupy_standin)
    on_device = dict(steps=3, save_every=1, backend="cupy", valid=corpus["valid"], eval_every=3)  # evaluation too
    first = run(tiny_dir, corpus, tmp_path / "cupy", stop_at=2, **on_device)
    second = run(tiny_dir, corpus, tmp_path / "cupy", **on_device)
    assert (first.steps_done, second.resumed_from) == (2, 2)
    assert TINY_FP32.holds(np.array(losses(second)), np.array(losses(want)))
    assert [row["step"] for row in second.history if "valid_loss" in row] == [0, 3]
    got = minipegx.from_pretrained(tmp_path / "cupy").params["model"]["shared"]["weight"]
    ref = minipegx.from_pretrained(tmp_path / "numpy").params["model"]["shared"]["weight"]
    assert TINY_FP32.holds(got, ref), TINY_FP32.error(got, ref)


def test_a_second_run_into_the_same_out_at_once_is_refused(tiny_dir, corpus, tmp_path):
    import fcntl

    run(tiny_dir, corpus, tmp_path / "out", steps=1)
    fd = os.open(tmp_path / "out" / ".lock", os.O_WRONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)                          # another process' run, still going
    try:
        with pytest.raises(InputError, match="being written by another finetune run"):
            run(tiny_dir, corpus, tmp_path / "out", steps=1)
    finally:
        os.close(fd)
    assert run(tiny_dir, corpus, tmp_path / "out", steps=1).resumed_from == 1
