"""The project's tools: the demo task's data generator, the demo model's training recipe and evaluation,
the sentencepiece trainer and the goldens writer. Run them from the repository root as modules, e.g.
``python -m tools.train_demo --out minipegx/data/demo`` (they import each other as ``tools.*``)."""
