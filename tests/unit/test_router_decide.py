"""The router's pure decision: table tests over real command shapes, the rules data and the loop guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from outloop.router.decide import Decision, answer, decide
from outloop.router.guard import SessionState, loop_guard, wait_advice
from outloop.router.rules import RulesError, build, builtin_rules, effective_mode, suggestion
from outloop.runner.rewrite import is_wrapped, runner_command

ENFORCE = build({"rules": {r.name: {"mode": "enforce"} for r in builtin_rules()}, "guard_mode": "enforce"})
SHADOW = build({})
CONFIDENT = {"test:pytest:*": 85, "test:npm:test": 90, "build:cargo:build": 75, "vcs:git:status": 95,
             "install:pip:install": 99, "test:pytest:tests/unit": 85}


def _d(command: str, rules=ENFORCE, patterns=CONFIDENT, session=None, **extra):  # type: ignore[no-untyped-def]
    return decide("Bash", {"command": command, **extra}, "/repo", session, rules, patterns, 0.0)


@pytest.mark.parametrize(("command", "action", "rule", "kind"), [
    ("pytest -q", "rewrite", "pytest", "structured"),
    ("python -m pytest tests/unit -x", "rewrite", "pytest", "structured"),
    ("npm test", "rewrite", "js-test", "structured"),
    ("cargo build", "rewrite", "cargo-build", "structured"),
    ("git status", "rewrite", "git-status", "structured"),
    ("pytest -q 2>&1 | tail -30", "rewrite", "pytest", "structured"),
    ("pytest -q 2>/dev/null", "rewrite", "pytest", "structured"),
    ("go test ./...", "rewrite", "generic", "generic"),  # no confidence for the go-test summariser yet
    ("tox", "rewrite", "generic", "generic"),
    ("git log --oneline", "pass", "git-log", "structured"),  # no generic rule for vcs, and no confidence
    ("pip install -r requirements.txt", "pass", "pip", "structured"),  # network
    ("pytest -q > out.txt 2>&1", "pass", "pytest", "structured"),  # output already in a file
    ("pytest -q >> out.txt", "pass", "pytest", "structured"),
    ("cd sub && pytest -q", "pass", "pytest", "structured"),  # the agent's shell keeps the cd
    ("export X=1; pytest -q", "pass", "pytest", "structured"),
    ("pytest -q --watch", "pass", "pytest", "structured"),
    ("npx jest --watchAll", "pass", "js-test", "structured"),
    ("pytest 'unbalanced", "pass", "pytest", "structured"),
    ("rm -rf build", "pass", None, None),
    ("vim notes.txt", "pass", None, None),
    ("python", "pass", None, None),
    ("npm run dev", "pass", None, None),
    ("tail -f app.log", "pass", None, None),
    ("ls -la", "pass", None, None),
])
def test_decision_table(command: str, action: str, rule: str | None, kind: str | None) -> None:
    d = _d(command)
    assert (d.action, d.rule, d.kind) == (action, rule, kind), d.reason
    if action == "rewrite":
        assert d.updated_input is not None and is_wrapped(d.updated_input["command"])
        assert d.updated_input["command"] == runner_command(command, d.family, d.rule)
        assert d.side_effect in ("read-only", "writes files")
    else:
        assert d.updated_input is None and answer(d) is None


def test_never_rewrites_background_wrapped_or_excluded() -> None:
    assert _d("pytest -q", run_in_background=True).action == "pass"
    wrapped = runner_command("pytest -q", "pytest", "pytest")
    assert _d(wrapped).action == "pass" and "runner" in _d(wrapped).reason
    excluded = build({"rules": {"pytest": {"mode": "enforce"}}, "exclude": ["test:pytest:*"]})
    d = _d("pytest -q", rules=excluded)
    assert d.action == "pass" and "excluded" in d.reason
    rule_excluded = build({"rules": {"pytest": {"mode": "enforce", "exclude": ["test:pytest:tests/*"]}}})
    assert _d("pytest tests/unit", rules=rule_excluded).rule != "pytest"


@pytest.mark.parametrize(("command", "why"), [
    ("pytest -q &", "background"),
    ("npm test &", "background"),
    ("sleep 5 && npm test", "waits"),
    ("sleep 2; cargo build", "waits"),
    ("until pytest -x tests/test_flaky.py; do sleep 1; done", "loop"),
    ("for d in a b; do make -C $d test; done", "loop"),
    ("while ! go test ./...; do :; done", "loop"),
    ("pytest --pdb tests/test_x.py", "debugger"),
    ("npx vitest", "watch"),
    ("vitest src/lib", "watch"),
    ("watch -n 10 npm test", "interactive"),
])
def test_waits_loops_background_and_interactive_commands_are_never_rewritten(command: str, why: str) -> None:
    d = decide("Bash", {"command": command}, "/repo", None, ENFORCE, _full(command), 0.0)
    assert d.action == "pass" and d.updated_input is None and answer(d) is None, d.reason
    assert why in d.reason, d.reason


@pytest.mark.parametrize("command", [
    "pytest --collect-only -q | wc -l",
    "pytest -q 2>&1 | grep -c PASSED",
    "pytest -q | tee test-output.txt",
    "go test -json ./... | jq -r .Test",
    "npx jest --listTests | sort",
    "git diff --name-only | xargs ruff check",
    "docker compose exec api pytest -q",
    "kubectl exec deploy/api -- python -m pytest",
])
def test_semantic_pipes_and_containers_get_no_structured_summariser(command: str) -> None:
    d = decide("Bash", {"command": command}, "/repo", None, ENFORCE, _full(command), 0.0)
    assert d.kind != "structured" or d.action == "pass", (d.action, d.rule, d.reason)


@pytest.mark.parametrize(("command", "rule"), [
    ("pytest -q 2>&1 | tail -30", "pytest"),
    ("cargo test 2>&1 | head -100", "cargo-test"),
    ("npx vitest run", "js-test"),
    ("timeout 600 pytest tests/e2e -x", "pytest"),
])
def test_cutting_pipes_and_timeouts_keep_the_structured_summariser(command: str, rule: str) -> None:
    d = decide("Bash", {"command": command}, "/repo", None, ENFORCE, _full(command), 0.0)
    assert (d.action, d.rule, d.kind) == ("rewrite", rule, "structured"), d.reason


@pytest.mark.parametrize("command", [
    "npm run check", "npm run verify", "npm run release", "npm run test:watch", "make deploy", "make migrate",
    "make setup", "make shell", "just release", "cargo bench", "./scripts/check-all.sh", "swift package resolve",
    "go install golang.org/x/tools/cmd/goimports@latest",
])
def test_tasks_and_scripts_of_unclear_purpose_are_not_routed(command: str) -> None:
    d = decide("Bash", {"command": command}, "/repo", None, ENFORCE, _full(command), 0.0)
    assert d.action == "pass" and d.rule is None, (d.signature, d.reason)


def _full(command: str) -> dict[str, int]:
    from outloop.agents.signatures import signature_of

    return {signature_of("Bash", {"command": command}).signature: 100}


def test_structured_needs_confidence_at_the_threshold() -> None:
    # the built-in family rules take 50 (rules.toml says why); a user's threshold moves it either way
    assert _d("pytest -q", patterns={"test:pytest:*": 50}).rule == "pytest"
    low = _d("pytest -q", patterns={"test:pytest:*": 49})
    assert (low.rule, low.kind) == ("generic", "generic") and "49 < 50" in low.reason
    raised = build({"rules": {"pytest": {"mode": "enforce", "threshold": 70}}})
    assert _d("pytest -q", rules=raised, patterns={"test:pytest:*": 70}).rule == "pytest"
    assert _d("pytest -q", rules=raised, patterns={"test:pytest:*": 69}).rule == "generic"


def test_modes_and_answers() -> None:
    shadow = _d("pytest -q", rules=SHADOW)
    assert (shadow.action, shadow.mode) == ("rewrite", "shadow") and answer(shadow) is None
    advise = _d("pytest -q", rules=build({"rules": {"pytest": {"mode": "advise"}}}))
    out = answer(advise)
    assert advise.action == "advise" and out is not None
    assert "permissionDecision" not in out["hookSpecificOutput"]  # advice never approves anything
    assert "outloop run" in out["hookSpecificOutput"]["additionalContext"]
    enforced = answer(_d("pytest -q", description="run the tests", timeout=60000))
    assert enforced is not None
    hso = enforced["hookSpecificOutput"]
    assert hso["hookEventName"] == "PreToolUse" and hso["permissionDecision"] == "allow"
    assert hso["updatedInput"]["description"] == "run the tests" and hso["updatedInput"]["timeout"] == 60000
    ask = build({"rules": {"pytest": {"mode": "enforce"}}, "rewrite_permission": "ask"})
    asked = answer(_d("pytest -q", rules=ask))
    assert asked is not None and asked["hookSpecificOutput"]["permissionDecision"] == "ask"


def test_other_tools_pass() -> None:
    d = decide("Read", {"file_path": "/repo/a.py"}, "/repo", None, ENFORCE, CONFIDENT, 0.0)
    assert d.action == "pass" and answer(d) is None


def test_builtin_rules_take_their_examples_and_ship_in_shadow() -> None:
    from outloop.agents.signatures import signature_of

    for rule in builtin_rules():
        assert rule.mode == "shadow"
        assert rule.examples, rule.name
        for example in rule.examples:
            sig = signature_of("Bash", {"command": example})
            taken = SHADOW.matching(sig.signature, sig.category)
            assert taken and taken[0].name == rule.name, (rule.name, example, sig.signature)


@pytest.mark.parametrize("user", [
    {"rules": {"nope": {"mode": "enforce"}}},
    {"rules": {"pytest": {"mode": "loud"}}},
    {"rules": {"pytest": {"threshold": 101}}},
    {"rules": {"pytest": {"colour": "red"}}},
    {"add": [{"name": "pytest", "family": "pytest", "signatures": ["x"]}]},
    {"add": [{"name": "mine", "family": "no-such-family", "signatures": ["x"]}]},
    {"add": [{"name": "mine", "family": "generic"}]},
    {"loop_guard": -1},
    {"rewrite_permission": "always"},
    {"surprise": 1},
])
def test_bad_user_rules_are_refused(user: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    from outloop.router.rules import write_user

    with pytest.raises(RulesError):
        write_user(tmp_path / "routes.json", user)
    assert not (tmp_path / "routes.json").exists()


def test_user_rule_wins_over_generic_and_versions_change() -> None:
    mine = build({"add": [{"name": "tox", "family": "pytest", "signatures": ["test:tox:*"], "mode": "enforce",
                           "threshold": 0}]})
    assert _d("tox", rules=mine).rule == "tox"
    a, b = build({}), build({"rules": {"pytest": {"mode": "enforce"}}})
    assert a.by_name["pytest"].version != b.by_name["pytest"].version
    assert a.by_name["mypy"].version == b.by_name["mypy"].version


@pytest.mark.parametrize(("mode", "n", "fidelity", "hint", "effective"), [
    ("shadow", 10, 0.99, None, "shadow"),  # too few decisions
    ("shadow", 60, 0.99, "promote", "shadow"),
    ("advise", 60, 0.99, "promote", "advise"),
    ("enforce", 60, 0.99, None, "enforce"),
    ("enforce", 60, 0.80, "demote", "shadow"),
    ("advise", 60, 0.80, "demote", "shadow"),
    ("shadow", 60, 0.80, None, "shadow"),
    ("enforce", 60, None, None, "enforce"),
])
def test_promotion_and_demotion(mode: str, n: int, fidelity: float | None, hint: str | None, effective: str) -> None:
    from dataclasses import replace

    rule = replace(builtin_rules()[0], mode=mode)
    assert suggestion(rule, n, fidelity) == hint
    assert effective_mode(rule, n, fidelity) == effective


def test_demoted_rule_decides_in_shadow() -> None:
    d = decide("Bash", {"command": "pytest -q"}, "/repo", None, ENFORCE, CONFIDENT, 0.0,
               rule_stats={"pytest": (80, 0.5)})
    assert d.mode == "shadow" and "demoted" in d.reason and answer(d) is None


# -- the loop guard and the wait advice ------------------------------------------------------------
def _session(*calls: tuple[str, str | None]) -> SessionState:
    """(command, output or None for a denied call; "Edit" as command for an edit)."""
    s = SessionState()
    for i, (command, output) in enumerate(calls):
        if command == "Edit":
            s.pre(f"t{i}", "Edit", None, float(i))
            continue
        step = s.pre(f"t{i}", "Bash", command, float(i))
        if output is None:
            step.denied = True
        else:
            s.post(f"t{i}", output, float(i))
    return s


FAIL = "F\n1 failed in 0.1s"


@pytest.mark.parametrize(("calls", "fires"), [
    ([("pytest -q", FAIL), ("pytest -q", FAIL)], True),  # the third identical run
    ([("pytest -q", FAIL)], False),
    ([("pytest -q", FAIL), ("pytest -q", "1 passed")], False),  # output changed
    ([("pytest -q", "1 passed"), ("pytest -q", FAIL)], False),
    ([("pytest -q", FAIL), ("Edit", None), ("pytest -q", FAIL)], False),  # an edit between them
    ([("pytest -q", FAIL), ("ls", "a"), ("pytest -q", FAIL)], False),
    ([("pytest -q", FAIL), ("pytest -q", FAIL), ("pytest -q", None)], True),  # denied again
    ([("pytest -x", FAIL), ("pytest -x", FAIL)], False),  # another command
    ([("sleep 5 && pytest -q", FAIL), ("sleep 5 && pytest -q", FAIL)], False),  # a poll: advised, not denied
])
def test_loop_guard_table(calls: list[tuple[str, str | None]], fires: bool) -> None:
    command = "pytest -q" if calls[0][0] != "sleep 5 && pytest -q" else calls[0][0]
    verdict = loop_guard(_session(*calls), command, 3)
    assert (verdict is not None) == fires
    if verdict:
        assert verdict.action == "deny" and "2 times in a row" in verdict.reason and "1 failed" in verdict.reason


def test_loop_guard_threshold_and_pending_result() -> None:
    s = _session(("make", "ok"), ("make", "ok"), ("make", "ok"))
    assert loop_guard(s, "make", 4) is not None
    assert loop_guard(s, "make", 5) is None
    assert loop_guard(s, "make", 0) is None
    s.pre("t9", "Bash", "make", 9.0)  # running: no result yet
    assert loop_guard(s, "make", 3) is None


def test_loop_guard_decision_denies_and_shadow_records() -> None:
    s = _session(("pytest -q", FAIL), ("pytest -q", FAIL))
    d = _d("pytest -q", session=s)
    out = answer(d)
    assert d.rule == "loop-guard" and out is not None
    assert out["hookSpecificOutput"]["permissionDecision"] == "deny"
    quiet = _d("pytest -q", rules=SHADOW, session=s)
    assert (quiet.action, quiet.mode) == ("deny", "shadow") and answer(quiet) is None


@pytest.mark.parametrize(("commands", "current", "advised"), [
    (["sleep 30", "gh run view 1", "sleep 30", "gh run view 1"], "sleep 30", True),
    (["sleep 30", "gh run view 1", "sleep 30", "gh run view 1"], "gh run view 1", False),  # no sleep before it
    (["sleep 30 && gh run view 1", "sleep 30 && gh run view 1"], "sleep 30 && gh run view 1", True),
    (["sleep 30 && gh run view 1"], "sleep 30 && gh run view 1", False),
    (["sleep 30", "gh run view 1", "sleep 30", "gh run view 2"], "sleep 30", False),
    (["gh run view 1", "gh run view 1"], "gh run view 1", False),
])
def test_wait_advice_table(commands: list[str], current: str, advised: bool) -> None:
    s = _session(*[(c, "same") for c in commands])
    verdict = wait_advice(s, current)
    assert (verdict is not None) == advised
    if verdict:
        assert "outloop wait" in verdict.reason and "gh run view 1" in verdict.reason


# -- the same decision on recorded sessions (shadow replay) -----------------------------------------
def test_shadow_decider_decides_recorded_steps_as_enforced_with_memory() -> None:
    from outloop.agents.timeline import Timeline, ToolStep
    from outloop.router.shadow import shadow_decider

    steps = [ToolStep(f"t{i}", "Bash", {"command": c}, i, output=o) for i, (c, o) in enumerate([
        ("pytest -q", FAIL), ("pytest -q", FAIL), ("pytest -q", FAIL), ("rm -rf build", ""), ("go test ./...", "ok")])]
    steps.append(ToolStep("t9", "Read", {"file_path": "/repo/a.py"}, 9, output="x"))
    timeline = Timeline("s", "s", steps=steps)
    decide_step = shadow_decider(patterns={"test:pytest:*": 90})
    got = [decide_step(s, timeline) for s in steps]
    assert [(d.rule, d.kind, d.action) if d else None for d in got] == [
        ("pytest", "structured", "rewrite"), ("pytest", "structured", "rewrite"),
        ("loop-guard", "guard", "deny"), None, ("generic", "generic", "rewrite"), None]
    assert shadow_decider()(steps[0], timeline).kind == "generic"  # type: ignore[union-attr]  # no confidence known


def test_a_signature_whose_output_is_typically_short_is_not_rewritten() -> None:
    from outloop.router.decide import SHORT_OUTPUT_TOKENS

    def sized(command: str, sizes: dict[str, float] | None) -> Decision:
        return decide("Bash", {"command": command}, "/repo", None, ENFORCE, CONFIDENT, 0.0, sizes=sizes)

    sizes = {"vcs:git:status": SHORT_OUTPUT_TOKENS - 1.0, "test:pytest:*": SHORT_OUTPUT_TOKENS + 1.0}
    short = sized("git status", sizes)
    assert short.action == "pass" and "typically short" in short.reason
    assert sized("git status", None).action == "rewrite"  # an unknown size does not hold it back
    assert sized("pytest -q", sizes).action == "rewrite"
