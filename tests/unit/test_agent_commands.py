"""Routing on commands outside the dev traces: a written set of the Bash commands coding agents run.

``data/agent_commands.json`` holds 549 commands written for this test (none copied from traces-dev or
from ``labelled_commands.json``) across Python, JS/TS, Go, Rust, Swift, JVM, Ruby, PHP, Elixir, .NET,
C/C++, task runners, project scripts, containers, waits, fetches, git and the shell. Each carries the
category a reviewer gives it and ``structured_ok``: whether a structured runner may safely take it (a
deterministic test/build/lint/typecheck/format or git read, in the foreground, not a wait or a loop, not
in a container, its output not piped into something that changes what it prints, not in a file).

Routing trusts the routable classes (test, build, lint, typecheck, format, install): the set measures
category accuracy and the precision of those classes with floors, and checks that the router never
takes a command a structured runner must not take, in enforce mode at full pattern confidence.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from outloop.agents.signatures import command_signature
from outloop.router.decide import decide
from outloop.router.rules import build, builtin_rules

DATA = Path(__file__).resolve().parent / "data"
ROWS = json.loads((DATA / "agent_commands.json").read_text())
TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces-dev"
ROUTABLE = ("test", "build", "lint", "typecheck", "format", "install")
ENFORCE = build({"rules": {r.name: {"mode": "enforce"} for r in builtin_rules()}})


def _category(command: str) -> str:
    return command_signature(command, cache=None).category


def _structured(command: str) -> bool:
    """Whether the router hands the command to a structured summariser (enforce, pattern confidence 100)."""
    sig = command_signature(command, cache=None)
    d = decide("Bash", {"command": command}, "/repo", None, ENFORCE, {sig.signature: 100}, 0.0)
    return d.action in ("rewrite", "advise") and d.kind == "structured"


def test_the_set_is_big_varied_and_its_own() -> None:
    commands = [r["command"] for r in ROWS]
    assert len(commands) >= 300 and len(set(commands)) == len(commands)
    assert {r["category"] for r in ROWS} >= {*ROUTABLE, "vcs", "search", "read", "edit", "run", "env", "other"}
    assert Counter(r["structured_ok"] for r in ROWS).keys() == {True, False}
    labelled = {r["command"] for r in json.loads((DATA / "labelled_commands.json").read_text())}
    assert not labelled & set(commands)  # independent of the labelled set the rules were tuned on


def _trace_commands() -> set[str]:
    commands: set[str] = set()
    for f in TRACES.rglob("*.jsonl"):
        for line in f.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # damaged lines exist in traces-dev
            content = (record.get("message") or {}).get("content") if isinstance(record, dict) else None
            for block in content if isinstance(content, list) else []:
                if isinstance(block, dict) and block.get("name") == "Bash":
                    commands.add(str((block.get("input") or {}).get("command")))
    for f in TRACES.rglob("pre_tool_use.json"):
        payloads = json.loads(f.read_text())
        commands |= {str(p["tool_input"].get("command")) for p in payloads if p.get("tool_name") == "Bash"}
    return commands


@pytest.mark.traces
def test_no_command_comes_from_the_dev_traces() -> None:
    if not TRACES.is_dir():
        pytest.skip(f"traces-dev not present at {TRACES}")
    trace = _trace_commands()
    assert len(trace) > 300
    assert not trace & {r["command"] for r in ROWS}


def test_category_accuracy_and_routable_precision() -> None:
    got = [(r, _category(r["command"])) for r in ROWS]
    accuracy = sum(r["category"] == g for r, g in got) / len(got)
    taken = [(r, g) for r, g in got if g in ROUTABLE]
    precision = sum(r["category"] == g for r, g in taken) / len(taken)
    wrong = [(r["category"], g, r["command"][:80]) for r, g in taken if r["category"] != g]
    print(f"category accuracy {accuracy:.3f} (n={len(got)}); routable precision {precision:.3f} (n={len(taken)})")
    assert accuracy >= 0.90, [(r["category"], g, r["command"][:80]) for r, g in got if r["category"] != g]
    assert precision >= 0.95, wrong
    assert len(taken) >= 200  # conservative, not empty: most test/build/lint commands keep their class


def test_no_structured_decision_where_a_structured_runner_must_not_act() -> None:
    unsafe = [r["command"] for r in ROWS if not r["structured_ok"] and _structured(r["command"])]
    assert not unsafe, unsafe


def test_structured_routing_still_takes_a_good_share_of_the_safe_commands() -> None:
    safe = [r["command"] for r in ROWS if r["structured_ok"]]
    taken = sum(_structured(c) for c in safe)
    print(f"structured decisions on safe commands: {taken}/{len(safe)}")
    assert taken / len(safe) >= 0.40  # formats, xcodebuild, JVM and others have no structured family yet
