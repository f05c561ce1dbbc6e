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
import string
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

HOME = "/home/dev"
PROJECTS = {"api": f"{HOME}/shop-api", "web": f"{HOME}/shop-web"}
MODEL, VERSION, SYSTEM_TOKENS = "claude-sonnet-4-5-20250929", "2.0.31", 14_026
MODULES = ["cart", "orders", "pricing", "inventory", "payments", "users", "shipping", "coupons"]
TASKS = {
    "api": ["Fix the failing discount tests in the cart", "Add a refund endpoint for orders",
            "The shipping cost is wrong for EU addresses, fix it", "Refactor pricing to use Decimal"],
    "web": ["The checkout page build fails, fix it", "Add a loading spinner to the cart drawer"],
}
TODO_ACK = ("Todos have been modified successfully. Ensure that you continue to use the todo list to "
            "track your progress. Please proceed with the current tasks if applicable")


@dataclass
class Call:
    id: str
    name: str
    input: dict[str, Any]
    text: str  # tool_result content, as the model saw it
    is_error: bool
    result: Any  # toolUseResult in the transcript, tool_response in the hook payload
    seconds: float  # how long the tool ran


@dataclass
class Step:
    thinking: str | None
    text: str | None
    calls: list[Call]


class Gen:
    """Content of plausible sessions, all drawn from one seeded random generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def b62(self, n: int) -> str:
        return "".join(self.rng.choice(string.ascii_letters + string.digits) for _ in range(n))

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def call(self, name: str, inp: dict[str, Any], text: str, result: Any, seconds: float,
             error: bool = False) -> Call:
        return Call(f"toolu_01{self.b62(22)}", name, inp, text, error, result, seconds)

    def source(self, module: str) -> list[str]:
        out = ["from decimal import Decimal", "", f"from shop.models import {module.title()}", ""]
        for i in range(self.rng.randint(6, 14)):
            name = f"{self.rng.choice(['get', 'apply', 'compute', 'validate', 'load'])}_{module}_{i}"
            out += [f"def {name}(items, rate=Decimal('0.{self.rng.randint(5, 95)}')):",
                    f'    """{name.replace("_", " ").capitalize()}."""', "    total = Decimal(0)",
                    "    for item in items:", "        total += item.price * item.quantity",
                    f"    return round(total * rate, {self.rng.randint(0, 2)})", ""]
        return out

    def bash(self, command: str, out: str, code: int = 0, seconds: float = 1.0) -> Call:
        text = f"Exit code {code}\n{out}" if code else out
        result = {"stdout": out, "stderr": "", "interrupted": False, "isImage": False}
        return self.call("Bash", {"command": command, "description": f"Run {command}"}, text, result, seconds,
                         code != 0)

    def pytest(self, target: str, failing: list[str]) -> Call:
        tests = {m: self.rng.randint(8, 30) for m in MODULES}
        lines, done, total = [], 0, sum(tests.values())
        for m, n in tests.items():
            bad, done = sum(1 for f in failing if f.startswith(f"{m}::")), done + n
            dots = "." * (n - bad) + "F" * bad
            lines.append(f"tests/unit/test_{m}.py {dots}  [{100 * done // total:>3}%]")
        for f in failing:
            mod, test = f.split("::")
            lines += [f"{'_' * 30} {test} {'_' * 30}", "", "    def " + test + "():",
                      f"        items = make_items({self.rng.randint(2, 9)})"]
            lines += [f"        {mod}_{k} = build(items, seed={k})" for k in range(self.rng.randint(9, 30))]
            want, got = self.rng.randint(50, 99), self.rng.randint(10, 49)
            lines += [f">       assert apply_{mod}(items) == Decimal('{want}.00')",
                      f"E       AssertionError: assert Decimal('{got}.00') == Decimal('{want}.00')", "",
                      f"tests/unit/test_{mod}.py:{self.rng.randint(20, 300)}: AssertionError"]
        lines += [f"FAILED tests/unit/test_{f.replace('::', '.py::')} - AssertionError" for f in failing]
        secs = self.rng.uniform(2.0, 9.0)
        passed = sum(tests.values()) - len(failing)
        summary = (f"{len(failing)} failed, " if failing else "") + f"{passed} passed in {secs:.2f}s"
        return self.bash(f"pytest {target} -q", "\n".join(lines + [summary]), 1 if failing else 0, secs)

    def read(self, path: str, module: str) -> Call:
        body = self.source(module)
        text = "\n".join(f"{i:>6}\u2192{line}" for i, line in enumerate(body, 1))
        file = {"filePath": path, "content": "\n".join(body), "numLines": len(body), "startLine": 1,
                "totalLines": len(body)}
        return self.call("Read", {"file_path": path}, text, {"type": "text", "file": file}, 0.05)

    def edit(self, path: str) -> Call:
        old, new = "total = Decimal(0)", f"total = Decimal('0.{self.rng.randint(0, 9)}')"
        inp = {"file_path": path, "old_string": old, "new_string": new}
        text = f"The file {path} has been updated. Here's the result of running `cat -n` on a snippet " \
               f"of the edited file:\n    41\u2192    {new}\n    42\u2192    for item in items:"
        result = {"filePath": path, "oldString": old, "newString": new, "replaceAll": False,
                  "userModified": False}
        return self.call("Edit", inp, text, result, 0.1)

    def grep(self, pattern: str, files: list[str]) -> Call:
        text = f"Found {len(files)} files\n" + "\n".join(files)
        mode = "files_with_matches"
        return self.call("Grep", {"pattern": pattern, "output_mode": mode}, text,
                         {"mode": mode, "filenames": files, "numFiles": len(files)}, 0.2)

    def todo(self, items: list[str], done: int) -> Call:
        status = ["completed"] * done + ["in_progress"] + ["pending"] * len(items)
        todos = [{"content": t, "status": status[i], "activeForm": t} for i, t in enumerate(items)]
        return self.call("TodoWrite", {"todos": todos}, TODO_ACK, {"oldTodos": [], "newTodos": todos}, 0.01)

    def session(self, kind: str, index: int) -> tuple[str, list[Step]]:
        """The prompt and the assistant steps of one session of kind ``api`` or ``web``."""
        root, rng = PROJECTS[kind], self.rng
        task = TASKS[kind][index % len(TASKS[kind])]
        mods = rng.sample(MODULES, 3)
        changed = [f"src/shop/{m}.py" for m in mods] if kind == "api" else ["src/pages/Checkout.tsx"]
        todo = [task, "Run the unit tests", "Run the linter"]
        steps = [Step(f"The user wants: {task}. Let me plan.", None, [self.todo(todo, 0)]),
                 Step(None, "Let me look at the state.", [self.bash("git status", git_status(changed))])]
        if kind == "api":
            files = [f"{root}/{c}" for c in changed]
            steps.append(Step(None, None, [self.grep(f"def apply_{mods[0]}", files)]))
            reads = [self.read(f, m) for f, m in zip(files, mods, strict=True)]
            steps.append(Step("Read the candidates.", None, reads))
            failing = [f"{mods[0]}::test_{mods[0]}_{k}" for k in range(rng.randint(1, 3))]
            steps.append(Step(None, "Run the tests first.", [self.pytest("tests/unit", failing)]))
            while failing:
                failing = failing[:-1] if rng.random() < 0.7 else failing
                steps.append(Step("Adjust the rounding.", None, [self.edit(files[0])]))
                steps.append(Step(None, None, [self.pytest("tests/unit", failing)]))
            lint = f"{changed[1]}:3:1: F401 [*] `os` imported but unused\nFound 1 error."
            steps.append(Step(None, None, [self.bash("ruff check .", lint, 1, 0.4)]))
            steps.append(Step(None, None, [self.edit(files[1])]))
            steps.append(Step(None, None, [self.bash("ruff check .", "All checks passed!", 0, 0.3)]))
        else:
            page = f"{root}/src/pages/Checkout.tsx"
            steps.append(Step(None, None, [self.read(page, "checkout")]))
            for attempt in range(rng.randint(2, 4)):
                ok = attempt > 0 and rng.random() < 0.5
                build = self.bash("npm run build", vite_build(rng, ok), 0 if ok else 2, rng.uniform(8, 30))
                steps.append(Step(None, "Build it.", [build]))
                if ok:
                    break
                steps.append(Step("Fix the type error.", None, [self.edit(page)]))
            tests = f"Test Files  9 passed (9)\n     Tests  {rng.randint(40, 90)} passed"
            steps.append(Step(None, None, [self.bash("npm test", tests, 0, 6.0)]))
        steps.append(Step(None, None, [self.todo(todo, 3)]))
        steps.append(Step(None, None, [self.bash("git status", git_status(changed))]))
        steps.append(Step(None, f"Done: {task.lower()}. All tests pass.", []))
        return task, steps


def git_status(changed: list[str]) -> str:
    return "On branch main\nChanges not staged for commit:\n" + "\n".join(
        f"\tmodified:   {c}" for c in changed) + '\n\nno changes added to commit (use "git add")'


def vite_build(rng: random.Random, ok: bool) -> str:
    chunks = [f"dist/assets/{n}-{rng.getrandbits(32):08x}.js  {rng.uniform(1, 300):.2f} kB" for n in
              ("index", "cart", "checkout", "vendor")]
    tail = f"built in {rng.uniform(2, 9):.2f}s" if ok else \
        "src/pages/Checkout.tsx(42,7): error TS2322: Type 'string' is not assignable to type 'number'."
    head = ["> shop-web@1.4.0 build", "> tsc && vite build", "vite v5.4.8 building for production..."]
    return "\n".join([*head, f"transforming... {rng.randint(300, 900)} modules transformed.", *chunks, tail])


class Transcript:
    """Writes the records of one transcript file the way Claude Code does."""

    def __init__(self, gen: Gen, session: str, cwd: str, start: datetime, agent: str | None = None) -> None:
        self.gen, self.session, self.cwd, self.agent = gen, session, cwd, agent
        self.clock, self.parent = start, None
        self.records: list[dict[str, Any]] = []
        self.context = self.cached = SYSTEM_TOKENS  # tokens in context / in the prompt cache

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        rec: dict[str, Any] = {"parentUuid": self.parent, "isSidechain": self.agent is not None,
                               "userType": "external", "cwd": self.cwd, "sessionId": self.session,
                               "version": VERSION, "gitBranch": "main"}
        if self.agent:
            rec["agentId"] = self.agent
        rec["type"] = kind
        rec.update(fields)
        rec["uuid"] = self.parent = self.gen.uuid()
        rec["timestamp"] = self.clock.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.records.append(rec)
        return rec

    def tick(self, seconds: float) -> None:
        self.clock += timedelta(seconds=seconds)

    def prompt(self, text: str) -> None:
        self.add("user", message={"role": "user", "content": text})
        self.context += len(text) // 4 + 1

    def assistant(self, step: Step, model: str = MODEL) -> None:
        rng = self.gen.rng
        blocks: list[dict[str, Any]] = []
        if step.thinking:
            blocks.append({"type": "thinking", "thinking": step.thinking, "signature": self.gen.b62(64)})
        if step.text:
            blocks.append({"type": "text", "text": step.text})
        blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in step.calls]
        mid, rid = f"msg_01{self.gen.b62(22)}", f"req_011C{self.gen.b62(20)}"
        final = sum(len(orjson.dumps(b)) for b in blocks) // 4 + rng.randint(20, 200)
        early = rng.randint(1, 12)
        self.tick(rng.uniform(2, 12))
        for i, block in enumerate(blocks):
            new = self.context - self.cached
            usage = {"input_tokens": rng.randint(1, 9), "cache_creation_input_tokens": new,
                     "cache_read_input_tokens": self.cached,
                     "cache_creation": {"ephemeral_5m_input_tokens": new, "ephemeral_1h_input_tokens": 0},
                     "output_tokens": final if i == len(blocks) - 1 else early, "service_tier": "standard"}
            message = {"model": model, "id": mid, "type": "message", "role": "assistant", "content": [block],
                       "stop_reason": None, "stop_sequence": None, "usage": usage}
            self.add("assistant", message=message, requestId=rid)
            self.tick(rng.uniform(0.2, 2.5))
        self.cached, self.context = self.context, self.context + final
        for call in step.calls:
            self.tick(call.seconds)
            result = {"tool_use_id": call.id, "type": "tool_result", "content": call.text,
                      "is_error": call.is_error}
            self.add("user", message={"role": "user", "content": [result]}, toolUseResult=call.result)
            self.context += len(call.text) // 4 + 1

    def lines(self) -> list[bytes]:
        return [orjson.dumps(r) for r in self.records]


def hook_capture(session: str, cwd: str, prompt: str, steps: list[Step], new: bool) -> dict[str, list[Any]]:
    """The payloads disler-style hooks log for one session. ``new``: a Claude Code version that sends
    ``tool_use_id``; otherwise an older one, some of whose PostToolUse payloads say ``tool_result``."""
    base = {"session_id": session, "transcript_path": f"{HOME}/.claude/projects/"
            f"{cwd.replace('/', '-')}/{session}.jsonl", "cwd": cwd}
    if new:
        base["permission_mode"] = "default"
    out: dict[str, list[Any]] = {
        "session_start": [{**base, "hook_event_name": "SessionStart", "source": "startup"}],
        "user_prompt_submit": [{**base, "hook_event_name": "UserPromptSubmit", "prompt": prompt}],
        "pre_tool_use": [], "post_tool_use": [], "notification": [], "stop": []}
    for n, call in enumerate(c for s in steps for c in s.calls):
        ids = {"tool_use_id": call.id} if new else {}
        tool = {"tool_name": call.name, "tool_input": call.input, **ids}
        out["pre_tool_use"].append({**base, "hook_event_name": "PreToolUse", **tool})
        answer = "tool_result" if not new and n % 3 == 0 else "tool_response"
        out["post_tool_use"].append({**base, "hook_event_name": "PostToolUse", **tool, answer: call.result})
        if call.name == "Bash" and not out["notification"]:
            out["notification"].append({**base, "hook_event_name": "Notification",
                                        "message": "Claude needs your permission to use Bash"})
    if not new:
        out["pre_compact"] = [{**base, "hook_event_name": "PreCompact", "trigger": "auto",
                               "custom_instructions": ""}]
    out["stop"].append({**base, "hook_event_name": "Stop", "stop_hook_active": False})
    return out


def trajectory(gen: Gen, start: datetime) -> dict[str, Any]:
    """A mini-swe-agent-1 trajectory: one bash block per step, observations with return codes."""
    rng, instance, test = gen.rng, "shop__shop-api-1042", "python -m pytest tests/unit/test_pricing.py -q"
    src = "\n".join(gen.source("pricing"))
    plan = [("ls src/shop", 0, "\n".join(f"{m}.py" for m in MODULES)),
            ("grep -rn 'def apply_pricing' src", 0, "src/shop/pricing.py:5:def apply_pricing_0(items):"),
            ("cat src/shop/pricing.py", 0, src), (test, 1, "F..\n1 failed, 2 passed in 0.41s"),
            ("sed -i 's/round(total \\* rate, 0)/round(total * rate, 2)/' src/shop/pricing.py", 0, ""),
            (test, 1, "F..\n1 failed, 2 passed in 0.39s"), ("TWO", 0, ""),
            ("sed -i 's/Decimal(0)/Decimal(\"0\")/' src/shop/pricing.py", 0, ""),
            (test, 0, "... 3 passed in 0.38s"),
            ("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git add -A && git diff --cached", 0,
             "diff --git a/src/shop/pricing.py b/src/shop/pricing.py\n-    total = Decimal(0)\n"
             "+    total = Decimal(\"0\")")]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a helpful assistant that can interact multiple times with a "
                                      "computer shell to solve programming tasks."},
        {"role": "user", "content": "<pr_description>\nPrices are rounded to units.\n</pr_description>"}]
    prompt, clock, cost_total = 1400, int(start.timestamp()), 0.0
    for command, code, output in plan:
        if command == "TWO":
            content = "THOUGHT: Two fixes at once.\n\n```bash\nsed -n 1,5p src/shop/pricing.py\n```\n\n" \
                      "```bash\nsed -n 5,9p src/shop/pricing.py\n```"
            observation = "Please always provide EXACTLY ONE action in triple backticks, found 2 actions."
        else:
            content = f"THOUGHT: Next I run `{command.split()[0]}`.\n\n```bash\n{command}\n```"
            observation = output if "COMPLETE_TASK" in command else \
                f"<returncode>{code}</returncode>\n<output>\n{output}\n</output>"
        completion = rng.randint(60, 400)
        cost = round(prompt * 3e-6 + completion * 15e-6, 6)
        cost_total += cost
        cached = max(0, prompt - rng.randint(300, 900))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "cost": cost,
                 "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": cached}}
        clock += rng.randint(3, 20)
        response = {"id": f"gen-{clock}-{gen.b62(20)}", "provider": "Anthropic",
                    "model": "anthropic/claude-sonnet-4", "object": "chat.completion", "created": clock,
                    "usage": usage}
        messages += [{"role": "assistant", "content": content, "extra": {"response": response}},
                     {"role": "user", "content": observation}]
        prompt += completion + len(observation) // 4
    info = {"exit_status": "Submitted", "submission": plan[-1][2],
            "model_stats": {"instance_cost": cost_total, "api_calls": len(plan)}}
    return {"info": info, "messages": messages, "trajectory_format": "mini-swe-agent-1",
            "instance_id": instance}


def subagent(gen: Gen, session: str, cwd: str, start: datetime) -> tuple[Transcript, Step]:
    """A sub-agent transcript (same session id, its own agent id) and the parent's Task step."""
    sub = Transcript(gen, session, cwd, start, agent=gen.b62(7).lower())
    sub.prompt("Find every caller of apply_cart and summarise how discounts are applied.")
    sub.assistant(Step(None, None, [gen.grep("apply_cart", [f"{cwd}/src/shop/cart.py"])]))
    sub.assistant(Step(None, None, [gen.read(f"{cwd}/src/shop/cart.py", "cart")]))
    summary = "apply_cart is called from checkout and orders; discounts are applied after tax."
    sub.assistant(Step(None, summary, []))
    task = {"description": "Find discount callers", "prompt": "Find every caller of apply_cart.",
            "subagent_type": "Explore"}
    result = {"status": "completed", "content": [{"type": "text", "text": summary}]}
    return sub, Step(None, "Let me delegate the search.", [gen.call("Task", task, summary, result, 40.0)])


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
