"""Transcript freshness: time from a line appended to a transcript to its usage row in DuckDB, beside
the hook path's freshness measured in the same run.

A running stack (``outloop.runtime.Stack`` with the forwarder and the transcript tailer, on the
embedded broker, as ``outloop up`` runs them) follows a temp projects folder. Each round appends one
assistant record with usage to a transcript there (a real assistant line of traces-dev, or of the
project's generated sample when ``../shared`` is absent, given a fresh message id, request id and
uuid) and, alternating, writes one hook payload to the spool as the hook shim does. A poller asks the
worker's HTTP query endpoint every 20 ms for the usage row, resp. the hook event row. Delay = time of
the first answer that showed the row - time the write returned (an upper bound, within one poll; the
tailer looks every ``OUTLOOP_TAIL_POLL`` s, 0.5 by default, so about half of that is its wait).

    .venv/bin/python bench/bench_tailer.py [--quick] [--rounds 20] [--poll 0.5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402
from common import empty_transcript, header, median, pct, settings_for  # noqa: E402

from outloop.runtime import Stack  # noqa: E402
from outloop.sample import write_sample  # noqa: E402
from outloop.streams.spool import Spool  # noqa: E402

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces-dev" / "claude-code-transcripts"


def assistant_line(tmp: Path) -> dict:
    """An assistant record with usage from a real transcript (the generated sample when absent)."""
    folder = TRACES if TRACES.is_dir() else tmp / "sample"
    if folder is not TRACES:
        write_sample(folder)
    for path in sorted(folder.rglob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if rec.get("type") == "assistant" and isinstance(rec.get("message", {}).get("usage"), dict) \
                    and rec["message"].get("model") != "<synthetic>":
                return rec
    raise SystemExit(f"no assistant record with usage under {folder}")


def wait_row(client, sql: str, key: str, timeout: float = 30.0) -> float:
    """Seconds (monotonic clock) at which ``sql`` first returned a row for ``key``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.query(sql, [key])[1]:
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"{key} not stored within {timeout:.0f}s")


def run(rounds: int, poll: float) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        template = assistant_line(tmp)
        projects, session, transcript = empty_transcript(tmp)
        s = settings_for(tmp, None, projects=projects, tail_poll=poll)
        tail_delays: list[float] = []
        hook_delays: list[float] = []
        with Stack(s, forwarder=True, tailer=True) as stack:
            client = stack.client
            spool = Spool(stack.settings.spool)
            time.sleep(2.0)  # the tailer's first walk of the folder, the forwarder's first pass
            for i in range(rounds):
                msg = f"msg_bench_{uuid.uuid4().hex[:16]}"
                rec = {**template, "uuid": str(uuid.uuid4()), "sessionId": session, "requestId": f"req_{i}",
                       "message": {**template["message"], "id": msg}}
                with transcript.open("ab") as fh:
                    fh.write(orjson.dumps(rec) + b"\n")
                t0 = time.monotonic()
                seen = wait_row(client, "SELECT 1 FROM usage WHERE id = ?", f"{msg}:req_{i}")
                tail_delays.append(seen - t0)
                payload = {"session_id": session, "hook_event_name": "UserPromptSubmit", "prompt": f"round {i}",
                           "transcript_path": str(transcript), "cwd": "/bench"}
                rid = spool.write(orjson.dumps(payload))
                t0 = time.monotonic()
                seen = wait_row(client, "SELECT 1 FROM hook_events WHERE id = ?", rid)
                hook_delays.append(seen - t0)
        header("transcript line -> usage row in DuckDB (tailer) vs hook payload -> hook_events row (forwarder)",
               f"{rounds} rounds, tailer poll {poll} s, forwarder idle poll 0.5 s; delays are measurements, "
               "upper bounds within one 20 ms query poll")
        for name, xs in (("tailer (usage row)", tail_delays), ("hook path (hook_events row)", hook_delays)):
            print(f"   {name:30s} median {median(xs):.3f} s   p90 {pct(xs, 0.9):.3f} s   max {max(xs):.3f} s")
        print(f"   ratio of medians tailer / hook: {median(tail_delays) / median(hook_delays):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 rounds")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--poll", type=float, default=0.5, help="OUTLOOP_TAIL_POLL for the run")
    args = ap.parse_args()
    run(5 if args.quick else args.rounds, args.poll)


if __name__ == "__main__":
    main()
