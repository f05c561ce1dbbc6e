"""The router on the hook's path: its decision latency at the socket, and the hook's whole-process time.

1. Decision latency p50 / p99 at the router's Unix socket from a stdlib client (``socket``, one
   connection per request, as the shim makes), for PreToolUse payloads of real commands (the Bash
   commands of the traces-dev hook logs when ``../shared`` is there, else synthetic ones), beside a
   ``ping`` round trip to the same router (the socket and thread cost alone) in the same run:
   * idle (no pipeline), and
   * while the sink writes: an embedded broker and a worker ingest a synthetic workload
     (PreToolUse, PostToolUse and usage per turn) published during the measurement; the rows the sink
     wrote during the window are printed, so the load is shown, not assumed. Target p99 <= 20 ms.
2. The PreToolUse hook's whole-process wall time, run as Claude Code runs it (``hook_command()``),
   with routing on (router up; shadow rules: no answer; enforce: an ``updatedInput`` answer) and
   with the router down, beside a bare ``python -I -S -c pass`` of the same interpreter, interleaved
   in each round. Target <= 2x the bare start.

    python bench/bench_router.py [--requests 4000] [--runs 40] [--rounds 5] [--events 200000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    TRACES,
    commands,
    header,
    median,
    pct,
    python_env,
    settings_for,
)
from outloop.router.component import RouterProcess  # noqa: E402
from outloop.streams.shim import hook_command  # noqa: E402


def trace_commands(limit: int = 400) -> list[str]:
    """Bash commands of the traces-dev hook logs (real ones), else synthetic ones."""
    found: list[str] = []
    for path in sorted((TRACES / "claude-code-hooks").glob("*/pre_tool_use.json")) if TRACES.is_dir() else []:
        for p in json.loads(path.read_text()):
            cmd = (p.get("tool_input") or {}).get("command")
            if p.get("tool_name") == "Bash" and isinstance(cmd, str):
                found.append(cmd)
    return found[:limit] if found else commands(limit)


def payload(command: str, i: int) -> bytes:
    return json.dumps({"session_id": f"bench-{i % 7}", "transcript_path": "/home/u/.claude/projects/p/s.jsonl",
                       "cwd": "/home/u/p", "permission_mode": "default", "hook_event_name": "PreToolUse",
                       "tool_name": "Bash", "tool_input": {"command": command, "description": "bench"},
                       "tool_use_id": f"toolu_bench_{i}"}).encode()


def round_trip(path: str, body: bytes) -> float:
    t0 = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(body)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    return (time.perf_counter() - t0) * 1000.0


def latency(path: str, cmds: list[str], n: int) -> tuple[list[float], list[float]]:
    """(decision ms, ping ms), interleaved."""
    decisions, pings = [], []
    for i in range(n):
        decisions.append(round_trip(path, payload(cmds[i % len(cmds)], i)))
        pings.append(round_trip(path, b'{"outloop":"ping"}'))
    return decisions, pings


def show(label: str, decisions: list[float], pings: list[float]) -> None:
    print(f"  {label:34} decision p50 {median(decisions):6.2f} ms  p99 {pct(decisions, 0.99):6.2f} ms"
          f"  max {max(decisions):6.2f} ms | ping p50 {median(pings):5.2f} ms  p99 {pct(pings, 0.99):5.2f} ms"
          f" | p99 target <= 20 ms")


def wait_for(cond, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.1)


def sink_progress(stack: object) -> dict[str, int]:
    health = stack.client.health(timeout=5) or {}  # type: ignore[attr-defined]
    return health.get("sink") or {}


def sink_rows(stack: object) -> int:
    return int(sink_progress(stack).get("records", 0))


def bench_latency(args: argparse.Namespace, tmp: Path) -> None:
    from outloop.runtime import Stack

    header("router decision latency at the socket (stdlib client, one connection per request)",
           f"{args.requests} PreToolUse payloads per condition; ping = the same round trip without a decision")
    settings = settings_for(tmp, None)
    settings.home.mkdir(parents=True, exist_ok=True)
    cmds = trace_commands()
    print(f"   commands: {len(cmds)} ({'traces-dev hook logs' if TRACES.is_dir() else 'synthetic'})")
    with Stack(settings, router=True) as stack:
        router = stack.router
        latency(router.socket_path, cmds, 100)  # warm: signatures parsed once, caches filled
        show("idle", *latency(router.socket_path, cmds, args.requests))
        s = stack.settings
        assert s.broker
        before = sink_rows(stack)
        repo = str(Path(__file__).resolve().parents[1])
        code = (f"import sys; sys.path.insert(0, {repo!r}); from bench.common import publish, workload; "
                f"publish({s.broker!r}, {s.topic_prefix + '.events'!r}, workload({args.events}, 200, 2000))")
        pub = subprocess.Popen([sys.executable, "-c", code], env=python_env())  # its own process: no GIL shared
        try:
            wait_for(lambda: sink_rows(stack) > before + 1000, 120)  # the sink is writing
            first = sink_progress(stack)
            start = int(first.get("records", 0))
            t0 = time.monotonic()
            busy = latency(router.socket_path, cmds, args.requests)
            window = time.monotonic() - t0
            last = sink_progress(stack)
            after = int(last.get("records", 0))
        finally:
            pub.wait(600)
        show("while the sink writes", *busy)
        print(f"   sink records committed during the {window:.1f} s busy window: {after - start:,} (before it: "
              f"{start - before:,}); sink lag at its start {first.get('lag')}, at its end {last.get('lag')}; "
              f"requests over the hook's 150 ms budget: {sum(x > 150 for x in busy[0])}")


def wall(cmd: list[str], env: dict[str, str], stdin: bytes) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, capture_output=True, env=env)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd}: exit {proc.returncode}")
    return took * 1000.0, proc.stdout


def bench_hook(args: argparse.Namespace, tmp: Path) -> None:
    header("PreToolUse hook whole-process wall time, beside a bare start of the same interpreter",
           f"{args.rounds} rounds x {args.runs} runs per variant, interleaved; medians of per-round medians")
    shim = shlex.split(hook_command())
    bare = [sys.executable, "-I", "-S", "-c", "pass"]
    body = payload("pytest -q tests/unit", 1)
    variants: dict[str, tuple[list[str], dict[str, str], bytes]] = {}
    homes = {name: tmp / f"h-{i}" for i, name in enumerate(("shadow", "enforce", "down"))}
    routers = []
    for name, home in homes.items():
        home.mkdir(parents=True)
        if name == "enforce":
            (home / "routes.json").write_text(json.dumps({"rules": {"pytest": {"mode": "enforce", "threshold": 0}}}))
        env = dict(python_env(), OUTLOOP_HOME=str(home))
        if name != "down":
            routers.append(RouterProcess(settings_for(tmp / f"s-{name}", None, home=home), home / "logs").start())
        variants[f"hook, router up ({name})" if name != "down" else "hook, router down"] = (shim, env, body)
    variants["bare: python -I -S -c pass"] = (bare, python_env(), b"")
    try:
        per_round: dict[str, list[float]] = {k: [] for k in variants}
        answered: dict[str, bool] = {}
        for _ in range(args.rounds):
            runs: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(args.runs):
                for name, (cmd, env, stdin) in variants.items():
                    took, out = wall(cmd, env, stdin)
                    runs[name].append(took)
                    answered[name] = bool(out)
            for name, xs in runs.items():
                per_round[name].append(median(xs))
        ref = per_round["bare: python -I -S -c pass"]
        for name, xs in per_round.items():
            ratio = median([a / b for a, b in zip(xs, ref, strict=True)])
            print(f"  {name:34} {median(xs):7.2f} ms  ratio {ratio:.2f}x of the bare start"
                  f"{'  (answered)' if answered.get(name) else ''}  target <= 2x")
    finally:
        for r in routers:
            r.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--only", choices=("latency", "hook"), default=None)
    ap.add_argument("--quick", action="store_true", help="500 requests, 10 runs x 3 rounds, 60,000 events")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.runs, args.rounds, args.events = 500, 10, 3, 60_000
    with tempfile.TemporaryDirectory(prefix="obr-") as tmp:
        if args.only in (None, "latency"):
            bench_latency(args, Path(tmp))
        if args.only in (None, "hook"):
            bench_hook(args, Path(tmp))


if __name__ == "__main__":
    main()
