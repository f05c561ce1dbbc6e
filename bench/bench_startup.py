"""Startup: ``outloop up`` until ready to process, and ``outloop replay`` of a tiny file end to end,
beside the embedded broker's own startup and ``python -c 'import faust'`` measured in the same run.

``outloop up`` is started as a user would (``.venv/bin/outloop up``, embedded broker, fresh home);
"health" is the first ``GET /health`` answering ok; "ready" is when a hook event published right
then (kafka-python Publisher) is visible through the worker's query endpoint. Target: ready <= 10 s.

    .venv/bin/python bench/bench_startup.py [--quick] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, header, median, python_env, row, terminate  # noqa: E402

from outloop.client import WorkerClient  # noqa: E402
from outloop.streams.broker import EmbeddedBroker, free_port  # noqa: E402

OUTLOOP = str(Path(sys.executable).with_name("outloop"))


def import_faust(module: str = "faust") -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env=python_env(), cwd=REPO)
    return time.perf_counter() - t0


def broker_start(tmp: Path) -> float:
    t0 = time.perf_counter()
    b = EmbeddedBroker(tmp / f"broker-{uuid.uuid4().hex[:6]}.log").start()
    elapsed = time.perf_counter() - t0
    b.stop()
    return elapsed


def join_wait(worker_log: Path) -> float:
    """Seconds the worker's consumer group join took (Tansu holds a join for half the session timeout)."""
    stamps = {}
    for line in worker_log.read_text(errors="replace").splitlines():
        for key, needle in (("join", "(Re-)joining group"), ("joined", "Joined group")):
            if needle in line and key not in stamps:
                m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", line)
                if m:
                    stamps[key] = datetime.strptime(m.group(1) + "+0000", "%Y-%m-%d %H:%M:%S,%f%z")
    if len(stamps) < 2:
        return float("nan")
    return (stamps["joined"] - stamps["join"]).total_seconds()


def outloop_up(tmp: Path, extra_env: dict[str, str] | None = None) -> tuple[float, float, float, float]:
    """(seconds to /health ok, seconds to a fresh event being queryable, seconds to stop, group join)."""
    from outloop.streams.publisher import Publisher

    home = tmp / f"up-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {**python_env(), "OUTLOOP_HOME": str(home), "OUTLOOP_HTTP_PORT": str(port),
           "OUTLOOP_PROJECTS": str(home / "projects"),  # the tailer follows an empty folder, not the machine's
           **(extra_env or {})}
    log = home.with_suffix(".log")
    t0 = time.perf_counter()
    proc = subprocess.Popen([OUTLOOP, "up"], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))  # noqa: SIM115
    client = WorkerClient("127.0.0.1", port)
    try:
        while not (client.health(timeout=0.5) or {}).get("ok"):
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError(f"outloop up failed; see {log}")
            time.sleep(0.02)
        health = time.perf_counter() - t0
        broker = None
        while broker is None:
            m = re.search(r"broker\s+(\S+:\d+)", log.read_text())
            broker = m.group(1) if m else None
            time.sleep(0.02)
        event_id = f"startup-{uuid.uuid4().hex}"
        with Publisher(broker) as pub:
            pub.hook_event({"session_id": "startup", "hook_event_name": "SessionStart"}, datetime.now(UTC),
                           id=event_id)
            pub.flush(30)
        while not client.query("SELECT count(*) FROM hook_events WHERE id = ?", [event_id])[1][0][0]:
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("the test event never became queryable")
            time.sleep(0.02)
        ready = time.perf_counter() - t0
    finally:
        t1 = time.perf_counter()
        terminate(proc, 60)
    return health, ready, time.perf_counter() - t1, join_wait(home / "logs" / "worker.log")


def tiny_transcript(tmp: Path) -> tuple[Path, int]:
    from outloop.sample import write_sample

    files = [f for f in write_sample(tmp / "sample", sessions=1) if f.suffix == ".jsonl"]
    smallest = min(files, key=lambda f: f.stat().st_size)
    return smallest, sum(1 for line in smallest.read_text().splitlines() if line.strip())


def replay_tiny(tmp: Path, path: Path) -> float:
    home = tmp / f"replay-{uuid.uuid4().hex[:6]}"
    env = {**python_env(), "OUTLOOP_HOME": str(home), "OUTLOOP_HTTP_PORT": "0"}
    t0 = time.perf_counter()
    proc = subprocess.run([OUTLOOP, "replay", str(path), "--db", str(home / "r.duckdb"), "--json"], env=env,
                          cwd=REPO, capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"outloop replay failed: {proc.stderr.decode()[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="same as --runs 3 (the sizes are already tiny)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    header(f"startup: {args.runs} runs, interleaved")
    faust, broker, health, ready, stop, replay, joins, former, imports = [], [], [], [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp_name:
        tmp = Path(tmp_name)
        tiny, lines = tiny_transcript(tmp)
        for run in range(args.runs):
            faust.append(import_faust())
            imports.append(import_faust("outloop.worker"))
            broker.append(broker_start(tmp))
            h, r, s, j = outloop_up(tmp)
            health.append(h)
            ready.append(r)
            stop.append(s)
            joins.append(j)
            former.append(outloop_up(tmp, {"OUTLOOP_SESSION_TIMEOUT": "10"})[1])
            replay.append(replay_tiny(tmp, tiny))
            print(f"  run {run + 1}: import faust {faust[-1]:.2f}s  import outloop.worker {imports[-1]:.2f}s  "
                  f"broker {broker[-1]:.2f}s  up: health {h:.2f}s "
                  f"ready {r:.2f}s (group join {j:.2f}s) stop {s:.2f}s  ready with OUTLOOP_SESSION_TIMEOUT=10 "
                  f"{former[-1]:.2f}s  replay of {lines} lines {replay[-1]:.2f}s")
    target = [10.0] * args.runs
    row("outloop up -> /health ok", health, "broker start", broker, "s", higher_is_better=False)
    row("outloop up -> event queryable", ready, "broker start", broker, "s", higher_is_better=False)
    row("outloop up -> event queryable", ready, "import faust", faust, "s", higher_is_better=False)
    row("outloop up -> event queryable", ready, "import outloop.worker", imports, "s", higher_is_better=False)
    row("outloop up -> event queryable", ready, "target", target, "s", higher_is_better=False,
        target="<= 1.0x (10 s)")
    row(f"outloop replay ({lines}-line transcript)", replay, "broker start", broker, "s", higher_is_better=False)
    row(f"outloop replay ({lines}-line transcript)", replay, "import faust", faust, "s", higher_is_better=False)
    row("outloop up -> event queryable (session 6 s)", ready, "former default (10 s)", former, "s",
        higher_is_better=False)
    print(f"  of which the worker's consumer-group join: median {median(joins):.2f}s "
          "(half the session timeout, which Tansu holds a new group's first join for)")
    print(f"  outloop up: SIGTERM -> exited, median {median(stop):.2f}s")


if __name__ == "__main__":
    os.environ.pop("OUTLOOP_BROKER", None)
    main()
