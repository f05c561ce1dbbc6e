"""The router's decision, a pure function: one PreToolUse call -> pass, rewrite, advise or deny.

:func:`decide` takes the tool call, the session's memory, the rules, the pattern confidences and
the time, and returns a :class:`Decision` with its rule, rule version, mode, kind, confidence and
reason. It uses the same signature function as the patterns. Never rewritten: anything but a Bash
command, a command run in the background (``run_in_background`` or ``&``), a wait or a loop
(``sleep``, ``while``, ``until``, ``for``), an interactive program (editors, pagers, REPLs, ``-i``,
``--pdb``, watch modes, ``vitest`` without ``run``, servers, ``tail -f``), a command whose output
already goes to a file, a command that changes the shell's own state (``cd``, ``export``,
``source``: the agent's shell keeps it), a command already wrapped, an excluded signature, and
anything whose side-effect class is destructive, unknown or network. A structured family summariser
additionally needs the pattern's confidence at or above the rule's threshold, and output that reaches
the agent as the tool printed it (piped at most into ``tail``, ``head`` or ``cat``) from a command run
here (not through ``docker``, ``kubectl`` or ``ssh``); otherwise the generic compactor may take it.

:func:`answer` turns a decision into the JSON a PreToolUse hook prints (None: print nothing).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from outloop.agents.categories import RO, WR
from outloop.agents.rereads import Stamp, unchanged_reread
from outloop.agents.rereads import reason as reread_reason
from outloop.agents.signatures import Signature, signature_of
from outloop.router.guard import SessionState, loop_guard, wait_advice
from outloop.router.rules import REREAD, Rule, RuleSet, effective_mode
from outloop.runner.rewrite import is_wrapped, runner_command

DETERMINISTIC = (RO, WR)  # the side-effect classes a replacement may act on
# A signature whose outputs average fewer tokens than this (a few lines) is not rewritten: the runner
# would print its output exactly (it compacts only past 100 lines or 2,500 tokens, and only when that
# saves tokens), so the rewrite saves nothing and adds the runner's start. (When the runner still added
# its log line, git status, git log and short go builds routed cost 41k tokens net on the dev traces.)
SHORT_OUTPUT_TOKENS = 100
_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"}
_WRAPPERS = {"sudo", "env", "time", "nice", "nohup", "command", "exec", "stdbuf", "ionice", "timeout", "xargs"}
_EDITORS = {"vim", "vi", "nvim", "nano", "emacs", "pico", "ed", "micro", "joe", "kak", "hx"}
_PAGERS = {"less", "more", "most", "man", "info", "pg"}
_FULLSCREEN = {"top", "htop", "btop", "atop", "watch", "tmux", "screen", "ssh", "mosh", "telnet", "ftp", "sftp",
               "fzf", "tig", "lazygit", "ranger", "mc", "nmtui", "gdb", "lldb", "pdb", "ipython", "bpython",
               "irb", "pry", "psql", "mysql", "sqlite3", "mongo", "mongosh", "redis-cli", "nodemon", "ngrok"}
_REPLS = {"python", "python3", "node", "deno", "bun", "ruby", "ghci", "lua", "R", "julia", "scala", "clojure",
          "erl", "iex", "sbcl", "guile", "php", "perl"}
_SERVER_WORDS = {"serve", "server", "runserver", "dev", "start", "http.server", "uvicorn", "gunicorn", "hypercorn",
                 "watch", "preview", "storybook"}
_FOLLOWERS = {"tail", "journalctl", "logs", "less"}
_SHELL_STATE = {"cd", "pushd", "popd", "export", "source", ".", "alias", "unalias", "unset", "set", "ulimit",
                "umask", "shopt", "declare", "typeset", "eval", "exec"}
_LOOPS = {"while", "until", "for", "select", "do"}
_WAITS = {"sleep", "wait", "inotifywait", "fswatch", "entr"}
# Pipe consumers that only cut the output (the summariser still reads the tool's own lines); any other
# consumer (grep, wc, jq, sort, tee, xargs, awk, ...) changes what the command prints.
_KEEPING = {"tail", "head", "cat"}
# Programs that run the command in a container or on another machine: its side effects and its output
# are not the local tool's, so no structured runner takes them.
_ELSEWHERE = {"docker", "docker-compose", "podman", "nerdctl", "kubectl", "oc", "ssh", "vagrant", "lxc", "multipass"}
_JS_LAUNCHERS = {"npx", "bunx", "pnpx", "yarn", "pnpm", "bun"}


@dataclass(frozen=True)
class Decision:
    action: str  # pass | rewrite | advise | deny
    reason: str
    mode: str = "shadow"  # the mode it was decided in; shadow and pass answer nothing
    rule: str | None = None
    rule_version: str | None = None
    kind: str | None = None  # structured | generic (the rule's), None when no rule took it
    family: str | None = None
    confidence: int | None = None
    signature: str | None = None
    category: str | None = None
    side_effect: str | None = None
    updated_input: dict[str, Any] | None = None
    context: str | None = None
    permission: str = "allow"  # for an answered rewrite: allow, or ask (the user file's rewrite_permission)
    extra: dict[str, Any] = field(default_factory=dict)


def _words(command: str) -> list[str] | None:
    lex = shlex.shlex(command, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    try:
        return list(lex)
    except ValueError:
        return None


def _segments(words: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for w in words:
        if w in _SEPARATORS:
            out.append([])
        else:
            out[-1].append(w)
    return [s for s in out if s]


def _program(segment: list[str]) -> tuple[str, list[str]]:
    """The segment's main program (basename) and its arguments, past assignments and wrappers."""
    i = 0
    while i < len(segment) and ("=" in segment[i] and not segment[i].startswith("-")):
        i += 1
    while i < len(segment) and os.path.basename(segment[i]) in _WRAPPERS:
        i += 1
        while i < len(segment) and (segment[i].startswith("-") or segment[i][:1].isdigit()):
            i += 1
    if i >= len(segment):
        return "", []
    return os.path.basename(segment[i]), segment[i + 1:]


def interactive(words: list[str]) -> str | None:
    """Why the command needs a terminal or never ends (None when it does not)."""
    for seg in _segments(words):
        prog, args = _program(seg)
        flags = set(args)
        if prog in _EDITORS or prog in _PAGERS or prog in _FULLSCREEN:
            return f"{prog} is interactive"
        if prog in _REPLS and not [a for a in args if not a.startswith("-")] and "-c" not in flags:
            return f"{prog} without a script is a REPL"
        if flags & {"-i", "--interactive", "-it", "-ti", "--tty"} and prog not in ("sed", "grep", "rg", "ruff"):
            return f"{prog} {sorted(flags & {'-i', '--interactive', '-it', '-ti', '--tty'})[0]} is interactive"
        if any(a.startswith("--watch") for a in args) or (prog in ("tsc", "jest", "vitest", "mocha") and "-w" in flags):
            return "a watch mode never ends"
        if "--pdb" in flags:
            return f"{prog} --pdb stops in a debugger"
        if _vitest_watches(prog, args):
            return "vitest without run starts its watch mode"
        if prog in _FOLLOWERS and flags & {"-f", "-F", "--follow"}:
            return f"{prog} -f never ends"
        if set(args[:3]) & _SERVER_WORDS or prog in _SERVER_WORDS:
            return "a server or dev mode never ends"
    return None


def _vitest_watches(prog: str, args: list[str]) -> bool:
    """``vitest`` (or ``npx vitest``) without ``run``/``--run`` watches where a terminal is attached."""
    if prog in _JS_LAUNCHERS and args[:1] == ["vitest"]:
        prog, args = "vitest", args[1:]
    if prog != "vitest":
        return False
    pos = [a for a in args if not a.startswith("-")]
    return pos[:1] not in (["run"], ["bench"]) and "--run" not in args


def waits_or_background(words: list[str]) -> str | None:
    """Why the command is a wait, a loop or a background job (None when it is none of them): such a
    command is about time, not about the tool it mentions, and is never rewritten."""
    if "&" in words:
        return "runs in the background (&)"
    for seg in _segments(words):
        if seg[0] in _LOOPS:
            return f"a `{seg[0]}` loop polls or repeats"
        prog, _ = _program(seg)
        if prog in _WAITS:
            return f"it waits (`{prog}`)"
    return None


def unstructured(words: list[str]) -> str | None:
    """Why no structured summariser may take the command even though its signature matches one (None
    when nothing forbids it): its output is piped into something that changes what it prints, or it
    runs in a container or on another machine. The generic compactor may still take it."""
    after_pipe = False
    for i, w in enumerate(words):
        if w in ("|", "|&"):
            after_pipe = True
        elif w in _SEPARATORS:
            after_pipe = False
        elif after_pipe and (i == 0 or words[i - 1] in ("|", "|&")):
            prog, _ = _program(words[i:i + 1])
            if prog not in _KEEPING:
                return f"its output goes through `{w}`, which changes what it prints"
    for seg in _segments(words):
        prog, _ = _program(seg)
        if prog in _ELSEWHERE:
            return f"it runs through `{prog}`, in a container or on another machine"
    return None


def to_file(words: list[str]) -> bool:
    """Whether standard output goes to a file (``>``, ``>>``, ``&>``; not ``2>``, not ``>&2``)."""
    for i, w in enumerate(words):
        if w in (">", ">>", "&>", "&>>", ">|"):
            if w in (">", ">>", ">|") and i > 0 and words[i - 1] == "2":
                continue
            return True
        if w == ">&" and i + 1 < len(words) and not words[i + 1].isdigit() and words[i + 1] != "-":
            return True
    return False


def changes_shell(words: list[str]) -> str | None:
    for seg in _segments(words):
        if seg[0] in _SHELL_STATE:
            return seg[0]
    return None


def _blocked(tool_input: Mapping[str, Any], command: str) -> str | None:
    """Why this command must run exactly as written (None when nothing forbids a rewrite)."""
    if tool_input.get("run_in_background"):
        return "runs in the background"
    if is_wrapped(command):
        return "already goes through the runner"
    words = _words(command)
    if words is None:
        return "could not be parsed"
    why = interactive(words) or waits_or_background(words)
    if why:
        return why
    if to_file(words):
        return "its output already goes to a file"
    state = changes_shell(words)
    if state:
        return f"`{state}` changes the shell's state, which the agent's shell keeps"
    return None


def decide(tool_name: str, tool_input: Mapping[str, Any] | None, cwd: str | None, session: SessionState | None,
           rules: RuleSet, patterns: Mapping[str, int], now: float,
           rule_stats: Mapping[str, tuple[int, float | None]] | None = None,
           sizes: Mapping[str, float] | None = None, stamp: Stamp | None = None) -> Decision:
    """The decision for one PreToolUse call. ``patterns``: signature -> confidence (0-100);
    ``rule_stats``: rule -> (decisions with a measured fidelity, mean fidelity); ``now`` is not used
    by the rules yet (kept so that time-dependent rules stay pure); ``sizes``: signature -> the average
    output tokens of its past calls (unknown signatures are not held back); ``stamp``: for a Read, the
    file's size and modification time now (None: unknown, the re-read rule never applies)."""
    inp: Mapping[str, Any] = tool_input if isinstance(tool_input, Mapping) else {}
    if tool_name == "Read":
        return _reread(session, inp, cwd, rules, stamp, now)
    if tool_name != "Bash":
        return Decision("pass", f"{tool_name or 'this tool'} is not a shell command")
    command = inp.get("command")
    if not isinstance(command, str) or not command.strip():
        return Decision("pass", "no command")
    sig = signature_of("Bash", {"command": command})
    guarded = _guard(session, command, rules, sig)
    if guarded is not None:
        return guarded
    return _route(inp, command, sig, rules, patterns, rule_stats or {}, sizes or {})


def _with_sig(d: Decision, sig: Signature, confidence: int | None = None) -> Decision:
    return replace(d, signature=sig.signature, category=sig.category, side_effect=sig.side_effect,
                   confidence=confidence)


def _reread(session: SessionState | None, inp: Mapping[str, Any], cwd: str | None, rules: RuleSet,
            stamp: Stamp | None, now: float) -> Decision:
    """The unchanged re-read rule (``agents.rereads``): a deny (advice in ``advise``) for a Read whose
    lines this session already read from the file as it is now, with no compaction since."""
    seen = unchanged_reread(session.reads if session is not None else None, inp, cwd, stamp)
    if seen is None:
        return Decision("pass", "not an unchanged re-read")
    path = str(inp.get("file_path"))
    why = reread_reason(path, seen, now)
    mode = rules.reread_mode
    action = "advise" if mode == "advise" else "deny"
    return Decision(action, why, mode, REREAD, rules.version, context=why if action == "advise" else None,
                    extra={"read_by": seen.tool_use_id})


def _guard(session: SessionState | None, command: str, rules: RuleSet, sig: Signature) -> Decision | None:
    verdict = loop_guard(session, command, rules.loop_guard) or wait_advice(session, command)
    if verdict is None:
        return None
    mode = rules.guard_mode
    action = verdict.action
    if action == "deny" and mode == "advise":
        action = "advise"
    name = "loop-guard" if verdict.action == "deny" else "wait-advice"
    d = Decision(action, verdict.reason, mode, name, rules.version, None, None,
                 context=verdict.reason if action == "advise" else None, extra={"repeats": verdict.repeats})
    return _with_sig(d, sig)


def _route(inp: Mapping[str, Any], command: str, sig: Signature, rules: RuleSet, patterns: Mapping[str, int],
           stats: Mapping[str, tuple[int, float | None]], sizes: Mapping[str, float]) -> Decision:
    confidence = int(patterns.get(sig.signature, 0) or 0)
    matching = rules.matching(sig.signature, sig.category)
    if not matching:
        return _with_sig(Decision("pass", f"no rule takes {sig.signature}"), sig, confidence)
    first = matching[0]
    why = _blocked(inp, command)
    if why is None and rules.excluded(sig.signature):
        why = f"{sig.signature} is excluded"
    if why is None and sig.side_effect not in DETERMINISTIC:
        why = f"its side effect is {sig.side_effect}: only read-only and file-writing commands are replaced"
    typical = sizes.get(sig.signature)
    if why is None and typical is not None and typical < SHORT_OUTPUT_TOKENS:
        why = (f"its output is typically short ({typical:.0f} tokens on average < {SHORT_OUTPUT_TOKENS}): the runner "
               "would print it exactly: nothing to save")
    if why is not None:
        return _with_sig(_rule_decision(first, "pass", f"not rewritten: {why}", stats), sig, confidence)
    chosen: Rule | None = None
    note = ""
    words = _words(command) or []
    elsewhere = unstructured(words)
    for rule in matching:
        if rule.kind == "generic":
            chosen = rule
            break
        if elsewhere is not None:
            note = f"no structured summariser: {elsewhere}; "
            continue
        if confidence >= rule.threshold:
            chosen = rule
            break
        note = f"pattern confidence {confidence} < {rule.threshold} for the {rule.family} summariser; "
    if chosen is None:
        return _with_sig(_rule_decision(first, "pass", note.rstrip("; "), stats), sig, confidence)
    runner = runner_command(command, chosen.family, chosen.name)
    reason = f"{note}{sig.signature} -> {chosen.family} ({chosen.kind})"
    d = _rule_decision(chosen, "rewrite", reason, stats)
    if d.mode == "advise":
        context = (f"outloop: `{command if len(command) < 100 else command[:97] + '...'}` has a compact runner "
                   f"({chosen.family}): `outloop run -- <command>` prints the result with every failure kept and "
                   f"saves the full log.")
        d = replace(d, action="advise", context=context)
    else:
        d = replace(d, updated_input={**inp, "command": runner}, permission=rules.rewrite_permission)
    return _with_sig(d, sig, confidence)


def _rule_decision(rule: Rule, action: str, reason: str, stats: Mapping[str, tuple[int, float | None]]) -> Decision:
    n, fidelity = stats.get(rule.name, (0, None))
    mode = effective_mode(rule, n, fidelity)
    if mode != rule.mode:
        reason += f" (demoted to shadow: fidelity {fidelity:.2f} < {rule.promote_at})"
    return Decision(action, reason, mode, rule.name, rule.version, rule.kind, rule.family)


def answer(d: Decision) -> dict[str, Any] | None:
    """The PreToolUse hook's JSON answer, or None (print nothing: the call proceeds unchanged)."""
    if d.mode == "shadow" or d.action == "pass":
        return None
    out: dict[str, Any] = {"hookEventName": "PreToolUse"}
    if d.action == "deny":
        out.update(permissionDecision="deny", permissionDecisionReason=d.reason)
    elif d.action == "rewrite" and d.mode == "enforce" and d.updated_input is not None:
        out.update(permissionDecision=d.permission, updatedInput=d.updated_input,
                   permissionDecisionReason=f"outloop: routed through the {d.family} runner (rule {d.rule})")
    elif d.action == "advise" and d.context:
        out["additionalContext"] = d.context
    else:
        return None
    return {"hookSpecificOutput": out}
