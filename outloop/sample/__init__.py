"""A deterministic, realistic sample of coding-agent traces in the real formats, for ``outloop demo``
and for tests that must not depend on real traces. Pure: seeded, no network, writes only to ``dest``.

Layout: ``claude-projects/<project>/<session>.jsonl`` (Claude Code transcripts, plus one sub-agent
file ``agent-<id>.jsonl`` sharing a session id), ``hook-logs/shop-api/<event>.json`` (a hook-log
capture: JSON arrays, one file per event), ``mini-swe-agent/<instance>.traj.json`` (+ labels).

What makes it realistic: one API response is written as one record per content block with the same
message.id/requestId and growing output_tokens; cache reads dominate usage; the same commands
(``pytest tests/unit -q``, ``git status``, ``ruff check .``, ``npm run build``) recur within and across
sessions with long outputs; files are read and some never edited; two lines are damaged the way a
redaction script breaks them; the capture holds one session with ``tool_use_id`` (also present as a
transcript) and one older session without it, partly using the old ``tool_result`` name.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from outloop.sample.formats import Transcript, hook_capture, subagent, trajectory
from outloop.sample.steps import PROJECTS, Gen, Step


def _damage(rng: random.Random, line: bytes) -> bytes:
    """Breaks a line the way a redaction script did in real traces: cut, then a marker appended."""
    cut = rng.randint(len(line) // 3, 2 * len(line) // 3)
    return line[:cut] + b" [REDACTED_SUBJECT]"


def write_sample(dest: Path, seed: int = 7, sessions: int = 6) -> list[Path]:
    """Writes the sample under ``dest`` and returns the written files, sorted. Same seed, same bytes."""
    gen, dest = Gen(seed), Path(dest)
    clock = datetime(2025, 11, 3, 8, 30, tzinfo=UTC)
    files: dict[Path, bytes] = {}
    transcripts: list[tuple[Path, Transcript]] = []
    captured: dict[str, list[Any]] = {}
    for index in range(sessions + 1):  # the last one exists only as an old hook capture
        kind = "web" if index % 3 == 2 else "api"
        cwd, session = PROJECTS[kind], gen.uuid()
        project = dest / "claude-projects" / cwd.replace("/", "-")
        task, steps = gen.session(kind, index)
        if index == sessions:
            for name, payloads in hook_capture(session, cwd, task, steps, new=False).items():
                captured.setdefault(name, []).extend(payloads)
            break
        if index == 0:  # delegate a search to a sub-agent
            sub, step = subagent(gen, session, cwd, clock + timedelta(minutes=2))
            steps.insert(2, step)
            transcripts.append((project / f"agent-{sub.agent}.jsonl", sub))
        tr = Transcript(gen, session, cwd, clock)
        tr.records.append({"type": "file-history-snapshot", "messageId": gen.uuid(), "snapshot": {
            "messageId": gen.uuid(), "trackedFileBackups": {}, "timestamp": tr.clock.isoformat()}})
        tr.prompt(task)
        for step in steps:
            tr.assistant(step)
        if index == min(3, sessions - 1):  # Claude Code writes these itself: zero usage
            tr.assistant(Step(None, "No response requested.", []), model="<synthetic>")
            tr.records[-1]["message"]["usage"] = {k: 0 for k in ("input_tokens", "output_tokens",
                                                                  "cache_creation_input_tokens",
                                                                  "cache_read_input_tokens")}
            tr.records[-1].pop("requestId")
        tr.add("system", subtype="turn_duration", durationMs=int((tr.clock - clock).total_seconds() * 1000))
        transcripts.append((project / f"{session}.jsonl", tr))
        if index == 1:
            for name, payloads in hook_capture(session, cwd, task, steps, new=True).items():
                captured.setdefault(name, []).extend(payloads)
        clock = tr.clock + timedelta(hours=gen.rng.uniform(1.5, 9))
    thinking = [(p, i) for p, t in transcripts if not t.agent for i, r in enumerate(t.records)
                if r.get("type") == "assistant" and r["message"]["content"][0]["type"] == "thinking"]
    broken = set(gen.rng.sample(thinking, min(2, len(thinking))))
    for path, tr in transcripts:
        lines = [_damage(gen.rng, line) if (path, i) in broken else line for i, line in enumerate(tr.lines())]
        files[path] = b"\n".join(lines) + b"\n"
    indent = orjson.OPT_INDENT_2
    for name, payloads in captured.items():
        files[dest / "hook-logs" / "shop-api" / f"{name}.json"] = orjson.dumps(payloads, option=indent)
    traj = trajectory(gen, clock)
    swe = dest / "mini-swe-agent"
    files[swe / f"{traj['instance_id']}.traj.json"] = orjson.dumps(traj, option=indent)
    files[swe / "results_summary.json"] = orjson.dumps({"total": 1, "passed": 1, "failed": 0, "instances": [
        {"instance_id": traj["instance_id"], "resolved": True, "patch_applied": True}]}, option=indent)
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return sorted(files)
