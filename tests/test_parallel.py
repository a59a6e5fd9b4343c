"""The parallel seam (minipegx.parallel.for_slices): every piece runs once, BLAS gets its threads back,
failures reach the caller, CuPy gets one batched slice, one_blas_thread holds BLAS at one thread through the
encoder's layers -- and the encoder equals transformers' in each
of the ways the seam can cut its work (a pool of threads, a plain loop, all blocks in one slice).

Tolerance: TINY_FP32 (1e-5) for the encoder against the reference, as in test_parity.py: cutting the
work into pieces changes no arithmetic, only which thread does it (BLAS at one thread inside a piece
sums in the order it would for that piece's product)."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from reference import max_err, pair, random_batch, t, torch

import minipegx.encoder as enc
from minipegx import parallel
from minipegx.tolerances import TINY_FP32


def blas_threads():
    return max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")


def test_every_piece_runs_exactly_once_on_a_pool_of_threads():
    seen, names = [], set()

    def work(s):
        seen.extend(range(10)[s])
        names.add(threading.current_thread().name)

    with threadpool_limits(limits=2, user_api="blas"):
        parallel.for_slices(work, 10, np, step=3)
    assert sorted(seen) == list(range(10))
    assert all(name.startswith("minipegx") for name in names)   # the pool's threads, not the caller's


def test_blas_runs_on_one_thread_inside_a_piece_and_gets_its_threads_back():
    inside = []
    with threadpool_limits(limits=2, user_api="blas"):
        parallel.for_slices(lambda s: inside.append(blas_threads()), 4, np)
        assert inside == [1, 1, 1, 1]
        assert blas_threads() == 2


def test_a_failing_piece_raises_in_the_caller_and_blas_gets_its_threads_back():
    def work(s):
        if s.start == 2:
            raise ValueError("piece 2")

    with threadpool_limits(limits=2, user_api="blas"):
        with pytest.raises(ValueError, match="piece 2"):
            parallel.for_slices(work, 4, np)
        assert blas_threads() == 2


def test_with_one_blas_thread_the_pieces_run_in_the_calling_thread():
    names = []
    with threadpool_limits(limits=1, user_api="blas"):
        parallel.for_slices(lambda s: names.append(threading.current_thread().name), 3, np)
    assert names == [threading.current_thread().name] * 3


def test_on_another_array_module_all_pieces_are_one_slice():
    """CuPy (or any module but NumPy): one call over every piece, so each product is one batched launch."""
    calls = []
    parallel.for_slices(lambda *s: calls.append(s), 7, xp=object(), step=2)
    parallel.for_slices(lambda *s: calls.append(s), (3, 5), xp=object())
    assert calls == [(slice(0, 7),), (slice(0, 3), slice(0, 5))]


def test_a_grid_is_cut_into_its_cells():
    cells = []
    with threadpool_limits(limits=2, user_api="blas"):
        parallel.for_slices(lambda a, b: cells.append((a.start, b.start, a.stop - a.start, b.stop - b.start)),
                            (3, 4), np)
    assert sorted(cells) == [(i, j, 1, 1) for i in range(3) for j in range(4)]


def test_on_the_pool_rows_are_cut_into_equal_pieces_a_multiple_of_the_threads():
    """1,152 rows in pieces of at most 512 on 2 threads: 4 pieces of 288 (not 512, 512, 128, which leaves one
    thread 640 rows and the other 512); a plain loop keeps the step it was given."""
    pieces = []
    with threadpool_limits(limits=2, user_api="blas"):
        parallel.for_slices(lambda s: pieces.append((s.start, s.stop)), 1152, np, step=512)
    assert sorted(pieces) == [(0, 288), (288, 576), (576, 864), (864, 1152)]
    pieces.clear()
    with threadpool_limits(limits=1, user_api="blas"):
        parallel.for_slices(lambda s: pieces.append((s.start, s.stop)), 1152, np, step=512)
    assert pieces == [(0, 512), (512, 1024), (1024, 1152)]


def test_one_blas_thread_holds_blas_at_one_thread_and_for_slices_still_uses_the_pool():
    names, inside = set(), []

    def work(s):
        names.add(threading.current_thread().name)
        inside.append(blas_threads())

    with threadpool_limits(limits=2, user_api="blas"):
        with parallel.one_blas_thread(np):
            assert blas_threads() == 1                            # a product here cannot wake BLAS's threads
            parallel.for_slices(work, 6, np)
            with parallel.one_blas_thread(np):                    # nested: nothing more to hold
                assert blas_threads() == 1
        assert blas_threads() == 2
    assert inside == [1] * 6 and all(name.startswith("minipegx") for name in names)


def test_one_blas_thread_gives_blas_its_threads_back_after_a_failure():
    with threadpool_limits(limits=2, user_api="blas"):
        with pytest.raises(ValueError, match="inside"):
            with parallel.one_blas_thread(np):
                raise ValueError("inside")
        assert blas_threads() == 2
        seen = []
        parallel.for_slices(lambda s: seen.append(blas_threads()), 3, np)    # the seam works as before
        assert seen == [1, 1, 1] and blas_threads() == 2


def test_the_encoder_runs_every_layer_with_blas_at_one_thread(tmp_path, monkeypatch):
    """No product of the encoder's layers runs on BLAS's own threads, whose spinning after a product would take a
    core from the pool (parallel.py); the projections and the FFN are cut into pieces for the pool instead."""
    _, model = pair(tmp_path)
    seen, layer = [], enc.encoder_layer

    def recording_layer(*args, **kwargs):
        seen.append(blas_threads())
        return layer(*args, **kwargs)

    monkeypatch.setattr(enc, "encoder_layer", recording_layer)
    ids, mask = random_batch(np.random.default_rng(0), model.config.vocab_size, 2, 13, pad_rows=[1])
    with threadpool_limits(limits=2, user_api="blas"):
        model.encode(ids, mask)
        assert blas_threads() == 2
    assert seen == [1] * model.config.encoder_layers


def one_slice(work, count, xp, step=1):
    counts = count if isinstance(count, tuple) else (count,)
    work(*(slice(0, c) for c in counts))                    # what for_slices does on CuPy


def plain_loop(work, count, xp, step=1):
    counts = count if isinstance(count, tuple) else (count,)
    for cell in itertools.product(*(range(0, c, step) for c in counts)):
        work(*(slice(i, min(i + step, c)) for i, c in zip(cell, counts)))


@pytest.mark.parametrize("cut", ["pool", "plain loop", "one slice"])
def test_the_encoder_matches_the_reference_however_the_seam_cuts_its_work(tmp_path, monkeypatch, cut):
    """13 tokens, blocks of 4, stagger on, a padded row: 4-5 blocks per layer, 2 heads, FFN pieces of 4 rows."""
    ref, model = pair(tmp_path)
    monkeypatch.setattr(enc, "FFN_ROWS", 4)
    if cut != "pool":   # the encoder's own pieces and its rows through parallel.by_rows
        cutter = one_slice if cut == "one slice" else plain_loop
        monkeypatch.setattr(enc, "for_slices", cutter)
        monkeypatch.setattr(parallel, "for_slices", cutter)
    ids, mask = random_batch(np.random.default_rng(0), ref.config.vocab_size, 2, 13, pad_rows=[1])
    with threadpool_limits(limits=2, user_api="blas"), torch.no_grad():
        want = ref.get_encoder()(input_ids=t(ids), attention_mask=t(mask), output_attentions=True)
        got = model.encode(ids, mask, output_attentions=True)
    assert max_err(got.last_hidden_state, want.last_hidden_state) <= TINY_FP32.atol
    for mine, theirs in zip(got.attentions, want.attentions):
        assert max_err(mine["local"], theirs["local"]) <= TINY_FP32.atol
        assert max_err(mine["global"], theirs["global"]) <= TINY_FP32.atol


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork is POSIX-only")
def test_a_forked_child_gets_a_pool_of_its_own():
    """A child forked after the pool started has none of its threads: it must start its own, not hang."""
    import os

    with threadpool_limits(limits=2, user_api="blas"):
        parallel.for_slices(lambda s: None, 4, np)              # the parent's pool exists
        pid = os.fork()
        if pid == 0:                                            # child: exit 0 only if the pieces ran
            import signal

            signal.alarm(20)                                    # a hung pool kills the child, not the test run
            seen = []
            parallel.for_slices(lambda s: seen.append(s.start), 4, np)
            os._exit(0 if sorted(seen) == [0, 1, 2, 3] else 1)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0   # not killed by the alarm
