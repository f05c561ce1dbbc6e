"""mini-swe-agent trajectories (``*.traj.json``, ``trajectory_format`` ``mini-swe-agent-1``) ->
``tool.call`` and ``usage.record`` envelopes. The session id is the ``instance_id``.

Tool calls. mini-swe-agent executes an assistant message only when it holds exactly one
```` ```bash ```` block (its own action regex is used here); a message with none or several gets a
format-error reply and runs nothing, so it produces no tool call (counted in ``stats.notes`` as
``traj_no_action`` / ``traj_several_actions``). ``step`` is the 0-based ordinal of the assistant
message in the file; the call's ``id`` and ``tool_use_id`` are ``<instance_id>:<step>``, its tool is
``Bash`` with ``tool_input`` ``{"command": ...}``. The next user message is the observation:
``<returncode>0</returncode>`` -> ok, any other return code -> error, "timed out and has been
killed" -> interrupted, the final submission (the ``git diff`` with no return code) -> ok, another
harness message -> error, no observation at all -> started. ``output_bytes`` is the size of the
whole observation message, which is what entered the model's context; ``output_tokens_est`` is
estimated from it.

Usage. One record per assistant message from ``extra.response.usage`` (OpenAI-style, as written by
litellm/OpenRouter), mapped to Anthropic-style counts so that totals add up the same way:
``prompt_tokens`` includes cached tokens while Anthropic ``input_tokens`` excludes cache reads, so
``input_tokens = prompt_tokens - prompt_tokens_details.cached_tokens`` and
``cache_read_input_tokens = cached_tokens`` (0 when absent); ``cache_creation_input_tokens = 0`` (not
reported); ``output_tokens = completion_tokens`` (includes reasoning tokens); ``cost_usd = cost``
(the provider's own charge, kept because the file has it); ``model = extra.response.model``; id
``extra.response.id``, else ``<instance_id>:<step>``.

Times. ``extra.response.created`` (epoch seconds) is the only clock in the file: it becomes the
usage timestamp, the envelope time of both records and the call's ``started_at`` (the command starts
right after that response; the error is the response latency). Files without it have no times.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from outloop.schemas.events import Envelope, EventType, ToolCall, UsageRecord
from outloop.schemas.ids import OrdinalCounter
from outloop.schemas.sizes import estimate_tokens, json_size
from outloop.streams.importers import UNREAD, ImportStats, ValidationError, make_envelope, parse_time, read_json
from outloop.streams.redact import redact_canonical

SOURCE = "trajectory"
ACTION_RE = re.compile(r"```bash\s*\n(.*?)\n```", re.DOTALL)  # mini-swe-agent's parse_action
RETURNCODE_RE = re.compile(r"\s*<returncode>(-?\d+)</returncode>")
SUBMIT_MARKERS = ("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "MINI_SWE_AGENT_FINAL_OUTPUT")


def is_trajectory(doc: Any) -> bool:
    return isinstance(doc, dict) and str(doc.get("trajectory_format", "")).startswith("mini-swe-agent")


def _nonneg_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def observation_status(command: str, observation: str | None) -> str:
    if observation is None:
        return "started"
    match = RETURNCODE_RE.match(observation)
    if match:
        return "ok" if int(match.group(1)) == 0 else "error"
    if observation.startswith("The last command") and "timed out" in observation[:400]:
        return "interrupted"
    if any(marker in command for marker in SUBMIT_MARKERS):
        return "ok"  # the submission's output (the git diff) carries no return code
    return "error"  # a harness message instead of an output


def _usage(response: dict[str, Any], instance: str, step: int) -> UsageRecord | None:
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = _nonneg_int(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _nonneg_int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = min(cached, prompt)
    cost = usage.get("cost")
    rid = response.get("id")
    return UsageRecord(
        id=rid if isinstance(rid, str) and rid else f"{instance}:{step}",
        session_id=instance,
        model=response.get("model") if isinstance(response.get("model"), str) else None,
        timestamp=parse_time(response.get("created")),
        input_tokens=prompt - cached,
        output_tokens=_nonneg_int(usage.get("completion_tokens")),
        cache_read_input_tokens=cached,
        cache_creation_input_tokens=0,
        cost_usd=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None,
        source=SOURCE,
    )


def load_trajectory(path: Path, stats: ImportStats) -> dict[str, Any] | None:
    doc = read_json(path, stats)
    if doc is UNREAD:
        return None
    if not is_trajectory(doc):
        stats.skip(path, "unknown format: not a mini-swe-agent trajectory")
        return None
    return doc


def iter_trajectory(path: Path, stats: ImportStats, doc: dict[str, Any] | None = None) -> Iterator[Envelope]:
    """Envelopes of one trajectory file. ``doc`` is the already parsed file, if the caller has it."""
    if doc is None:
        doc = load_trajectory(path, stats)
        if doc is None:
            return
    instance = doc.get("instance_id")
    if not isinstance(instance, str) or not instance:
        instance = path.name.removesuffix(".json").removesuffix(".traj")
    messages = doc.get("messages")
    if not isinstance(messages, list):
        stats.damaged(path)
        return
    keys = OrdinalCounter(redact_canonical)
    step = -1
    for i, message in enumerate(messages):
        stats.records_read += 1
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            stats.damaged(path)
            continue
        if message.get("role") != "assistant":
            continue
        step += 1
        extra = message.get("extra")
        response = extra.get("response") if isinstance(extra, dict) else None
        response = response if isinstance(response, dict) else {}
        time = parse_time(response.get("created"))
        try:
            usage = _usage(response, instance, step)
            if usage is None:
                stats.note("traj_no_usage")
            else:
                yield stats.produced(make_envelope(usage, id=f"us:{usage.id}", type=EventType.USAGE,
                                                   source=SOURCE, subject=instance, time=time))
        except ValidationError:
            stats.damaged(path)
        actions = ACTION_RE.findall(message["content"])
        if len(actions) != 1:
            stats.note("traj_no_action" if not actions else "traj_several_actions")
            continue
        command = actions[0].strip()
        nxt = messages[i + 1] if i + 1 < len(messages) else None
        observation = nxt["content"] if isinstance(nxt, dict) and nxt.get("role") == "user" \
            and isinstance(nxt.get("content"), str) else None
        tool_input = {"command": command}
        out_bytes = json_size(observation) if observation is not None else None
        call_id = f"{instance}:{step}"
        try:
            call = ToolCall(
                id=call_id, tool_use_id=call_id, call_key=keys.key(instance, "Bash", tool_input),
                session_id=instance, tool_name="Bash", tool_input=tool_input, command=command,
                status=observation_status(command, observation), started_at=time,
                input_bytes=json_size(tool_input), output_bytes=out_bytes,
                output_tokens_est=estimate_tokens(out_bytes) if out_bytes is not None else None,
                source=SOURCE,
            )
            yield stats.produced(make_envelope(call, id=f"tc:{call_id}", type=EventType.TOOL_CALL,
                                               source=SOURCE, subject=instance, time=time))
        except ValidationError:
            stats.damaged(path)
