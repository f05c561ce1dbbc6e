"""The sessions agent's context-efficiency windows (agents.contextwindow) on synthetic sessions: memory
held by the fold (tracemalloc) after every 1,000 sessions, beside the memory of one batch of events held
at once (the reference, same run). The figure to read: the fold's memory stays flat however many
sessions closed. Sessions run 40 at a time; half end with SessionEnd, half go quiet and close by
inactivity (event time). ``--quick``: 2,000 sessions. ``--sessions N`` to choose."""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from outloop.agents.contextwindow import ContextWindows, feed  # noqa: E402
from tests.unit.contextwindowdata import synthetic_sessions  # noqa: E402


def run(sessions: int, step: int, windows: ContextWindows) -> list[tuple[int, int, int, int]]:
    """(sessions fed, open windows, windows closed, traced bytes of the fold) after every ``step``."""
    closed = 0
    out = []
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for n, batch in enumerate(synthetic_sessions(sessions), start=1):
        closed += len(feed(windows, batch))
        if n % step == 0:
            out.append((n, len(windows.open), closed, tracemalloc.get_traced_memory()[0] - base))
    tracemalloc.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sessions", type=int, default=10_000)
    args = parser.parse_args()
    sessions = 2_000 if args.quick else args.sessions
    events = sum(len(b) for b in synthetic_sessions(sessions))
    t = time.perf_counter()
    step = 1_000 if sessions >= 1_000 else sessions
    rows = run(sessions, step, ContextWindows())
    took = time.perf_counter() - t
    # reference, same run: windows that only SessionEnd closes (no inactivity close) - what keeping the
    # state of quiet sessions costs
    kept = run(sessions, step, ContextWindows(timeout=timedelta(days=3650)))
    print(f"{sessions:,} sessions, {events:,} events in {took:.1f} s under tracemalloc")
    print(f"{'sessions':>9} {'open':>5} {'closed':>7} {'fold KiB':>9} | {'open':>5} {'KiB, no inactivity close':>24}")
    for (n, open_, closed, held), (_, open2, _, held2) in zip(rows, kept, strict=True):
        print(f"{n:>9,} {open_:>5} {closed:>7,} {held / 1024:>9.1f} | {open2:>5} {held2 / 1024:>24.1f}")
    print(f"growth from the first to the last row: {rows[-1][3] / rows[0][3]:.2f}x "
          f"(reference {kept[-1][3] / kept[0][3]:.2f}x)")


if __name__ == "__main__":
    main()
