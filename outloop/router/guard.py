"""Per-session memory of the router and the two levers that act on turns, all pure.

* :class:`SessionState` keeps the session's last tool calls (command, digest of what each returned,
  whether the router denied it). The router records a call when its PreToolUse arrives and its
  result when its PostToolUse arrives.
* :func:`loop_guard`: the same command run again and again with an identical result. With the
  default threshold 3, a command whose last two runs in a row (no other tool call between them)
  returned byte-identical output is denied on its third run, with a reason that says how many times
  it ran, what it returned and what to do instead; a retry after that deny is denied again. A run
  whose output differed, a call still running, or any other tool call in between breaks the
  streak, so the guard never fires when the output changed.
* :func:`wait_advice`: a session that alternates sleeps with the same status check (``sleep 30``
  then ``gh run view``, twice, or ``sleep 30 && gh run view`` twice) is advised ``outloop wait``.
  Such polls are advised, never denied: waiting for a change is legitimate.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections import deque
from dataclasses import dataclass, field

from outloop.agents.rereads import ReadMemory

MAX_STEPS = 32  # tool calls a session state keeps
_SLEEP = re.compile(r"^\s*sleep\s+[0-9.]+[smh]?\s*$")
_SLEEP_THEN = re.compile(r"^\s*sleep\s+[0-9.]+[smh]?\s*(?:&&|;)\s*(?P<rest>.+)$", re.S)


@dataclass
class Step:
    """One tool call of a session as the router saw it."""

    tool_use_id: str | None
    tool: str
    command: str | None
    digest: str | None = None  # of the output, once the PostToolUse arrived
    preview: str = ""  # the output's first line, for the deny reason
    denied: bool = False


@dataclass
class SessionState:
    steps: deque[Step] = field(default_factory=lambda: deque(maxlen=MAX_STEPS))
    last_seen: float = 0.0
    quota_warned: str | None = None  # the quota level this session was last warned at (once per level)
    reads: ReadMemory = field(default_factory=ReadMemory)  # completed Reads, for the unchanged re-read rule
    cache_noted: str | None = None  # the usage id of the last cache break a note was added for
    cache_note_due: bool = False  # a break was found but the answer was a deny: look again next call

    def pre(self, tool_use_id: str | None, tool: str, command: str | None, now: float) -> Step:
        step = Step(tool_use_id, tool, command)
        self.steps.append(step)
        self.last_seen = now
        return step

    def post(self, tool_use_id: str | None, output: str, now: float) -> bool:
        """Attach a result to the call it belongs to; False when that call is not remembered."""
        self.last_seen = now
        for step in reversed(self.steps):
            if tool_use_id and step.tool_use_id == tool_use_id:
                step.digest = output_digest(output)
                step.preview = _preview(output)
                return True
        return False


def output_digest(output: str) -> str:
    return hashlib.blake2b(output.encode("utf-8", "replace"), digest_size=12).hexdigest()


def _preview(output: str, limit: int = 160) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no output"
    text = lines[-1] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def response_text(tool_response: object) -> str:
    """The output of a PostToolUse ``tool_response`` as text (Bash: stdout, then stderr)."""
    if isinstance(tool_response, str):
        return tool_response
    if isinstance(tool_response, dict):
        parts = [tool_response.get(k) for k in ("stdout", "stderr", "output", "content")]
        return "\n".join(p for p in parts if isinstance(p, str))
    return "" if tool_response is None else str(tool_response)


@dataclass(frozen=True)
class Verdict:
    action: str  # deny | advise
    reason: str
    repeats: int


def loop_guard(state: SessionState | None, command: str, threshold: int) -> Verdict | None:
    """Deny the ``threshold``-th run in a row of ``command`` when every earlier run of the streak
    returned the identical output (or was denied for it). None: let it run. ``threshold`` 0 or 1: off."""
    if state is None or threshold < 2:
        return None
    streak: list[Step] = []
    for step in reversed(state.steps):
        if step.tool != "Bash" or step.command != command:
            break
        if step.digest is None and not step.denied:
            return None  # a run still in progress (or whose result never came): its output is unknown
        streak.append(step)
    ran = [s for s in streak if not s.denied]
    if not ran:
        return None
    digests = {s.digest for s in streak if s.digest is not None}
    if len(digests) != 1 or len(streak) < threshold - 1:
        return None
    if _is_poll(command):
        return None  # a wait: advised by wait_advice, never denied
    what = ran[0].preview
    denied = len(streak) - len(ran)
    again = f" (and was denied {denied} time{'s' if denied > 1 else ''} since)" if denied else ""
    reason = (f"outloop loop guard: `{_short(command)}` already ran {len(ran)} times in a row with the "
              f"identical result{again}: {what}. Running it again will return the same. Change something "
              f"first (the code, the command or its arguments), or wait for a change with "
              f"`outloop wait -- {_short(command, 60)}`.")
    return Verdict("deny", reason, len(ran))


def _is_poll(command: str) -> bool:
    return bool(_SLEEP_THEN.match(command))


def _expand(command: str) -> list[str | None]:
    """A command as poll tokens: None for a sleep, the command text for anything else."""
    if _SLEEP.match(command):
        return [None]
    m = _SLEEP_THEN.match(command)
    return [None, m.group("rest").strip()] if m else [command.strip()]


def wait_advice(state: SessionState | None, command: str, rounds: int = 2) -> Verdict | None:
    """Advise ``outloop wait`` when this command continues a sleep/check alternation that already
    ran ``rounds`` times (sleep, check, sleep, check) with the same check, directly before it."""
    if state is None:
        return None
    earlier: list[str | None] = []
    for s in list(state.steps)[-8:]:
        if s.tool != "Bash" or not s.command:
            earlier = []  # another tool between them: not a plain poll loop
            continue
        earlier += _expand(s.command)
    now = _expand(command)
    checks = [t for t in earlier if t is not None]
    if not checks:
        return None
    check = checks[-1]
    if now[0] is not None or any(t is not None and t != check for t in now):
        return None  # the current command is not a sleep (or a sleep then the same check)
    polls = 0
    i = len(earlier) - 1
    while i >= 1 and earlier[i] == check and earlier[i - 1] is None:
        polls += 1
        i -= 2
    if polls < rounds:
        return None
    reason = (f"outloop: this session polls `{_short(check)}` between sleeps ({polls} times so far). "
              f"`outloop wait --every 30 --timeout 1800 -- {_short(check, 80)}` runs the check until its output "
              f"changes and prints only the final state, in one call.")
    return Verdict("advise", reason, polls)


def _short(command: str, limit: int = 120) -> str:
    text = " ".join(command.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_word(command: str) -> str:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return words[0] if words else ""
