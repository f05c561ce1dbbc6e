"""Helpers shared by the benchmarks: synthetic events, broker/worker lifecycle, timing and printing.

Every benchmark prints each figure beside a reference measured in the same run (a ratio) and the
median over several runs: the machine is small (2 cores) and shared, so absolute times drift.
"""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from outloop.streams.settings import Settings  # noqa: E402

TRACES = (REPO.parent / "shared" / "data" / "traces-dev").resolve()
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
_SYL = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "qu", "sa", "do", "fu", "ge", "hi", "ja"]
WORDS = ["".join(p) for p in itertools.product(_SYL, repeat=3)]  # 4096 digit-free words


# -- statistics and printing ----------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def header(title: str, note: str = "") -> None:
    print(f"== {title}")
    print("   (2-core machine shared with other engineers' test runs: absolute figures are noisy; "
          "read the ratios)")
    if note:
        print(f"   {note}")


def row(name: str, runs: Sequence[float], ref_name: str, refs: Sequence[float], unit: str,
        higher_is_better: bool = True, target: str = "") -> float:
    """Print the median of ``runs`` beside the median of ``refs`` and the median of per-run ratios."""
    ratios = [a / b for a, b in zip(runs, refs, strict=False) if b]
    ratio = median(ratios)
    runs_txt = ", ".join(f"{x:,.4g}" for x in runs)
    better = "" if higher_is_better else " (lower is better)"
    print(f"  {name:44} {median(runs):>12,.4g} {unit:8} | {ref_name} {median(refs):,.4g} {unit}"
          f" | ratio {ratio:.3f}x{better}{'  target ' + target if target else ''}")
    print(f"  {'':44} runs: {runs_txt}")
    return ratio


# -- synthetic events -----------------------------------------------------------------------------
def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def commands(n: int) -> list[str]:
    """``n`` Bash commands with ``n`` distinct signatures (up to 8192)."""
    out = [f"pytest -q tests/{w}" for w in WORDS] + [f"make {w}" for w in WORDS]
    if n > len(out):
        raise ValueError(f"at most {len(out)} distinct commands")
    return out[:n]


STDOUT = ("." * 64 + "\n") * 8 + "120 passed in 1.20s\n"  # ~540 bytes: events of ~1 KB


def envelope(id: str, type: str, subject: str, t: datetime, data: dict[str, Any], source: str = "hook") -> bytes:
    return orjson.dumps({"specversion": "1", "id": id, "type": type, "source": source, "time": iso(t),
                         "subject": subject, "data": data})


def hook_pair(session: str, tool_use_id: str, command: str, t: datetime, tag: str = "") -> tuple[bytes, bytes]:
    base = {"session_id": session, "transcript_path": f"/home/u/.claude/projects/demo/{session}.jsonl",
            "cwd": "/home/u/demo", "tool_name": "Bash", "tool_use_id": tool_use_id,
            "tool_input": {"command": command, "description": "run it"}}
    pre = envelope(f"{tag}pre-{tool_use_id}", "hook.event", session, t, {**base, "hook_event_name": "PreToolUse"})
    post = envelope(f"{tag}post-{tool_use_id}", "hook.event", session, t + timedelta(milliseconds=850),
                    {**base, "hook_event_name": "PostToolUse",
                     "tool_response": {"stdout": STDOUT, "stderr": "", "interrupted": False, "isImage": False}})
    return pre, post


def usage_event(session: str, msg_id: str, t: datetime) -> bytes:
    data = {"id": f"{msg_id}:req_{msg_id}", "session_id": session, "model": "claude-sonnet-4-5-20250929",
            "timestamp": iso(t), "input_tokens": 12, "output_tokens": 340, "cache_read_input_tokens": 48_000,
            "cache_creation_input_tokens": 1_200, "cache_creation_5m_tokens": 1_200,
            "cache_creation_1h_tokens": 0, "cost_usd": None, "source": "transcript"}
    return envelope(data["id"], "usage.record", session, t, data, source="transcript")


def workload(n_events: int, sessions: int, signatures: int, seed: str = "") -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of ``n_events`` input envelopes: per turn a PreToolUse, a PostToolUse and one
    usage record, sessions round-robin, Bash commands cycling over ``signatures`` signatures."""
    cmds = commands(signatures)
    tag = seed or uuid.uuid4().hex[:6]
    made = 0
    for turn in itertools.count():
        session = f"sess-{tag}-{turn % sessions:05d}"
        t = T0 + timedelta(seconds=turn * 2)
        key = session.encode()
        pre, post = hook_pair(session, f"toolu_{tag}_{turn:09d}", cmds[turn % len(cmds)], t)
        for value in (pre, post, usage_event(session, f"msg_{tag}_{turn:09d}", t)):
            if made == n_events:
                return
            yield key, value
            made += 1


# -- broker, topics, worker -----------------------------------------------------------------------
def settings_for(tmp: Path, broker: str | None, **overrides: Any) -> Settings:
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = dict(home=tmp / "home", broker=broker, db=tmp / "out.duckdb",
                                  topic_prefix=f"b{tag}", app_id=f"bench-{tag}", http_port=0)
    values.update(overrides)
    return Settings.from_env({}, **values)


def empty_transcript(tmp: Path) -> tuple[Path, str, Path]:
    """(projects folder, session id, its empty transcript file) under ``tmp``, laid out as Claude Code does."""
    projects = tmp / "projects"
    session = str(uuid.uuid4())
    transcript = projects / "-bench" / f"{session}.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_bytes(b"")
    return projects, session, transcript


def publish(bootstrap: str, topic: str, records: Iterator[tuple[bytes, bytes]] | list[tuple[bytes, bytes]],
            partitions: int = 4) -> tuple[int, float]:
    """Publish with the project's kafka-python Publisher; returns (count, seconds)."""
    from outloop.streams.publisher import Publisher

    t0 = time.perf_counter()
    n = 0
    with Publisher(bootstrap, partitions=partitions, linger_ms=20, batch_size=512 * 1024) as pub:
        for key, value in records:
            pub.raw(topic, key, value)
            n += 1
        pub.flush(120)
    return n, time.perf_counter() - t0


def ensure_topics(bootstrap: str, settings: Settings) -> None:
    from outloop.streams.publisher import Publisher

    with Publisher(bootstrap, partitions=settings.partitions, prefix=settings.topic_prefix) as pub:
        pub.ensure_topics()


def markers(bootstrap: str, settings: Settings) -> tuple[str, int]:
    from outloop.replay import publish_markers
    from outloop.schemas.topics import TopicCatalogue
    from outloop.streams.publisher import Publisher

    marker = uuid.uuid4().hex
    with Publisher(bootstrap, partitions=settings.partitions) as pub:
        expected = publish_markers(pub, TopicCatalogue(prefix=settings.topic_prefix), marker, settings.partitions)
    return marker, expected


def wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.05, what: str = "condition") -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(step)
    return time.monotonic()


# -- memory --------------------------------------------------------------------------------------
class RssSampler(threading.Thread):
    """Samples the RSS (MB) of some processes (and their children) every ``interval`` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5, alone: tuple[str, ...] = ()) -> None:
        super().__init__(daemon=True)
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.alone = set(alone)  # names sampled without their children
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._halt = threading.Event()

    def rss(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            try:
                total = p.memory_info().rss
                if name not in self.alone:
                    total += sum(c.memory_info().rss for c in p.children(recursive=True))
            except Exception:  # the process ended
                total = 0
            out[name] = total / 2**20
        return out

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic(), self.rss()))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def peak(self, name: str) -> float:
        return max((s[name] for _, s in self.samples), default=0.0)


def python_env() -> dict[str, str]:
    """The environment of child processes: no OUTLOOP_* leaking in from the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}


def terminate(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, and SIGKILL if it is still running after ``timeout`` s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
