"""Reliability scenarios of the hook path: real shim processes, hostile input, broken spools.

Shared helpers (also used by ``bench/bench_hook_reliability.py``): realistic hook payloads of a
chosen size and a few hostile ones, running the exact registered hook command (bounded parallelism,
a stdin that never closes), reading a one-record spool, percentiles.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outloop.streams.shim import hook_command

KIB = 1024
_WORDS = ("test", "passed", "assert", "module", "def", "return", "import", "café", "naïve", "日本語",
          "src/app/core.py", "::", "ok", "FAILED", "0.12s", "=>", "{", "}", "\\", '"quoted"', "\t")


def shim_cmd() -> list[str]:
    """The exact command line ``outloop hooks install`` registers."""
    return shlex.split(hook_command())


def bare_cmd() -> list[str]:
    """The reference: a bare start of the same interpreter."""
    return [sys.executable, "-c", "pass"]


def shim_env(spool: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_")}
    env["OUTLOOP_SPOOL"] = str(spool)
    env.update(extra)
    return env


def _dumps(obj: Any) -> bytes:
    """JSON as Claude Code sends it (compact, UTF-8)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


FIVE_MIB = _dumps({"session_id": "big", "hook_event_name": "PostToolUse", "tool_name": "Read",
                   "tool_use_id": "toolu_big", "tool_input": {"file_path": "/big.log"},
                   "tool_response": {"content": "y" * (5 * 1024 * KIB)}})
ENVELOPE_SHAPED = {  # hook stdin without a session_id that happens to look like a trusted envelope
    "hook_event": _dumps({"id": "spoof-1", "type": "hook.event", "source": "hook", "subject": "victim",
                          "data": {"session_id": "victim", "hook_event_name": "PreToolUse", "tool_name": "Bash",
                                   "tool_use_id": "toolu_spoof", "tool_input": {"command": "true"}}}),
    "usage": _dumps({"id": "spoof-2", "type": "usage.record", "source": "hook", "subject": "victim",
                     "data": {"id": "m:r", "session_id": "victim", "model": "claude-opus-4-1",
                              "timestamp": "2026-03-01T10:00:00Z", "input_tokens": 10**9, "output_tokens": 10**9}}),
}


_WORD_BYTES = [len(json.dumps(w, ensure_ascii=False).encode()) - 2 for w in _WORDS]  # each one JSON-escaped


def filler(rng: random.Random, nbytes: int) -> str:
    """Realistic-looking text (lines of words, some non-ASCII, quotes, tabs) of about ``nbytes``
    UTF-8 bytes once JSON-encoded.

    Lines of ``rng.randint(3, 14)`` words, each ``rng.choice(_WORDS)``, drawn as those calls draw
    them (the same ``getrandbits`` calls, inlined: this runs millions of times per workload), and
    sized from the words' escaped lengths (JSON escapes character by character) instead of
    encoding every line: the same text, and the same generator state after, as those calls give."""
    getrandbits, words, sizes = rng.getrandbits, _WORDS, _WORD_BYTES
    n = len(words)
    bits = n.bit_length()
    parts: list[str] = []
    size = 0
    while size < nbytes:
        k = getrandbits(4)  # randint(3, 14): 3 + a draw below 12
        while k >= 12:
            k = getrandbits(4)
        line = []
        grow = 1  # the escaped "\n" (2 bytes) less the one separator fewer than words
        for _ in range(3 + k):
            i = getrandbits(bits)  # choice(words): a draw below len(words)
            while i >= n:
                i = getrandbits(bits)
            line.append(words[i])
            grow += sizes[i] + 1
        parts.append(" ".join(line) + "\n")
        size += grow
    return "".join(parts)


def _fit(build: Callable[[str], dict[str, Any]], rng: random.Random, size: int) -> bytes:
    """``build(pad)`` encoded, with the pad grown or cut so the payload is close to ``size`` bytes."""
    base = len(_dumps(build("")))
    pad = filler(rng, max(size - base, 0))
    body = _dumps(build(pad))
    while len(body) > size and pad:
        pad = pad[: max(len(pad) - (len(body) - size) // 2 - 1, 0)]
        body = _dumps(build(pad))
    return body


def tool_call_payloads(rng: random.Random, *, session: str, tool_use_id: str, pre_size: int,
                       post_size: int) -> tuple[bytes, bytes]:
    """The Claude Code ``PreToolUse`` and ``PostToolUse`` payloads of one tool call, of about
    ``pre_size`` and ``post_size`` bytes (the tool input pads the first, the tool response the rest
    of the second; ``post_size`` is raised to fit the input when needed)."""
    tool = rng.choice(("Bash", "Write", "Edit"))
    path = f"/home/dev/proj/src/m{rng.randint(0, 99)}.py"
    head = {"session_id": session, "transcript_path": f"/home/dev/.claude/projects/proj/{session}.jsonl",
            "cwd": "/home/dev/proj", "permission_mode": "default", "hook_event_name": "PreToolUse",
            "tool_name": tool, "tool_use_id": tool_use_id}

    def tool_input(pad: str) -> dict[str, Any]:
        return {"Bash": {"command": f"cat > /tmp/x.sh <<'EOF'\n{pad}EOF", "description": "write a script"},
                "Write": {"file_path": path, "content": pad},
                "Edit": {"file_path": path, "old_string": "é", "new_string": pad}}[tool]

    pre = _fit(lambda pad: {**head, "tool_input": tool_input(pad)}, rng, pre_size)
    inp = json.loads(pre)["tool_input"]

    def post(pad: str) -> dict[str, Any]:
        if tool == "Bash":
            response: dict[str, Any] = {"stdout": pad, "stderr": "", "interrupted": False, "isImage": False}
        else:
            response = {"type": "update", "filePath": path, "content": pad, "structuredPatch": [],
                        "userModified": False}
        return {**head, "hook_event_name": "PostToolUse", "tool_input": inp, "tool_response": response}

    return pre, _fit(post, rng, max(post_size, len(pre) + 256))


def hook_workload(seed: int, n: int = 2000, sessions: int = 5) -> list[tuple[str, str, bytes]]:
    """``n`` hook events ``(hook_event_name, tool_use_id, body)`` of 1-64 KiB over ``sessions``
    sessions: 90% Pre+Post pairs, 5% Pre alone (the call never returned), 5% Post alone (its Pre was
    lost), each Pre listed before its Post."""
    rng = random.Random(seed)
    events: list[tuple[str, str, bytes]] = []
    singles = n // 20
    k = 0
    while len(events) < n:
        left = n - len(events)
        kind = "pre" if k < singles else "post" if k < 2 * singles or left == 1 else "pair"
        tid = f"toolu_01{seed:04d}{k:06d}{rng.getrandbits(40):010x}"
        pre_size = rng.randint(KIB, 32 * KIB)
        pre, post = tool_call_payloads(rng, session=f"sess-{seed}-{k % sessions}", tool_use_id=tid,
                                       pre_size=pre_size, post_size=rng.randint(pre_size + 512, 64 * KIB))
        if kind != "post":
            events.append(("PreToolUse", tid, pre))
        if kind != "pre":
            events.append(("PostToolUse", tid, post))
        k += 1
    rng.shuffle(events)  # then restore Pre-before-Post within each call
    order = {(e, t): i for i, (e, t, _) in enumerate(events)}
    for i, (e, t, _) in enumerate(events):
        if e == "PostToolUse" and order.get(("PreToolUse", t), -1) > i:
            j = order[("PreToolUse", t)]
            events[i], events[j] = events[j], events[i]
            order[("PreToolUse", t)], order[("PostToolUse", t)] = i, j
    return events


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes
    wall: float  # seconds, spawn to exit as the caller sees it


def run(cmd: Sequence[str], env: dict[str, str], stdin: bytes | None, timeout: float = 30.0,
        **popen: Any) -> Run:
    """One process with ``stdin`` fed then closed (``popen`` may shape fd 0 itself)."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), input=stdin, capture_output=True, env=env, timeout=timeout, **popen)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)


def run_many(jobs: Sequence[tuple[Sequence[str], bytes]], env: dict[str, str], parallel: int = 8) -> list[Run]:
    """Every (command, stdin) job, ``parallel`` at a time; results in job order."""
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda job: run(job[0], env, job[1]), jobs))


def run_unclosed_stdin(cmd: Sequence[str], env: dict[str, str], trickle: bool) -> tuple[Run, bytes]:
    """One process whose stdin is never closed: silent, or ``trickle``-fed a small line every 10 ms
    until it exits. Returns the run and every byte written to its stdin."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    stdin, written = proc.stdin, bytearray()
    assert stdin is not None and proc.stdout is not None and proc.stderr is not None

    def feed() -> None:
        while proc.poll() is None:
            chunk = b'{"session_id": "slow", "x": "' + os.urandom(8).hex().encode() + b'"}\n'
            try:
                stdin.write(chunk)
                stdin.flush()
            except (OSError, ValueError):
                return
            written.extend(chunk)
            time.sleep(0.01)

    feeder = threading.Thread(target=feed, daemon=True)
    if trickle:
        feeder.start()
    try:
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    if trickle:
        feeder.join(5)
    with contextlib.suppress(OSError):
        stdin.close()
    return Run(proc.returncode, proc.stdout.read(), proc.stderr.read(), wall), bytes(written)


def listening(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def only_record(spool: Path) -> Any:
    """The one record of ``spool``, which must hold nothing else (no temp file either)."""
    from outloop.streams.spool import Spool

    names = os.listdir(spool)
    assert len(names) == 1 and names[0].endswith(".rec"), names
    sp = Spool(spool)
    return sp.read(sp.ready()[0])


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]
