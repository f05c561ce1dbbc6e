"""The sample's file formats: transcripts, hook-log captures, trajectories, sub-agent files."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

from outloop.sample.steps import HOME, MODEL, MODULES, SYSTEM_TOKENS, VERSION, Gen, Step


class Transcript:
    """Writes the records of one transcript file the way Claude Code does."""

    def __init__(self, gen: Gen, session: str, cwd: str, start: datetime, agent: str | None = None) -> None:
        self.gen, self.session, self.cwd, self.agent = gen, session, cwd, agent
        self.clock = start
        self.parent: str | None = None
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
