"""Signature extraction beside Drain3 template mining, on the distinct shell commands of traces-dev.

Both run in the same process on the same commands, several rounds, interleaved; the figures printed are
medians over the rounds, with their ratio. Caches are off for the comparison (a fresh Drain3 miner per
round; our parse cache disabled), so every command is really parsed and classified. Drain3 gets its
usual masking (numbers, hex, IPs, paths). Then the parse cache is turned on and every command of the
traces (not only distinct ones) is signed in trace order: throughput and hit rate.

    python bench/bench_signatures.py [--rounds 5] [--traces ../shared/data/traces-dev]

Target: signature extraction at least 0.5x Drain3's rate, with full shell-aware parsing quality.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from outloop.agents.shell import parse  # noqa: E402
from outloop.agents.signatures import SignatureCache, command_signature  # noqa: E402

DEFAULT_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "traces-dev"
BASH_BLOCK = re.compile(r"```bash\s*\n(.*?)\n```", re.S)


def _tool_uses(records: list[dict]) -> Iterator[str]:
    for r in records:
        if not isinstance(r, dict) or r.get("type") != "assistant":
            continue
        for block in (r.get("message") or {}).get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_use" and block.get("name") == "Bash":
                cmd = (block.get("input") or {}).get("command")
                if isinstance(cmd, str):
                    yield cmd


def trace_commands(root: Path) -> list[str]:
    """Every Bash command of the traces, in file and record order (duplicates kept)."""
    out: list[str] = []
    for f in sorted(root.rglob("*.jsonl")):
        records = []
        for line in f.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # damaged lines exist in traces-dev
        out.extend(_tool_uses(records))
    for d in sorted(p for p in (root / "claude-code-hooks").glob("*") if p.is_dir()):
        pre = d / "pre_tool_use.json"
        if pre.exists():
            for p in json.loads(pre.read_text()):
                if p.get("tool_name") == "Bash" and isinstance(
                    (p.get("tool_input") or {}).get("command"), str
                ):
                    out.append(p["tool_input"]["command"])
        chat = d / "chat.json"
        if chat.exists():
            out.extend(_tool_uses(json.loads(chat.read_text())))
    for f in sorted((root / "mini-swe-agent").glob("*.traj.json")):
        for m in json.loads(f.read_text()).get("messages", []):
            if m.get("role") != "assistant":
                continue
            content = m.get("content")
            if isinstance(content, list):
                content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
            found = BASH_BLOCK.findall(content or "")
            if found:
                out.append(found[0])
    return out


def drain_miner() -> object:
    from drain3 import TemplateMiner
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    cfg = TemplateMinerConfig()
    cfg.profiling_enabled = False
    cfg.masking_instructions = [
        MaskingInstruction(
            r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})((?=[^A-Za-z0-9])|$)", "IP"
        ),
        MaskingInstruction(r"((?<=[^A-Za-z0-9])|^)(0x[a-fA-F0-9]+)((?=[^A-Za-z0-9])|$)", "HEX"),
        MaskingInstruction(r"((?<=[^A-Za-z0-9])|^)([a-fA-F0-9]{7,40})((?=[^A-Za-z0-9])|$)", "HEX"),
        MaskingInstruction(r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+)((?=[^A-Za-z0-9])|$)", "NUM"),
        MaskingInstruction(r"(?:[~.]?/[\w.\-]+)+/?", "PATH"),
    ]
    return TemplateMiner(config=cfg)


def rate(fn: Callable[[], int]) -> float:
    t = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    args = ap.parse_args(argv)
    if not args.traces.is_dir():
        print(f"traces not found at {args.traces}; nothing to measure")
        return 0
    try:
        import drain3  # noqa: F401
    except ImportError:
        print("drain3 is not installed (pip install -e '.[dev]'); no reference to measure against")
        return 0

    every = trace_commands(args.traces)
    distinct = list(dict.fromkeys(every))
    fast_share = sum(parse(c).parser == "fast" for c in distinct) / len(distinct)

    def ours() -> int:
        for c in distinct:
            command_signature(c, cache=None)
        return len(distinct)

    def ours_full() -> int:
        for c in distinct:
            command_signature(c, cache=None, fast=False)
        return len(distinct)

    def drain() -> int:
        miner = drain_miner()
        for c in distinct:
            miner.add_log_message(c)  # type: ignore[attr-defined]
        return len(distinct)

    ours(), drain()  # warm up imports and regex caches
    r_ours, r_full, r_drain = [], [], []
    for _ in range(args.rounds):
        r_drain.append(rate(drain))
        r_ours.append(rate(ours))
        r_full.append(rate(ours_full))
    m_ours, m_full, m_drain = (statistics.median(x) for x in (r_ours, r_full, r_drain))

    r_cached, hit_rates = [], []
    for _ in range(args.rounds):
        cache = SignatureCache(maxsize=8192)

        def cached(cache: SignatureCache = cache) -> int:
            for c in every:
                command_signature(c, cache=cache)
            return len(every)

        r_cached.append(rate(cached))
        hit_rates.append(cache.hit_rate)
    m_cached = statistics.median(r_cached)

    line = "  {:<48} {:>10,.0f}   ratio {:.2f}x drain3"
    print(
        f"commands: {len(every)} in trace order, {len(distinct)} distinct; fast path takes {fast_share:.1%}"
    )
    print(f"rounds: {args.rounds}, medians (commands/s)")
    print(f"  {'drain3 template mining (masking on, fresh miner)':<48} {m_drain:>10,.0f}")
    print(line.format("signatures, cache off (fast path + bashlex)", m_ours, m_ours / m_drain))
    print(line.format("signatures, cache off, bashlex for every command", m_full, m_full / m_drain))
    print(
        line.format("signatures, parse cache on, all commands", m_cached, m_cached / m_drain)
        + f", hit rate {statistics.median(hit_rates):.1%}"
    )
    target = m_ours / m_drain >= 0.5
    print(f"target >= 0.5x drain3 with cache off: {'met' if target else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
