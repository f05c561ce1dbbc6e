"""outloop.streams.heaps: trimming hands freed heap pages back to the system; nothing else changes."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest

from outloop.streams import heaps

linux_glibc = pytest.mark.skipif(heaps._libc() is None, reason="glibc only")

# In a fresh interpreter: 200 MB in 100 KB blocks (below glibc's mmap threshold: they come from the
# heap), all freed but the last one, which pins the top of the heap so that free() alone cannot
# shrink it. The freed pages stay resident until malloc_trim.
FRAGMENT = textwrap.dedent("""
    import gc, sys
    from outloop.streams import heaps

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    if sys.argv[1] == "limit":
        heaps.limit_arenas(2)
    blocks = [bytearray(100_000) for _ in range(2_000)]
    for b in blocks:
        b[::4096] = b"x" * len(b[::4096])  # touch every page
    pin = blocks[-1]
    del blocks
    gc.collect()
    before = rss_mb()
    released = heaps.trim()
    after = rss_mb()
    print(before, after, released, len(pin))
""")


def _fragment(mode: str = "plain") -> tuple[float, float, bool]:
    out = subprocess.run([sys.executable, "-c", FRAGMENT, mode], check=True, capture_output=True, text=True).stdout
    before, after, released, _ = out.split()
    return float(before), float(after), released == "True"


@linux_glibc
def test_trim_returns_the_freed_pages_a_live_block_pins() -> None:
    before, after, released = _fragment()
    assert released
    assert before - after > 150, (before, after)  # of the 200 MB freed


@linux_glibc
def test_limiting_the_arenas_keeps_trim_working() -> None:
    before, after, released = _fragment("limit")
    assert released and before - after > 150, (before, after)


@linux_glibc
def test_the_trimmer_trims_until_stopped() -> None:
    trimmer = heaps.Trimmer(interval=0.01)
    trimmer.start()
    try:
        deadline = 200
        while trimmer.trims < 3 and deadline:
            trimmer._halt.wait(0.01)
            deadline -= 1
        assert trimmer.trims >= 3
    finally:
        trimmer.stop()
        trimmer.join(2)
    assert not trimmer.is_alive()
    done = trimmer.trims
    trimmer._halt.wait(0.05)
    assert trimmer.trims == done


@linux_glibc
def test_a_poke_trims_at_once_and_stop_does_not_wait_for_the_interval() -> None:
    trimmer = heaps.Trimmer(interval=3600)
    trimmer.start()
    try:
        trimmer.poke()
        deadline = 200
        while trimmer.trims < 1 and deadline:
            trimmer._halt.wait(0.01)
            deadline -= 1
        assert trimmer.trims == 1
    finally:
        trimmer.stop()
        trimmer.join(2)
    assert not trimmer.is_alive()
    assert trimmer.trims == 1  # stopping is not a trim


def test_gc_paused_holds_the_collector_off_and_brings_it_back_however_the_block_ends() -> None:
    assert gc.isenabled()
    with heaps.gc_paused():
        assert not gc.isenabled()
        with heaps.gc_paused():  # nested: one pause
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), heaps.gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_gc_paused_leaves_a_collector_that_was_off_off() -> None:
    gc.disable()
    try:
        with heaps.gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_concurrent_pauses_end_when_the_last_one_does() -> None:
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with heaps.gc_paused():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(10)
        with heaps.gc_paused():
            pass
        assert not gc.isenabled()  # the other thread's pause is still open
    finally:
        release.set()
        t.join(10)
    assert gc.isenabled()


def test_a_cycle_made_during_a_pause_is_collected_after_it_without_being_asked() -> None:
    class Node:
        other: Node

    with heaps.gc_paused():
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
        junk = [[] for _ in range(10_000)]  # past the collector's threshold: it would have run
        assert alive() is not None  # reference counting cannot free a cycle; the collector is off
    junk = [[] for _ in range(10_000)]  # the collector's own trigger, no gc.collect()
    del junk
    assert alive() is None
