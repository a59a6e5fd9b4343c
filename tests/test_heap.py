"""minipegx.heap.reuse_freed_memory: inside a pass, an array freed by one layer gives its pages to the next
(no page faults); the process-wide malloc settings are made by the first user to enter and restored, with
the kept memory handed back, by the last to leave; nothing is touched on CuPy or off glibc."""

from __future__ import annotations

import resource
import threading

import numpy as np
import pytest

from minipegx import heap

on_glibc = pytest.mark.skipif(heap._glibc() is None, reason="malloc settings exist on glibc (Linux) only")


class RecordingLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


def faults_per_round(rounds=4):
    """Page faults of each round of a layer-like pattern: five 16 MB arrays alive together (80 MB), written, freed."""
    faults = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        arrays = [np.ones(4 * 2**20, np.float32) for _ in range(5)]   # 16 MB each: from the heap inside a pass
        del arrays
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return faults


@on_glibc
def test_arrays_freed_inside_a_pass_give_their_pages_to_the_next_ones():
    """Outside a pass (after one has set the thresholds it leaves behind) the 80 MB freed at the top of the heap
    pass the trim threshold and go back to the kernel, so every round faults them in again; inside, the first
    round faults them in and the later ones reuse them. The bounds: 80 MB are at least 40 faults however large
    the kernel's pages (2 MB transparent huge pages; 4 KB pages with fault-around: ~2,000 seen), and inside
    under 16, room for the interpreter's own small allocations between the readings (0 seen)."""
    with heap.reuse_freed_memory(np):
        pass
    outside = faults_per_round()
    with heap.reuse_freed_memory(np):
        inside = faults_per_round()
    assert min(outside[1:]) >= 40, outside
    assert max(inside[1:]) < 16, inside


def test_the_first_user_sets_the_thresholds_and_the_last_restores_them(monkeypatch):
    libc = RecordingLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    with heap.reuse_freed_memory(np):
        assert libc.calls == [("mallopt", heap.M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD),
                              ("mallopt", heap.M_TRIM_THRESHOLD, heap.KEEP)]
        with heap.reuse_freed_memory(np):                  # nested (or another thread's pass): no new settings
            pass
        assert len(libc.calls) == 2
    assert libc.calls[2:] == [("mallopt", heap.M_MMAP_THRESHOLD, heap.GLIBC_MMAP_MAX),
                              ("mallopt", heap.M_TRIM_THRESHOLD, heap.RELEASE), ("malloc_trim", 0)]


def test_an_older_glibc_that_refuses_a_large_mmap_threshold_gets_its_largest(monkeypatch):
    class OlderLibc(RecordingLibc):
        def mallopt(self, param, value):
            super().mallopt(param, value)
            return int(not (param == heap.M_MMAP_THRESHOLD and value > 32 * 2**20))

    libc = OlderLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    with heap.reuse_freed_memory(np):
        assert libc.calls == [("mallopt", heap.M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD),
                              ("mallopt", heap.M_MMAP_THRESHOLD, heap.GLIBC_MMAP_MAX),
                              ("mallopt", heap.M_TRIM_THRESHOLD, heap.KEEP)]


def test_concurrent_passes_restore_the_settings_once_after_the_last_leaves(monkeypatch):
    libc = RecordingLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    inside, leave = threading.Barrier(3), threading.Event()

    def a_pass():
        with heap.reuse_freed_memory(np):
            inside.wait()
            leave.wait()

    threads = [threading.Thread(target=a_pass) for _ in range(2)]
    for thread in threads:
        thread.start()
    inside.wait()                                            # both passes are inside
    assert [c[0] for c in libc.calls] == ["mallopt", "mallopt"]
    leave.set()
    for thread in threads:
        thread.join()
    assert [c[0] for c in libc.calls] == ["mallopt", "mallopt", "mallopt", "mallopt", "malloc_trim"]


def test_an_exception_inside_still_restores_the_settings(monkeypatch):
    libc = RecordingLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    with pytest.raises(KeyError), heap.reuse_freed_memory(np):
        raise KeyError("a layer failed")
    assert libc.calls[-1] == ("malloc_trim", 0) and heap._users == 0


def test_nothing_is_set_for_a_device_module_or_off_glibc(monkeypatch):
    libc = RecordingLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    with heap.reuse_freed_memory(object()):                  # not NumPy: a device module
        pass
    monkeypatch.setattr(heap, "_glibc", lambda: None)        # another C library
    with heap.reuse_freed_memory(np):
        pass
    assert libc.calls == []
