"""What the router component holds in memory and how one hook payload is answered, apart from sockets.

:class:`Router` keeps the rules (reloaded when the user file changes), the pattern confidences and
per-rule fidelity (from the snapshot the sink writes after each pattern refresh) and every
session's recent tool calls. :meth:`Router.handle` takes one hook payload (bytes, as the hook shim
read them) and returns the bytes the shim prints (empty: nothing) and, for a PreToolUse call, the
decision event to record. A PostToolUse payload only feeds the session's memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from outloop.agents.cachenote import break_note, idle_break, tail_lines
from outloop.agents.context import CACHE_5M
from outloop.agents.quota_risk import QuotaConfig, hook_answer
from outloop.agents.rereads import EDIT_TOOLS, Stamp, stamp_of
from outloop.router.decide import Decision, answer, decide
from outloop.router.guard import SessionState, response_text
from outloop.router.rules import RulesError, RuleSet, build, load, read_user
from outloop.runner.rewrite import run_id_for, with_run_id
from outloop.sinks.snapshot import snapshot_path

__all__ = ["Router", "snapshot_path"]

log = logging.getLogger("outloop.router")

MAX_SESSIONS = 2000
PING = b'{"outloop":"ping"}'


def decision_id(session_id: str, tool_use_id: str | None, now_ns: int) -> str:
    """Stable for one tool call (a retried hook records the same decision); unique otherwise."""
    key = f"{session_id}\0{tool_use_id}" if tool_use_id else f"{session_id}\0{now_ns}\0{os.urandom(8).hex()}"
    return "rd:" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


class Router:
    def __init__(self, rules_path: Path, snapshot: Path | None) -> None:
        self.rules_path = rules_path
        self.snapshot = snapshot
        self.rules: RuleSet = build({})
        self.rules_error: str | None = None
        self.patterns: dict[str, int] = {}
        self.sizes: dict[str, float] = {}  # signature -> average output tokens (the snapshot's)
        self.rule_stats: dict[str, tuple[int, float | None]] = {}
        self.sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.quota: dict[str, Any] | None = None  # the latest throttle decision (from the snapshot)
        self.quota_config = _quota_config()
        self._lock = threading.Lock()
        self._stamps: dict[str, tuple[float, int] | None] = {}
        self.counters = {"decisions": 0, "answered": 0, "posts": 0, "errors": 0, "reloads": 0}
        self.refresh(force=True)

    # -- inputs that change while it runs ------------------------------------------------------
    def _changed(self, path: Path | None) -> bool:
        if path is None:
            return False
        try:
            st = path.stat()
            stamp: tuple[float, int] | None = (st.st_mtime, st.st_size)
        except OSError:
            stamp = None
        if self._stamps.get(str(path), ()) == stamp:
            return False
        self._stamps[str(path)] = stamp
        return True

    def refresh(self, force: bool = False) -> bool:
        """Reload the rules file and the snapshot when they changed; True when anything did."""
        changed = False
        if self._changed(self.rules_path) or force:
            try:
                rules = load(self.rules_path)
                self.rules, self.rules_error = rules, None
                changed = True
            except (RulesError, OSError) as exc:  # keep deciding with the last good rules
                self.rules_error = str(exc)
                log.error("router: rules not reloaded: %s", exc)
        if self._changed(self.snapshot) or (force and self.snapshot):
            self._load_snapshot()
            changed = True
        if changed:
            self.counters["reloads"] += 1
        return changed

    def _load_snapshot(self) -> None:
        assert self.snapshot is not None
        try:
            data = orjson.loads(self.snapshot.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return
        patterns = data.get("patterns") if isinstance(data, dict) else None
        stats = data.get("rules") if isinstance(data, dict) else None
        if isinstance(patterns, dict):
            self.patterns = {str(k): int(v) for k, v in patterns.items() if isinstance(v, int | float)}
        sizes = data.get("sizes") if isinstance(data, dict) else None
        if isinstance(sizes, dict):
            self.sizes = {str(k): float(v) for k, v in sizes.items() if isinstance(v, int | float)}
        if isinstance(stats, dict):
            self.rule_stats = {str(k): (int(v.get("decisions", 0)), v.get("fidelity"))
                               for k, v in stats.items() if isinstance(v, dict)}
        quota = data.get("quota") if isinstance(data, dict) else None
        self.quota = quota if isinstance(quota, dict) else None

    # -- one payload ---------------------------------------------------------------------------
    def session(self, session_id: str, now: float) -> SessionState:
        state = self.sessions.get(session_id)
        if state is None:
            state = self.sessions[session_id] = SessionState(last_seen=now)
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
        else:
            self.sessions.move_to_end(session_id)
        return state

    def handle(self, raw: bytes, now: float | None = None) -> tuple[bytes, dict[str, Any] | None]:
        """(bytes to print, the decision event's data or None). Never raises on bad input."""
        started = time.perf_counter()
        now = time.time() if now is None else now
        if raw.strip() == PING:
            return b"pong", None
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return b"", None
        if not isinstance(payload, dict) or not isinstance(payload.get("session_id"), str):
            return b"", None
        event = payload.get("hook_event_name")
        with self._lock:
            if event == "PostToolUse":
                self.counters["posts"] += 1
                state = self.session(payload["session_id"], now)
                state.post(_str(payload.get("tool_use_id")), response_text(payload.get("tool_response")), now)
                _remember(state, payload, now)
                return b"", None
            if event == "PreCompact":  # the context is rebuilt: nothing read before is in it any more
                self.session(payload["session_id"], now).reads.compacted()
                return b"", None
            if event != "PreToolUse":
                return b"", None
            reply, record = self._pre(payload, now, started)
            if payload.get("outloop") == "decide":  # an ADW's question (OutloopClient.route): the whole decision
                answered = orjson.loads(reply) if reply else None
                return orjson.dumps({"decision": record, "answer": answered}), record
            return reply, record

    def _pre(self, payload: dict[str, Any], now: float, started: float) -> tuple[bytes, dict[str, Any] | None]:
        session_id = payload["session_id"]
        tool = _str(payload.get("tool_name")) or ""
        raw_input = payload.get("tool_input")
        tool_input: dict[str, Any] = raw_input if isinstance(raw_input, dict) else {}
        known = self.sessions.get(session_id)
        last_seen = known.last_seen if known is not None else None
        state = self.session(session_id, now)
        stamp = None
        if tool == "Read":
            stamp = _stamp(tool_input, _str(payload.get("cwd")))
            state.reads.pre_read(_str(payload.get("tool_use_id")), tool_input, _str(payload.get("cwd")), stamp)
        d = decide(tool, tool_input, _str(payload.get("cwd")), state, self.rules, self.patterns, now,
                   self.rule_stats, self.sizes, stamp)
        command = tool_input.get("command") if tool == "Bash" else None
        step = state.pre(_str(payload.get("tool_use_id")), tool, command if isinstance(command, str) else None, now)
        out = _named_run(answer(d), _str(payload.get("tool_use_id")))
        out, d = self._with_quota(out, d, tool, state, now)
        out, d = self._with_cache_note(out, d, payload, state, last_seen, now)
        if out is not None and d.action == "deny":
            step.denied = True
            if state.steps and len(state.steps) > 1:  # a deny keeps the digest it denied for
                step.digest = state.steps[-2].digest
        self.counters["decisions"] += 1
        self.counters["answered"] += out is not None
        reply = orjson.dumps(out) + b"\n" if out is not None else b""
        latency = (time.perf_counter() - started) * 1000.0
        return reply, decision_record(d, payload, now, latency, answered=out is not None)

    def _with_quota(self, out: dict[str, Any] | None, d: Decision, tool: str, state: SessionState,
                    now: float) -> tuple[dict[str, Any] | None, Decision]:
        """The quota's part of the answer (``agents.quota_risk.hook_answer``): a one-line warning at high
        risk, once per session and level; at critical, with OUTLOOP_QUOTA_DENY=1, a deny of expensive
        tools. The decision recorded says so."""
        merged, did = hook_answer(out, self.quota, tool, self.quota_config, datetime.fromtimestamp(now, UTC),
                                  state.quota_warned)
        level = str((self.quota or {}).get("level"))
        if did == "deny" and merged is not None:
            reason = str(merged["hookSpecificOutput"]["permissionDecisionReason"])
            return merged, replace(d, action="deny", mode="enforce", rule="quota", rule_version=None, reason=reason)
        if did == "warn":
            state.quota_warned = level
            return merged, replace(d, reason=f"{d.reason}; quota {level}: warning added to the context")
        return merged, d


    def _with_cache_note(self, out: dict[str, Any] | None, d: Decision, payload: dict[str, Any],
                         state: SessionState, last_seen: float | None, now: float
                         ) -> tuple[dict[str, Any] | None, Decision]:
        """The cache-break note (``cache_note`` in the user file, off by default): on the first PreToolUse
        after a pause longer than the 5-minute cache lifetime (or of a session this router has not seen),
        the transcript's tail says whether the API call just made rebuilt the cache (``idle_break``); if so
        a one-line note is added to the answer. Bounded work (the tail's last 256 KiB) and only after a
        pause; any failure adds nothing."""
        quiet = last_seen is not None and now - last_seen <= CACHE_5M.total_seconds()
        path = _str(payload.get("transcript_path"))
        if not self.rules.cache_note or path is None or (quiet and not state.cache_note_due):
            return out, d
        state.cache_note_due = False
        try:
            found = idle_break(payload["session_id"], tail_lines(path), datetime.fromtimestamp(now, UTC),
                               min_tokens=self.rules.cache_note_min_tokens)
        except Exception as exc:  # noqa: BLE001 - an unreadable transcript adds nothing
            log.debug("router: no cache note: %r", exc)
            return out, d
        if found is None or found.usage_id == state.cache_noted:
            return out, d
        hso = dict((out or {}).get("hookSpecificOutput") or {"hookEventName": "PreToolUse"})
        if hso.get("permissionDecision") == "deny":
            state.cache_note_due = True  # the agent reads the deny's reason; the note waits for the next call
            return out, d
        line = break_note(found)
        hso["additionalContext"] = f"{hso['additionalContext']}\n{line}" if hso.get("additionalContext") else line
        state.cache_noted = found.usage_id
        return {**(out or {}), "hookSpecificOutput": hso}, replace(d, reason=f"{d.reason}; cache break note added")


def _stamp(tool_input: dict[str, Any], cwd: str | None) -> Stamp | None:
    path = tool_input.get("file_path")
    if not isinstance(path, str) or not path:
        return None
    return stamp_of(os.path.join(cwd or "/", path))


def _remember(state: SessionState, payload: dict[str, Any], now: float) -> None:
    """A completed Read is remembered, an edit or write forgets its path (the re-read rule's memory)."""
    raw = payload.get("tool_input")
    tool_input: dict[str, Any] = raw if isinstance(raw, dict) else {}
    tool = _str(payload.get("tool_name")) or ""
    if tool == "Read" or tool in EDIT_TOOLS:
        state.reads.post(tool, _str(payload.get("tool_use_id")), tool_input, payload.get("tool_response"),
                         _str(payload.get("cwd")), _stamp(tool_input, _str(payload.get("cwd"))), now)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _named_run(out: dict[str, Any] | None, tool_use_id: str | None) -> dict[str, Any] | None:
    """A rewrite's runner command names its run after the tool call (``rewrite.run_id_for``): the live
    measurement finds a run the runner printed unchanged (no footer names its log) by the call's id."""
    spec = (out or {}).get("hookSpecificOutput")
    updated = spec.get("updatedInput") if isinstance(spec, dict) else None
    run_id = run_id_for(tool_use_id)
    if not isinstance(spec, dict) or not isinstance(updated, dict) or run_id is None \
            or not isinstance(updated.get("command"), str):
        return out
    spec["updatedInput"] = {**updated, "command": with_run_id(updated["command"], run_id)}
    return out


def _quota_config() -> QuotaConfig:
    try:
        return QuotaConfig.load()
    except (ValueError, OSError) as exc:  # the router keeps answering; the quota part uses no deny
        log.error("router: quota configuration ignored: %s", exc)
        return QuotaConfig()


def decision_record(d: Decision, payload: dict[str, Any], now: float, latency_ms: float,
                    answered: bool | None = None) -> dict[str, Any]:
    """The ``routing.decision`` event's data (schemas.events.RoutingDecision)."""
    session_id = payload["session_id"]
    tool_use_id = _str(payload.get("tool_use_id"))
    raw_input = payload.get("tool_input")
    tool_input: dict[str, Any] = raw_input if isinstance(raw_input, dict) else {}
    command = tool_input.get("command") if isinstance(tool_input.get("command"), str) else None
    return {
        "decision_id": decision_id(session_id, tool_use_id, int(now * 1e9)),
        "tool_use_id": tool_use_id, "session_id": session_id,
        "tool_name": _str(payload.get("tool_name")), "command": command,
        "signature": d.signature, "category": d.category, "side_effect": d.side_effect,
        "rule": d.rule, "rule_version": d.rule_version, "kind": d.kind, "family": d.family,
        "mode": d.mode, "action": d.action, "answered": answer(d) is not None if answered is None else answered,
        "confidence": d.confidence, "latency_ms": round(latency_ms, 3), "reason": d.reason,
        "decided_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
    }


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def registry_records(rules: RuleSet, rules_path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(event type, subject, data) of every rule and every tool the rules route to. ``updated_at``
    is when the rules last changed on disk, so the same rules give the same records (and rows)."""
    from outloop.router.rules import BUILTIN
    from outloop.runner.rewrite import runner_command

    at = datetime.fromtimestamp(max(_mtime(BUILTIN), _mtime(rules_path)), UTC).isoformat().replace("+00:00", "Z")
    out: list[tuple[str, str, dict[str, Any]]] = []
    families: dict[str, list[str]] = {}
    for r in rules.rules:
        families.setdefault(r.family, []).append(r.name)
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in r.as_dict().items()
                if k not in ("examples", "description")}
        out.append(("routing.rule", "routing", {**data, "source": rules.source, "updated_at": at}))
    for family, names in families.items():
        kind = "generic" if family == "generic" else "structured"
        entry = runner_command("COMMAND", family)
        version = hashlib.blake2b(orjson.dumps([family, kind, entry, names]), digest_size=6).hexdigest()
        out.append(("routing.tool", "routing", {"name": family, "kind": kind, "entry": entry, "rules": names,
                                                 "version": version, "updated_at": at}))
    return out


def rules_snapshot(path: Path) -> tuple[RuleSet | None, str | None]:
    """The rules a file gives, or the reason it cannot be used (for ``outloop routes``)."""
    try:
        return build(read_user(path), source=str(path)), None
    except RulesError as exc:
        return None, str(exc)
