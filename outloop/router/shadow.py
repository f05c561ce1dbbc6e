"""The router's decision on recorded sessions: the ``decide(step, timeline)`` a shadow replay takes
(:mod:`outloop.agents.shadow`), made by the same pure function as live decisions.

Each recorded tool call is decided as if every rule were enforced (shadow evaluates what enforcing
would do), with the session's memory rebuilt from the recorded steps before it (their commands and
outputs), so the loop guard and the wait advice see what they would have seen live. Pattern
confidences are passed in (for instance those of ``operation_patterns`` after the replay); without
them no structured summariser passes its threshold and the generic rule decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from outloop.agents.shadow import ShadowDecision
from outloop.agents.timeline import Timeline, ToolStep
from outloop.router.decide import decide
from outloop.router.guard import MAX_STEPS, SessionState
from outloop.router.rules import GUARD, RuleSet, build

ShadowDecide = Callable[[ToolStep, Timeline], ShadowDecision | None]


def enforced(rules: RuleSet | None = None) -> RuleSet:
    """The rules with every rule, and the loop guard, in enforce mode."""
    base = rules or build({})
    overrides = {r.name: {"mode": "enforce"} for r in base.rules if r.builtin}
    user = {"rules": overrides, "guard_mode": "enforce", "loop_guard": base.loop_guard,
            "exclude": list(base.exclude), "rewrite_permission": base.rewrite_permission}
    return build(user, base=[r for r in base.rules if r.builtin])


def memory_before(timeline: Timeline, step: ToolStep) -> SessionState:
    """The session memory the router would hold when ``step`` is asked: the steps before it."""
    state = SessionState()
    try:
        index = timeline.steps.index(step)
    except ValueError:
        index = len(timeline.steps)
    for prior in timeline.steps[max(0, index - MAX_STEPS):index]:
        command = prior.tool_input.get("command") if prior.tool_name == "Bash" else None
        state.pre(prior.tool_use_id, prior.tool_name, command if isinstance(command, str) else None, 0.0)
        if prior.output is not None:
            state.post(prior.tool_use_id, prior.output, 0.0)
    return state


def shadow_decider(rules: RuleSet | None = None, patterns: Mapping[str, int] | None = None,
                   sizes: Mapping[str, float] | None = None) -> ShadowDecide:
    """``decide(step, timeline)`` for :func:`outloop.agents.shadow.route_timeline`: None for a pass."""
    effective = enforced(rules)
    confidences = patterns or {}

    def decide_step(step: ToolStep, timeline: Timeline) -> ShadowDecision | None:
        d = decide(step.tool_name, step.tool_input, None, memory_before(timeline, step), effective, confidences, 0.0,
                   sizes=sizes)
        if d.action == "pass" or d.rule is None:
            return None
        kind = d.kind or ("guard" if d.rule in (GUARD, "wait-advice") else "generic")
        return ShadowDecision(rule=d.rule, rule_version=d.rule_version or "", kind=kind, action=d.action,
                              signature=d.signature or "", category=d.category or "", family=d.family,
                              reason=d.reason)

    return decide_step
