"""The build, installer and git families on the real outputs recorded in ../shared/data/traces-dev (Claude
Code transcripts and hook logs, mini-swe-agent trajectories): every Bash call whose command one of them
takes is summarised from its recorded output, without error, and what the summary counts matches the
output (files and hunks of a diff, commits of a log, entries of a status). Skips when the traces are
absent."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from outloop.runner.argv import simple_commands
from outloop.runner.families import detect
from outloop.runner.families.base import Limits
from tests.unit.familykit import lines_of

OURS = {"swift-build", "cargo-build", "go-build", "tsc", "cc", "make", "ruff", "eslint", "mypy", "pip",
        "npm-install", "apt", "git-status", "git-diff", "git-log"}
pytestmark = pytest.mark.traces


def _transcripts(root: Path) -> Iterator[tuple[str, str, bool]]:
    uses: dict[str, str] = {}
    for f in sorted(root.glob("claude-code-transcripts/**/*.jsonl")):
        for raw in f.read_text(errors="replace").splitlines():
            try:
                content = (json.loads(raw).get("message") or {}).get("content")
            except (ValueError, AttributeError):
                continue
            for b in content if isinstance(content, list) else []:
                if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == "Bash":
                    uses[b["id"]] = b["input"].get("command", "")
                elif isinstance(b, dict) and b.get("type") == "tool_result" and b.get("tool_use_id") in uses:
                    out = b.get("content")
                    if isinstance(out, list):
                        out = "\n".join(x.get("text", "") for x in out if isinstance(x, dict))
                    yield uses[b["tool_use_id"]], out or "", bool(b.get("is_error"))


def _trajectories(root: Path) -> Iterator[tuple[str, str, bool]]:
    for f in sorted(root.glob("mini-swe-agent/*.traj.json")):
        msgs = json.loads(f.read_text()).get("messages", [])
        for m, nxt in zip(msgs, msgs[1:], strict=False):
            body = m.get("content") if m.get("role") == "assistant" and isinstance(m.get("content"), str) else ""
            cmd = re.search(r"```bash\n(.*?)```", body, re.S)
            obs = nxt.get("content") if isinstance(nxt.get("content"), str) else ""
            out = re.search(r"<output>\n?(.*?)</output>", obs, re.S)
            code = re.search(r"<returncode>(\d+)</returncode>", obs)
            if cmd and out:
                yield cmd.group(1).strip(), out.group(1), bool(code and code.group(1) != "0")


def _hooks(root: Path) -> Iterator[tuple[str, str, bool]]:
    for f in sorted(root.glob("claude-code-hooks/*/post_tool_use.json")):
        for e in json.loads(f.read_text()):
            resp = e.get("tool_response")
            if e.get("tool_name") == "Bash" and isinstance(resp, dict):
                out = (resp.get("stdout") or "") + (resp.get("stderr") or "")
                yield e.get("tool_input", {}).get("command", ""), out, bool(resp.get("interrupted"))


def recorded_calls(root: Path) -> list[tuple[str, str, str, bool]]:
    """(family, command, output, failed) for every recorded Bash call one of these families takes."""
    calls = []
    for source in (_transcripts, _trajectories, _hooks):
        for command, output, failed in source(root):
            fam = detect(simple_commands(command)).NAME
            if fam in OURS:
                calls.append((fam, command, output, failed))
    return calls


def test_families_on_recorded_outputs(traces: Path) -> None:
    calls = recorded_calls(traces)
    assert len(calls) >= 40, len(calls)  # 35 git status/diff/log calls and an npm install, a go build...
    checked = 0
    for fam_name, command, output, failed in calls:
        fam = detect(simple_commands(command))
        lines = lines_of(output.encode())
        result = fam.summarise(command, iter(lines), 1 if failed else 0, Limits())
        if result is None:
            continue
        checked += 1
        assert result.family == fam_name and result.kind == "structured"
        _counts_match(fam_name, command, lines, result.text)
    assert checked >= 30, checked


def _counts_match(family: str, command: str, lines: list[str], text: str) -> None:
    """What the summary counts is what the output holds."""
    if family == "git-diff":
        files = [ln for ln in lines if ln.startswith("diff --git ")]
        hunks = sum(1 for ln in lines if ln.startswith("@@ "))
        assert f"{len(files)} file{'s' * (len(files) != 1)} changed" in text, (command, text)
        assert f"in {hunks} hunk" in text, (command, text)
        for f in files:
            assert f.rsplit(" b/", 1)[1] in text, (command, f)
    elif family == "git-log":
        commits = sum(1 for ln in lines if re.match(r"^commit [0-9a-f]{7,}", ln))
        assert f"{commits} commit" in text, (command, text)
    elif family == "git-status" and not any(" | " in ln for ln in lines):
        unmerged = [ln for ln in lines if ln.startswith("\tboth ") or ln[:2] in ("UU", "AA", "DD")]
        for ln in unmerged:
            assert ln.strip() in text, (command, ln)
        long_form = any(ln.endswith(":") and ln[:1].isupper() and " " in ln for ln in lines)
        entries = sum(1 for ln in lines if (ln.startswith("\t") if long_form else re.match(r"^[MADRCUT?! ]{2} \S", ln)))
        counted = sum(int(n) for n in re.findall(r"(\d+) (?:staged|not staged|untracked|unmerged|ignored)",
                                                 text.splitlines()[0]))
        # a file both staged and changed again counts in two sections in the short form
        assert counted >= entries, (command, text)
