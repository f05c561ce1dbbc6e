"""Native heap hygiene for the worker's two long-running processes (the agents and the sink child).

glibc's malloc keeps what a process freed for reuse: one arena per thread that allocates (up to
8 per core), and free pages in the middle of an arena stay resident until ``malloc_trim`` hands
them back. A stream processor frees a batch's worth of memory after every batch (decoded records,
Arrow staging tables, DuckDB intermediates), so without a bound the RSS climbs to the sum of the
largest batches every thread ever held. Two knobs, both no-ops off glibc:

* :func:`limit_arenas` caps the number of arenas (``M_ARENA_MAX``) before the process starts
  its threads;
* :class:`Trimmer` calls ``malloc_trim(0)`` every few seconds from a daemon thread, which returns
  the free pages of every arena to the system (the allocations themselves are untouched), and at
  once when poked (:meth:`Trimmer.poke`): the sink pokes it after every batch it wrote, so what a
  batch freed is handed back before the next batch allocates beside it (pokes that come while a
  trim runs fold into one).

A third helper is about the Python heap: :func:`gc_paused` holds off the cyclic garbage collector
while a batch is decoded (the sink) or decoded, folded and encoded (the sessions agent). Decoding
5,000 records allocates tens of thousands of containers (structs, tuples, lists, dicts) that all
live until the batch is done; each 700 allocations the collector walks the young ones, and every few
of those passes it walks the whole heap, to find cycles that this work does not make. Measured on
40,000-row runs of the sink writer: 11 % of a usage batch's time, 24 % of a hook batch's. Reference
counting still frees everything at once; a cycle made meanwhile (an exception's traceback) is
collected after the pause. The sink's SQL work and its pattern refreshes run unpaused: they
allocate little in Python, and the pause is kept to where the allocations are.

Nothing here changes what is computed; it changes only how long freed memory stays resident.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("outloop.heaps")

M_ARENA_MAX = -8
TRIM_EVERY_S = 5.0


def _libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  - musl has no malloc_trim: treat it as "not glibc"
        return libc
    return None


def limit_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas; call it before the process starts its threads. True if applied."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Return the free pages of every malloc arena to the system. True if some memory was released."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


class Trimmer(threading.Thread):
    """Calls :func:`trim` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, interval: float = TRIM_EVERY_S, name: str = "outloop-heap-trim") -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.trims = 0
        self._halt = threading.Event()
        self._wake = threading.Event()  # set by poke() and stop()

    def run(self) -> None:
        if _libc() is None:
            return
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._halt.is_set():
                return
            try:
                trim()
            except Exception as exc:  # never take a process down for a hygiene task
                log.debug("malloc_trim failed: %r", exc)
                return
            self.trims += 1

    def poke(self) -> None:
        """Trim now (from the trimmer's thread: the caller does not wait for it)."""
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()


_pause_lock = threading.Lock()
_pauses = 0  # gc_paused blocks open, in any thread
_resume = False  # whether the first of them found the collector enabled


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off Python's cyclic garbage collector for the block (see the module's docstring). Nested
    and concurrent blocks share one pause: the collector comes back, if it was on before the first,
    when the last one ends, whatever way it ends."""
    global _pauses, _resume
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
