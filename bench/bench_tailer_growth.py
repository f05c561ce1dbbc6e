"""A long session's transcript, growing: the transcript tailer's CPU time and memory per appended MB
when the transcript holds runner results (live savings are measured from it), and how fast a new
record becomes visible at the final size.

The transcript is built at run time from the real main-session transcripts of
``../shared/data/traces-dev`` (skips when absent), repeated with fresh ids (uuid, message id,
request id, tool-use id) as one long session; every third Bash result is turned into a runner's
result (its real output kept as the run's log under ``$OUTLOOP_HOME/runs``, the first lines printed
with the runner's footer), as when the router enforced it.

Three phases per run, on the embedded broker, with ``Tailer`` + ``Measurer`` as ``outloop up`` runs them:

1. growth: passes on a simulated clock (one every ``--poll`` s), each after ``--rate`` KB/s of lines
   were appended, until the file holds ``--mb`` MB; the tailer's CPU time (thread time of its passes)
   per appended MB, and the part of it spent measuring savings (``Measurer.due``), the longest pass,
   and the passes that measured. Reference: reading the final
   file once with plain Python (``orjson.loads`` of every line), per MB.
2. memory: a fresh tailer (a restart: its state re-derived from the file) catches up on the final
   file, measures it a first time, then follows ``--more-mb`` MB more; Python allocations
   (tracemalloc) it keeps after that, its peak during that first measurement and while following.
   Reference: the file's size.
3. visibility: the tailer's own loop (``run_forever``, real clock, poll ``--poll`` s) on the final
   file, once it measured it a first time (a restart's cost, phase 2); one record appended every
   ~0.25 s for ``--seconds`` s; delay = the first time the tailer's
   mark covered the record (its envelopes acknowledged by the broker) - the time the write returned
   (polled every 2 ms). Reference: the poll interval.

    .venv/bin/python bench/bench_tailer_growth.py [--quick] [--runs 3] [--mb 24] [--rate 128]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402
from common import TRACES, empty_transcript, header, median, pct, row, settings_for  # noqa: E402

from outloop.router.measure import Measurer  # noqa: E402
from outloop.streams.broker import EmbeddedBroker  # noqa: E402
from outloop.streams.tailer import Tailer  # noqa: E402

SOURCES = TRACES / "claude-code-transcripts"
MB = 2**20


def source_records() -> list[list[dict[str, Any]]]:
    """The records of every real main-session transcript (sub-agent files have a context of their own)."""
    out = []
    for path in sorted(SOURCES.rglob("*.jsonl")):
        if path.name.startswith("agent-"):
            continue
        recs = []
        for line in path.read_bytes().splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                recs.append(rec)
        out.append(recs)
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text") or "") for b in content if isinstance(b, dict))
    return ""


class Grower:
    """Lines of one long session: the real records again and again, with fresh ids per copy."""

    def __init__(self, sources: list[list[dict[str, Any]]], session: str, runs: Path) -> None:
        self.sources, self.session, self.runs = sources, session, runs
        self.bash = 0
        self.runner_results = 0
        runs.mkdir(parents=True, exist_ok=True)

    def _runner_result(self, block: dict[str, Any]) -> None:
        """Make one tool result the runner's: its real output becomes the run's log."""
        raw = _text(block.get("content"))
        run_id = uuid.uuid4().hex
        log = self.runs / f"{run_id}.log"
        log.write_text(raw)
        (self.runs / f"{run_id}.json").write_bytes(orjson.dumps(
            {"run_id": run_id, "rule": "pytest", "family": "pytest", "kind": "structured"}))
        lines = raw.splitlines()
        block["content"] = "\n".join(lines[:20]) + \
            f"\n[outloop] full output ({len(lines)} lines, {len(raw.encode())} bytes): {log}\n"
        self.runner_results += 1

    def _record(self, rec: dict[str, Any], tag: str) -> dict[str, Any]:
        rec = orjson.loads(orjson.dumps(rec))  # a deep copy
        rec["sessionId"] = self.session
        for key in ("uuid", "parentUuid", "requestId"):
            if isinstance(rec.get(key), str):
                rec[key] += tag
        msg = rec.get("message")
        if not isinstance(msg, dict):
            return rec
        if isinstance(msg.get("id"), str):
            msg["id"] += tag
        for block in msg.get("content") if isinstance(msg.get("content"), list) else ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                block["id"] += tag
            elif block.get("type") == "tool_result" and isinstance(block.get("tool_use_id"), str):
                if str(block["tool_use_id"]) in self._bash_ids:
                    self.bash += 1
                    if self.bash % 3 == 0:
                        self._runner_result(block)
                block["tool_use_id"] += tag
        return rec

    def lines(self) -> Iterator[bytes]:
        copy = 0
        while True:
            for recs in self.sources:
                copy += 1
                tag = f"-c{copy}"
                self._bash_ids = {str(b.get("id")) for r in recs if r.get("type") == "assistant"
                                  for b in (r.get("message") or {}).get("content") or ()
                                  if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == "Bash"}
                for rec in recs:
                    yield orjson.dumps(self._record(rec, tag)) + b"\n"


def append(path: Path, lines: Iterator[bytes], nbytes: int) -> int:
    """Append whole lines, at least ``nbytes`` bytes; returns how many were written."""
    out, size = [], 0
    while size < nbytes:
        line = next(lines)
        out.append(line)
        size += len(line)
    with path.open("ab") as f:
        f.write(b"".join(out))
    return size


def plain_read(path: Path) -> float:
    """Seconds to read and parse the file once with plain Python."""
    t0 = time.perf_counter()
    with path.open("rb") as f:
        for line in f:
            orjson.loads(line)
    return time.perf_counter() - t0


def setup(tmp: Path, bootstrap: str, poll: float) -> tuple[Any, Path, Grower]:
    projects, session, transcript = empty_transcript(tmp)
    s = settings_for(tmp, bootstrap, projects=projects, tail_poll=poll)
    return s, transcript, Grower(source_records(), session, s.home / "runs")  # where the runner keeps them


def growth(s: Any, transcript: Path, lines: Iterator[bytes], mb: float, rate_kb: float,
           poll: float) -> dict[str, float]:
    """Phase 1: append and pass on a simulated clock until the file holds ``mb`` MB."""
    measurer = Measurer(runs=str(s.home / "runs"))
    tailer = Tailer(s, measurer=measurer)
    now, cpu, passes, measured, longest = 0.0, 0.0, 0, 0, 0.0
    in_due = [0.0]
    due = measurer.due

    def timed_due(at: float) -> list[Any]:
        t0 = time.thread_time()
        try:
            return due(at)
        finally:
            in_due[0] += time.thread_time() - t0

    measurer.due = timed_due  # type: ignore[method-assign]
    try:
        while transcript.stat().st_size < mb * MB:
            now += poll
            append(transcript, lines, int(rate_kb * 1024 * poll))
            t0, w0 = time.thread_time(), time.perf_counter()
            tailer.run_once(now=now)
            while tailer.more:
                tailer.run_once(now=now)
            cpu += time.thread_time() - t0
            longest = max(longest, time.perf_counter() - w0)
            passes += 1
            measured += bool(tailer.measurer._last)  # type: ignore[union-attr]
    finally:
        tailer.close()
    size = transcript.stat().st_size / MB
    return {"cpu_per_mb": cpu / size, "due_per_mb": in_due[0] / size, "longest": longest, "passes": passes,
            "measured": measured, "plain_per_mb": plain_read(transcript) / size, "size": size}


def memory(s: Any, transcript: Path, lines: Iterator[bytes], more_mb: float, rate_kb: float,
           poll: float) -> dict[str, float]:
    """Phase 2: a restarted tailer catches up, then follows ``more_mb`` MB; tracemalloc figures."""
    gc.collect()
    tracemalloc.start()
    tailer = Tailer(s, measurer=Measurer(runs=str(s.home / "runs")))
    tailer.checkpoint.path.unlink(missing_ok=True)
    tailer.marks = {}
    now = 10_000.0
    try:
        tailer.run_once(now=now)
        while tailer.more:
            tailer.run_once(now=now)
        tracemalloc.reset_peak()
        measurer = tailer.measurer
        assert measurer is not None
        while not measurer._last:  # the first measurement after the restart reads the whole file
            now += poll
            append(transcript, lines, int(rate_kb * 1024 * poll))
            tailer.run_once(now=now)
        first = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        grown = 0
        while grown < more_mb * MB:
            now += poll
            grown += append(transcript, lines, int(rate_kb * 1024 * poll))
            tailer.run_once(now=now)
        peak = tracemalloc.get_traced_memory()[1]
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tailer.close()
        tracemalloc.stop()
    return {"kept": kept / MB, "first": first / MB, "peak": peak / MB, "size": transcript.stat().st_size / MB}


def visibility(s: Any, transcript: Path, lines: Iterator[bytes], seconds: float) -> list[float]:
    """Phase 3: the tailer's own loop on the real clock; append -> mark covers it, per record."""
    tailer = Tailer(s, measurer=Measurer(runs=str(s.home / "runs")))
    stop = threading.Event()
    thread = threading.Thread(target=tailer.run_forever, args=(stop,), daemon=True)
    thread.start()
    key = str(transcript)
    delays: list[float] = []
    try:
        deadline = time.monotonic() + 120
        while tailer.marks.get(key) is None or tailer.marks[key].offset < transcript.stat().st_size:
            if time.monotonic() > deadline:
                raise TimeoutError("the tailer did not catch up")
            time.sleep(0.05)
        measurer = tailer.measurer
        assert measurer is not None
        while measurer.files.get(key, (0.0, float("-inf")))[1] == float("-inf"):  # the restart's first measurement
            if time.monotonic() > deadline:
                raise TimeoutError("the tailer did not measure the transcript")
            append(transcript, lines, 1)
            time.sleep(0.25)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            append(transcript, lines, 1)
            size, written = transcript.stat().st_size, time.monotonic()
            while (mark := tailer.marks.get(key)) is None or mark.offset < size:
                if time.monotonic() - written > 60:
                    raise TimeoutError("a record was not published within 60 s")
                time.sleep(0.002)
            delays.append(time.monotonic() - written)
            time.sleep(0.25)
    finally:
        stop.set()
        thread.join(30)
    return delays


def one_run(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        s, transcript, grower = setup(tmp, bootstrap, args.poll)
        lines = grower.lines()
        g = growth(s, transcript, lines, args.mb, args.rate, args.poll)
        m = memory(s, transcript, lines, args.more_mb, args.rate, args.poll)
        v = visibility(s, transcript, lines, args.seconds)
        return {**g, **{f"mem_{k}": x for k, x in m.items()}, "delays": v, "runner_results": grower.runner_results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="6 MB, one run, 12 s of visibility")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mb", type=float, default=24.0, help="size the transcript grows to")
    ap.add_argument("--rate", type=float, default=128.0, help="KB appended per simulated second")
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between two passes")
    ap.add_argument("--more-mb", type=float, default=2.0, help="MB followed after a restart (memory)")
    ap.add_argument("--seconds", type=float, default=25.0, help="seconds of appends (visibility)")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.mb, args.seconds, args.more_mb = 1, 6.0, 12.0, 1.0
    if not SOURCES.is_dir():
        print(f"skipped: {SOURCES} is absent")
        return
    header("transcript tailer on a growing transcript with runner results",
           f"{args.mb:g} MB at {args.rate:g} KB/s (simulated clock, a pass every {args.poll:g} s), "
           f"{args.runs} run(s)")
    with tempfile.TemporaryDirectory() as logdir, EmbeddedBroker(Path(logdir) / "tansu.log") as broker:
        results = [one_run(broker.bootstrap, args) for _ in range(args.runs)]
    r0 = results[0]
    print(f"  transcript: {r0['size']:.1f} MB, {r0['runner_results']} runner results, {r0['passes']} passes, "
          f"{r0['measured']} of them measured savings")
    row("tailer CPU s per appended MB", [r["cpu_per_mb"] for r in results],
        "plain read+parse once, s per MB", [r["plain_per_mb"] for r in results], "s", higher_is_better=False)
    row("  of which measuring savings (Measurer.due)", [r["due_per_mb"] for r in results],
        "plain read+parse once, s per MB", [r["plain_per_mb"] for r in results], "s", higher_is_better=False)
    row("longest pass (growth), s", [r["longest"] for r in results],
        "plain read+parse of the whole file, s", [r["plain_per_mb"] * r["size"] for r in results], "s",
        higher_is_better=False)
    row("memory kept after restart + follow, MB", [r["mem_kept"] for r in results],
        "file size, MB", [r["mem_size"] for r in results], "MB", higher_is_better=False)
    row("peak Python allocations, restart's 1st measure", [r["mem_first"] for r in results],
        "file size, MB", [r["mem_size"] for r in results], "MB", higher_is_better=False)
    row("peak Python allocations while following, MB", [r["mem_peak"] for r in results],
        "file size, MB", [r["mem_size"] for r in results], "MB", higher_is_better=False)
    delays = [d for r in results for d in r["delays"]]
    print(f"  visibility at {r0['size']:.0f}+ MB (append -> acknowledged), {len(delays)} records: "
          f"median {median(delays):.3f} s, p90 {pct(delays, 0.9):.3f} s, max {max(delays):.3f} s "
          f"| poll {args.poll:g} s")


if __name__ == "__main__":
    main()
