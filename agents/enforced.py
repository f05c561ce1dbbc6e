"""Fidelity and net saving of live enforced decisions: the commands the router rewrote to the runner,
measured from the runner's own log against what it printed, in the session's transcript.

When the router enforces, the agent's Bash call runs through the runner, which keeps the whole output
in ``$OUTLOOP_HOME/runs/<run_id>.log`` and prints a compact result ending with the log's path. In the
transcript that call's recorded result *is* the printed text; the footer names the log. So for every
such step of a context's timeline:

- the *raw* text is what the agent would have read without outloop: the log, cut the way Claude Code
  cuts a long Bash output (the first and last halves of ``BASH_MAX_OUTPUT_LENGTH`` characters, 30,000
  by default), so the agent's own truncation is never counted as a saving;
- the *compact* text is the step's recorded result (the runner's own lines included: they are charged);
- fidelity and the saving follow the same rules as shadow replay (:mod:`agents.fidelity`,
  :mod:`agents.savings`), with the agent's real next steps and the real carry of the session.

When the compact result would not have saved tokens the runner prints the output exactly as the command
printed it, with no footer (``outloop.runner.net``). The router names such a run after the tool call
(``--run-id tu-<tool_use_id>``, :func:`outloop.runner.rewrite.run_id_for`), so the step is still found: its
compact text is the raw text itself, and it is measured as saving 0 (never a cost).

These are measurements of what happened (``basis = measured``), with token counts from the calibrated
estimator. A measurement taken while the session goes on is a lower bound of the carry; it is taken
again as the transcript grows. Pure: timeline, a run loader and prices in; measurements out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from outloop.agents.calibration import Estimator
from outloop.agents.fidelity import Fidelity, fidelity
from outloop.agents.pricing import PriceTable
from outloop.agents.savings import Saving, saving
from outloop.agents.shadow import later_texts
from outloop.agents.timeline import Timeline, ToolStep

AGENT_LIMIT = 30_000  # Claude Code's Bash output limit in characters (BASH_MAX_OUTPUT_LENGTH), middle-cut
# the runner's footer (outloop.runner.compact.footer and run.finish): the path of the full log
FOOTER = re.compile(r"^\[outloop\] (?:log|full output \(\d+ lines, \d+ bytes\)): (\S[^\n]*?\.log)[ \t]*$", re.M)


@dataclass(frozen=True)
class RunLog:
    """What the runner kept of one run: its metadata and the raw output as the agent would have read it."""

    run_id: str
    raw: str  # the log's text cut as the agent's own tool would have cut it (see agent_view)
    rule: str | None = None
    family: str | None = None
    kind: str | None = None  # structured | generic | None (printed unchanged)


@dataclass(frozen=True)
class Measured:
    session_id: str
    tool_use_id: str
    run: RunLog
    fidelity: Fidelity
    saving: Saving
    decided_at: str  # when the agent issued the call (its API response's timestamp)


def agent_view(head: str, tail: str, total_chars: int, limit: int = AGENT_LIMIT) -> str:
    """The text the agent's Bash tool would have returned for an output of ``total_chars`` characters
    beginning with ``head`` and ending with ``tail``: all of it when it fits in ``limit``, else the
    first and last ``limit // 2`` characters (Claude Code's middle truncation)."""
    if total_chars <= limit:
        return head
    half = limit // 2
    return head[:half] + "\n" + tail[-half:]


def log_path(output: str | None) -> str | None:
    """The path of the runner's log named in a recorded Bash result, or None (not a runner's result)."""
    if not output or "[outloop] " not in output:
        return None
    found = FOOTER.findall(output)
    return found[-1] if found else None


Locate = Callable[[str], str | None]  # tool_use_id -> the log of the run named after it, if one exists


def enforced_steps(timeline: Timeline, locate: Locate | None = None) -> list[tuple[ToolStep, str, bool]]:
    """The Bash steps whose recorded result is the runner's, with the log each names; with ``locate``,
    also the steps without a footer whose tool call has a named run (printed unchanged: the flag)."""
    out = []
    for step in timeline.steps:
        if step.tool_name != "Bash":
            continue
        path = log_path(step.output)
        if path is not None:
            out.append((step, path, False))
        elif locate is not None and step.tool_use_id and (path := locate(step.tool_use_id)) is not None:
            out.append((step, path, True))
    return out


def measure(timeline: Timeline, load: Callable[[str], RunLog | None], estimator: Estimator,
            prices: PriceTable, locate: Locate | None = None) -> list[Measured]:
    """The measurement of every runner step of ``timeline`` whose log ``load`` still finds (a pruned or
    foreign log: no measurement, never a guess). A run printed unchanged saves exactly 0."""
    out = []
    place = {id(s): i for i, s in enumerate(timeline.steps)}  # steps.index per step was quadratic
    for step, path, unchanged in enforced_steps(timeline, locate):
        run = load(path)
        if run is None:
            continue
        fid = step_fidelity(step, run.raw, later_texts(timeline, step, index=place[id(step)]), unchanged)
        out.append(measured(timeline, step, run, len(run.raw), fid, estimator, prices, unchanged))
    return out


def step_fidelity(step: ToolStep, raw: str, later: list[str], unchanged: bool = False) -> Fidelity:
    """Fidelity of the step's printed result (the recorded one; ``raw`` itself for a run printed
    unchanged) as the stand-in for the run's ``raw`` text."""
    printed = raw if unchanged else step.output or ""
    return fidelity(raw, printed, orjson.dumps(step.tool_input).decode(), later)


def measured(timeline: Timeline, step: ToolStep, run: RunLog, raw_chars: int, fid: Fidelity, estimator: Estimator,
             prices: PriceTable, unchanged: bool = False) -> Measured:
    """The measurement of one runner step whose raw text had ``raw_chars`` characters (only its length
    counts once fidelity is known, so a live measurer need not keep it; a run printed unchanged printed
    exactly that many)."""
    compact: str | int = raw_chars if unchanged else step.output or ""
    sv = saving(timeline, step, compact, fid, estimator, prices, raw_chars=raw_chars)
    at = timeline.calls[step.issued_by].timestamp if step.issued_by < len(timeline.calls) else None
    return Measured(timeline.session_id, step.tool_use_id, run, fid, sv, at or "1970-01-01T00:00:00Z")
