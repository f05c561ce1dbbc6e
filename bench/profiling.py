"""Sampling profiles of a running worker (py-spy, when installed) grouped into the pipeline's stages.

py-spy is not a project dependency: ``--profile`` looks for it on PATH, beside the interpreter, or in
``$PYSPY``; install it anywhere (``pip install py-spy`` in a scratch virtualenv) to get the breakdown.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (stage, "func (path part" or a path part); the first stage of the list that any frame matches wins
STAGES: list[tuple[str, str]] = [
    ("sink: patterns.refresh (aggregates, sequences)", "refresh (projections/patterns.py"),
    ("sink: patterns.materialize (occurrences, signatures)", "materialize (projections/patterns.py"),
    ("sink: upsert SQL (Arrow staging + INSERT ON CONFLICT)", "apply (sinks/upsert.py"),
    ("sink: fold (pydantic validation, merge)", "fold (sinks/decode.py"),
    ("sink: other (transaction, fetch)", "sinks/"),
    ("agents: decode (orjson + msgspec, pydantic fallback)", "decode (streams/codec.py"),
    ("agents: secret scan of carried records", "scan (agents/redact.py"),
    ("agents: pairing fold", "apply (agents/pairing.py"),
    ("agents: emit: JSON encode", "tool_call_json (agents/pairing.py"),
    ("agents: emit: JSON encode", "tool_call_model (agents/pairing.py"),
    ("agents: emit: JSON encode", "encode (streams/codec.py"),
    ("agents: emit: faust send (per output record)", "send (agents/sessions.py"),
    ("agents: emit: await sends", "drain (agents/sessions.py"),
    ("agents: other", "agents/sessions.py"),
    ("idle: event loop waiting in epoll", "EpollSelector.select"),
    ("faust/aiokafka: produce (batching, sender)", "aiokafka/producer/"),
    ("faust/aiokafka: produce (batching, sender)", "send (faust/transport/drivers/aiokafka.py"),
    ("faust/aiokafka: produce (batching, sender)", "publish_message (faust/topics.py"),
    ("faust/aiokafka: consume (fetch, decode records)", "aiokafka/consumer/"),
    ("faust/aiokafka: consume (fetch, decode records)", "faust/transport/consumer.py"),
    ("faust/aiokafka: socket writes (produce + fetch requests)", "send (aiokafka/client.py"),
    ("faust: streams, sensors, commit", "faust/"),
    ("asyncio loop, aiokafka/mode: other", "aiokafka/"),
    ("asyncio loop, aiokafka/mode: other", "mode/"),
    ("http (health/query)", "aiohttp/"),
]


def pyspy() -> str | None:
    for cand in (os.environ.get("PYSPY"), shutil.which("py-spy"), str(Path(sys.executable).with_name("py-spy"))):
        if cand and Path(cand).is_file():
            return cand
    return None


class Profiler:
    def __init__(self, pid: int, out: Path, rate: int = 67) -> None:
        self.out = out
        exe = pyspy()
        self.proc: subprocess.Popen[bytes] | None = None
        if exe is None:
            print("  (py-spy not found: no profile; set PYSPY=/path/to/py-spy)")
            return
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                                      "--output", str(out), "--nonblocking", "--threads"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> Counter[str] | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.out.exists():
            return None
        return summarize(self.out.read_text())


def _match(needle: str, frame: str) -> bool:
    """``needle`` is "func (path" or a path part; py-spy frames read "func (/abs/path.py:line)"."""
    func, sep, path = needle.partition(" (")
    if not sep:
        return needle in frame
    name, _, where = frame.partition(" (")
    return (name == func or name.endswith("." + func)) and path in where


def stage_of(stack: str) -> str:
    """The first stage of STAGES (in order) that any frame of the stack belongs to."""
    frames = stack.split(";")
    for stage, needle in STAGES:
        if any(_match(needle, f) for f in frames):
            return stage
    return "other (interpreter, threads, GC)"


def summarize(raw: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[stage_of(stack)] += int(n)
    return counts


def print_profile(counts: Counter[str] | None, title: str) -> None:
    if not counts:
        return
    total = sum(counts.values())
    print(f"  {title}: {total} samples of busy threads")
    groups: Counter[str] = Counter()
    for stage, n in counts.items():
        head = stage.split(":")[0].split(" (")[0]
        groups["faust/aiokafka/asyncio" if head.startswith(("faust", "asyncio", "aiokafka")) else head] += n
    print("    by part: " + ", ".join(f"{g} {100 * n / total:.1f}%" for g, n in groups.most_common()))
    for stage, n in counts.most_common():
        print(f"    {100 * n / total:5.1f}%  {stage}")
