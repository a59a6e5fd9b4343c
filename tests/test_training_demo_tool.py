"""tools/train_demo_numpy.py (phase 1 of the demo recipe trained by minipegx alone) runs: one step, in a process
that never loads torch or transformers, to a checkpoint both minipegx and transformers read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_step_of_the_numpy_recipe_writes_a_loadable_model_without_torch(tmp_path):
    out = tmp_path / "model"
    proc = subprocess.run([sys.executable, "-m", "tools.train_demo_numpy", "--out", str(out), "--work",
                           str(tmp_path / "work"), "--max-steps", "1"], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    assert "torch and transformers never loaded" in proc.stdout
    state = json.loads((out / "training_state.json").read_text())
    assert state["step"] == 1 and state["stage"] == "bootstrap"

    import minipegx

    model = minipegx.from_pretrained(out)
    assert model.config.vocab_size == 784 and model.generation_config["num_beams"] == 4
    import transformers

    ref = transformers.PegasusXForConditionalGeneration.from_pretrained(out)
    assert ref.config.block_size == 64 and ref.config.stagger_local_blocks
