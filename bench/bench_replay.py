"""Replay of the real development traces: wall time and events/s of ``outloop replay``, beside
``ccusage`` (npm ``ccusage@17``, which only parses the transcripts and sums their usage) on the same
transcripts, in the same run.

ccusage is installed at benchmark time into a temporary folder (``npm install ccusage@17``) and pointed
at a temporary ``CLAUDE_CONFIG_DIR/projects`` copy of the transcripts; nothing lands in the repository.
Runs ``--offline`` (its bundled prices). Skips with a message when the traces or npm are absent.

    .venv/bin/python bench/bench_replay.py [--quick] [--runs 3] [--traces DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, TRACES, header, median, python_env, row  # noqa: E402

OUTLOOP = str(Path(sys.executable).with_name("outloop"))


def install_ccusage(folder: Path) -> Path | None:
    npm = shutil.which("npm")
    if npm is None:
        print("  npm not found: no ccusage reference")
        return None
    proc = subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "ccusage@17"], cwd=folder,
                          capture_output=True, timeout=600)
    exe = folder / "node_modules" / ".bin" / "ccusage"
    if proc.returncode != 0 or not exe.exists():
        print(f"  npm install ccusage@17 failed: {proc.stderr.decode()[-500:]}")
        return None
    return exe


def ccusage(exe: Path, config_dir: Path) -> tuple[float, dict]:
    env = {**python_env(), "CLAUDE_CONFIG_DIR": str(config_dir), "NO_COLOR": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), "daily", "--json", "--offline"], env=env, capture_output=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ccusage failed: {proc.stderr.decode()[-1000:]}")
    return elapsed, json.loads(proc.stdout).get("totals", {})


def replay(paths: list[Path], home: Path) -> tuple[float, dict]:
    env = {**python_env(), "OUTLOOP_HOME": str(home), "OUTLOOP_HTTP_PORT": "0"}
    t0 = time.perf_counter()
    proc = subprocess.run([OUTLOOP, "replay", *map(str, paths), "--db", str(home / "r.duckdb"), "--json"],
                          env=env, cwd=REPO, capture_output=True, timeout=1800)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"outloop replay failed: {proc.stderr.decode()[-2000:]}")
    return elapsed, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="same as --runs 3 (the trace set is fixed)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--traces", type=Path, default=TRACES)
    args = ap.parse_args()
    if not args.traces.is_dir():
        print(f"bench_replay: skipped: real traces not present at {args.traces} (../shared beside the checkout)")
        return
    transcripts = sorted(args.traces.rglob("*.jsonl"))
    header(f"replay of the development traces ({args.runs} runs)",
           f"{len(transcripts)} transcripts + hook logs + trajectories; ccusage reads the transcripts only")
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp_name:
        tmp = Path(tmp_name)
        projects = tmp / "claude" / "projects"
        for f in transcripts:  # a temporary copy, laid out like ~/.claude/projects/<project>/<session>.jsonl
            dest = projects / f.parent.name / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
        (tmp / "npm").mkdir()
        exe = install_ccusage(tmp / "npm")
        from bench_startup import tiny_transcript

        tiny, lines = tiny_transcript(tmp)
        all_s, all_rate, tr_s, cc_s, tiny_s = [], [], [], [], []
        summary_all: dict = {}
        summary_tr: dict = {}
        cc_totals: dict = {}
        for run in range(args.runs):
            secs, summary_all = replay([args.traces], tmp / f"all{run}")
            events = sum(summary_all["events"].values())
            all_s.append(secs)
            all_rate.append(events / secs)
            secs_tr, summary_tr = replay([projects], tmp / f"tr{run}")
            tr_s.append(secs_tr)
            tiny_s.append(replay([tiny], tmp / f"tiny{run}")[0])
            line = (f"  run {run + 1}: replay all {secs:.1f}s ({events:,} events, {events / secs:,.0f}/s)  "
                    f"replay transcripts {secs_tr:.1f}s  replay of a {lines}-line file {tiny_s[-1]:.1f}s")
            if exe is not None:
                secs_cc, cc_totals = ccusage(exe, tmp / "claude")
                cc_s.append(secs_cc)
                line += f"  ccusage {secs_cc:.2f}s"
            print(line)
    events_tr = sum(summary_tr["events"].values())
    print(f"  all traces: {sum(summary_all['events'].values()):,} events, {summary_all['tool_calls']:,} tool calls, "
          f"{summary_all['usage_records']:,} usage records; median {median(all_s):.1f}s, "
          f"{median(all_rate):,.0f} events/s")
    row("outloop replay, all traces", all_s, f"outloop replay of a {lines}-line file", tiny_s, "s",
        higher_is_better=False)
    marginal = [sum(summary_all["events"].values()) / (a - t) for a, t in zip(all_s, tiny_s, strict=True) if a > t]
    print(f"  beyond the fixed start/stop cost (the tiny replay): median {median(marginal):,.0f} events/s")
    if cc_s:
        row(f"outloop replay, transcripts ({events_tr:,} events)", tr_s, "ccusage daily", cc_s, "s",
            higher_is_better=False)
        row("outloop replay, all traces", all_s, "ccusage daily (transcripts)", cc_s, "s", higher_is_better=False)
        ours = summary_tr["tokens"]
        print("  tokens, outloop (transcripts) vs ccusage:")
        for name, key in (("input", "inputTokens"), ("output", "outputTokens"),
                          ("cache_creation", "cacheCreationTokens"), ("cache_read", "cacheReadTokens")):
            theirs = cc_totals.get(key)
            print(f"    {name:15} {ours.get(name, 0):>14,} {theirs if theirs is None else f'{theirs:,}':>14}")
        print(f"    cost USD        {summary_tr.get('cost_usd')!s:>14} {cc_totals.get('totalCost')!s:>14}")


if __name__ == "__main__":
    main()
