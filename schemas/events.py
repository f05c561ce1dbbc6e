"""Event models. Every message on an outloop input topic is an :class:`Envelope` whose ``data``
validates against the model named by its ``type`` (see :data:`EVENT_TYPES`).

Times are timezone-aware UTC. Hook payloads carry no timestamp of their own: the hook shim stamps
``Envelope.time`` when it receives the payload.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field


def _representable_in_utc(value: datetime) -> datetime:
    """A time is stored and compared in UTC: one whose UTC instant falls outside years 1-9999 (e.g.
    ``0001-01-01T00:30:00+01:00``) cannot be, and is refused here with its reason rather than failing
    later in a write. The value is kept as given."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is outside the range of UTC times (years 1-9999)") from None
    return value


Time = Annotated[AwareDatetime, AfterValidator(_representable_in_utc)]
"""A timezone-aware time whose UTC instant exists."""


class EventType(StrEnum):
    HOOK_EVENT = "hook.event"  # one Claude Code hook payload, lossless
    TOOL_USE = "transcript.tool_use"  # a tool_use block of a transcript assistant record
    TOOL_RESULT = "transcript.tool_result"  # a tool_result block of a transcript user record
    TOOL_CALL = "tool.call"  # an already paired tool call (trajectories, ADW tool results)
    USAGE = "usage.record"  # the usage of one API response
    MESSAGE = "transcript.message"  # one API response of a transcript: ids, model, sizes, no bodies
    WORKFLOW_STARTED = "workflow.started"
    WORKFLOW_PHASE_CHANGED = "workflow.phase_changed"
    WORKFLOW_ENDED = "workflow.ended"
    FLUSH = "control.flush"  # a marker the agents forward so a replay knows it is materialized
    ROUTING_DECISION = "routing.decision"  # one PreToolUse decision of the router component
    ROUTING_RULE = "routing.rule"  # a routing rule as the router loaded it (on start and on every change)
    ROUTING_TOOL = "routing.tool"  # a deterministic tool (runner family) rules route to
    QUOTA_DECISION = "quota.decision"  # a throttle decision of the quota (published by the sink)
    ROUTING_SAVING = "routing.saving"  # the measured or estimated saving of one decision (cost_savings_log)


class _Open(BaseModel):
    """Keeps unknown fields: producers are newer than we are."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)


class _Closed(BaseModel):
    """NaN and infinities are refused everywhere: they are not JSON, and they would make the "largest
    wins" rules of the fold and of the sink disagree."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Envelope(_Closed):
    """Transport envelope (CloudEvents-like). ``subject`` is the partition key: the session id for
    session-scoped events, the run id for workflow events."""

    specversion: Literal["1"] = "1"
    id: str = Field(min_length=1, max_length=512)
    type: EventType
    source: str = Field(min_length=1, max_length=64)  # hook | transcript | hook-log | trajectory | adw | ...
    time: Time | None = None
    subject: str = Field(min_length=1, max_length=512)
    data: dict[str, Any]


class HookEvent(_Open):
    """A Claude Code hook payload exactly as Claude Code sent it. Unknown hook names and unknown fields
    are accepted and kept; only the fields every payload carries are typed."""

    session_id: str = Field(min_length=1)
    hook_event_name: str = Field(min_length=1)
    transcript_path: str | None = None
    cwd: str | None = None
    tool_name: str | None = None
    tool_input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    # ``call_key`` is not a Claude Code field: importers of old captures (no tool_use_id) add it
    # to the envelope data so Pre/Post pairing and hook/transcript joins are deterministic.
    call_key: str | None = None
    # ``outloop_sizes`` (not typed, so a malformed one never rejects a payload) is not a Claude Code
    # field either: the publisher adds it when it redacted the payload, with the sizes of the original
    # content ({"input_bytes": n, "output_bytes": m}); the sessions agent uses and drops it.


class ToolUseRecord(_Closed):
    session_id: str
    tool_use_id: str
    tool_name: str
    tool_input: dict[str, Any] | list[Any] | str | None
    call_key: str
    timestamp: Time | None = None
    agent_id: str | None = None
    is_sidechain: bool = False
    cwd: str | None = None
    # set by the publisher when it redacted ``tool_input``: the size of the original input
    input_bytes: int | None = Field(ge=0, default=None)


class ToolResultRecord(_Closed):
    session_id: str
    tool_use_id: str
    is_error: bool = False
    output_text: str = ""
    timestamp: Time | None = None
    # set by the publisher when it redacted ``output_text``: the size of the original output
    output_bytes: int | None = Field(ge=0, default=None)
    # the tool's own run time, when the transcript's ``toolUseResult`` states one (``durationMs``,
    # ``durationSeconds``, ``totalDurationMs``): free of any wait for the user's permission
    duration_ms: float | None = Field(ge=0, default=None)


class ToolCall(_Closed):
    """One completed (or started, not yet completed) tool call. ``id`` is the tool_use_id when one
    exists, else ``syn:<call_key>``."""

    id: str
    tool_use_id: str | None
    call_key: str | None
    session_id: str
    tool_name: str | None  # None only for a result whose tool_use was never seen
    tool_input: dict[str, Any] | list[Any] | str | None = None
    command: str | None = None
    file_path: str | None = None
    status: Literal["started", "ok", "error", "interrupted"]
    started_at: Time | None = None
    ended_at: Time | None = None
    duration_ms: float | None = None
    input_bytes: int = 0
    output_bytes: int | None = None
    output_tokens_est: int | None = None
    source: str
    # ``duration_ms`` is wall-clock (from the earliest start to the latest end any view saw: it may hold
    # a wait for the user's permission or behind other calls). What the tool's run time is measured
    # from (agents.toolcalls.run_time): the tool's own figure from the transcript, the hook receive
    # times of PreToolUse and PostToolUse, and whether a permission dialog came between them.
    reported_ms: float | None = None
    hook_pre_at: Time | None = None
    hook_post_at: Time | None = None
    permission_asked: bool | None = None


TOKENS_MAX = 10**9
"""The most tokens one API response can count of one kind: a thousand times the largest context window.
A record claiming more is damaged (it becomes a dead letter); sums of many such records stay far inside
the 64-bit integers DuckDB and Arrow add them in."""


class UsageRecord(_Closed):
    """Usage of one API response; ``id`` is ``message.id:requestId``."""

    id: str
    session_id: str
    model: str | None
    timestamp: Time | None
    input_tokens: int = Field(ge=0, le=TOKENS_MAX)
    output_tokens: int = Field(ge=0, le=TOKENS_MAX)
    cache_read_input_tokens: int = Field(ge=0, le=TOKENS_MAX, default=0)
    cache_creation_input_tokens: int = Field(ge=0, le=TOKENS_MAX, default=0)
    cache_creation_5m_tokens: int | None = Field(ge=0, le=TOKENS_MAX, default=None)
    cache_creation_1h_tokens: int | None = Field(ge=0, le=TOKENS_MAX, default=None)
    cost_usd: float | None = None  # from the source when it states one (trajectories), else priced by the agent
    source: str = "transcript"


class ApiMessage(_Closed):
    """One API response as a transcript records it, without its bodies: which tool calls it issued and
    how large its content was, so its usage (same ``id``, ``message.id:requestId``) can be joined to
    the tool calls it paid for. A response is written as several records (one per content block):
    ``content_blocks`` and the byte counts grow as they come; the version with the most wins."""

    id: str
    message_id: str
    request_id: str | None = None
    session_id: str
    model: str | None = None
    timestamp: Time | None = None  # of its first record
    tool_use_ids: list[str] = Field(default_factory=list)  # in the order the response issued them
    content_blocks: int = Field(ge=0, default=0)
    text_bytes: int = Field(ge=0, default=0)  # UTF-8 bytes of its text blocks
    thinking_bytes: int = Field(ge=0, default=0)
    tool_use_bytes: int = Field(ge=0, default=0)  # JSON bytes of its tool inputs
    agent_id: str | None = None
    is_sidechain: bool = False
    source: str = "transcript"


class ContextWindow(_Closed):
    """One context-efficiency window of a session as the sessions agent closed it (or, at a flush
    marker, as it stands: ``closed_at`` empty). See ``agents.contextwindow``."""

    id: str  # '<session_id>:<opened_at ISO>'
    session_id: str
    opened_at: Time
    last_event_at: Time
    closed_at: Time | None = None
    close_reason: str | None = None  # Stop | SessionEnd | inactive | evicted
    events: int = Field(ge=0)
    outputs: int = Field(ge=0)
    loaded_tokens: int = Field(ge=0)
    carry_tokens: int = Field(ge=0)
    reread_tokens: int = Field(ge=0)
    api_calls: int = Field(ge=0)
    max_prompt_tokens: int = Field(ge=0)
    compactions: int = Field(ge=0)
    cache_break_tokens: int = Field(ge=0)


class WorkflowStarted(_Closed):
    run_id: str
    workflow: str
    session_id: str | None = None
    started_at: Time
    attributes: dict[str, Any] = Field(default_factory=dict)


class WorkflowPhaseChanged(_Closed):
    run_id: str
    phase: str
    seq: int = Field(ge=0)
    at: Time


class WorkflowEnded(_Closed):
    run_id: str
    status: Literal["succeeded", "failed", "cancelled"]
    ended_at: Time
    input_tokens: int = Field(ge=0, default=0)
    output_tokens: int = Field(ge=0, default=0)
    cache_read_input_tokens: int = Field(ge=0, default=0)
    cache_creation_input_tokens: int = Field(ge=0, default=0)
    cost_usd: float | None = Field(ge=0, default=None)


class RoutingDecision(_Closed):
    """One decision of the router (``outloop.router``), shadow ones too; ``decision_id`` is stable for
    a tool call (``rd:`` + digest of session and tool_use_id). ``action`` is what the rule decided
    (pass | rewrite | advise | deny); ``answered`` whether the hook printed it (not in shadow mode)."""

    decision_id: str = Field(min_length=1, max_length=512)
    tool_use_id: str | None = None
    session_id: str = Field(min_length=1)
    tool_name: str | None = None
    command: str | None = None
    signature: str | None = None
    category: str | None = None
    side_effect: str | None = None
    rule: str | None = None
    rule_version: str | None = None
    kind: Literal["structured", "generic"] | None = None
    family: str | None = None
    mode: Literal["shadow", "advise", "enforce"]
    action: Literal["pass", "rewrite", "advise", "deny"]
    answered: bool = False
    confidence: int | None = Field(ge=0, le=100, default=None)
    latency_ms: float | None = Field(ge=0, default=None)
    reason: str = ""
    decided_at: Time
    # measured on a recorded or logged output (shadow replay; docs/routing-savings.md), else None
    fidelity: float | None = Field(ge=0, le=1, default=None)
    fidelity_used: int | None = Field(ge=0, default=None)
    raw_tokens: int | None = Field(ge=0, default=None)
    compact_tokens: int | None = Field(ge=0, default=None)
    carry_calls: int | None = Field(ge=0, default=None)
    saved_once_tokens: int | None = None
    net_tokens: int | None = None
    net_usd: float | None = None
    context_tokens: int | None = Field(ge=0, default=None)
    model: str | None = None
    basis: str | None = None  # "estimate" (shadow replay of recorded outputs) or "measured"


class RoutingSaving(_Closed):
    """The fidelity and net saving of one routing decision: a row of ``cost_savings_log``, keyed by the
    decision's ``decision_id``. ``basis`` is ``measured`` (a live run through the runner: its own log
    against what it printed, in the session's transcript) or ``estimate`` (shadow replay of a recorded
    output). A measurement is taken again as the session goes on (the carry grows until a compaction):
    the version with the largest carry, then the most evidence, wins. docs/routing-savings.md."""

    decision_id: str = Field(min_length=1, max_length=512)
    tool_use_id: str | None = None
    session_id: str = Field(min_length=1)
    rule: str | None = None
    rule_version: str | None = None
    kind: Literal["structured", "generic", "guard"] | None = None
    family: str | None = None
    category: str | None = None
    signature: str | None = None
    mode: Literal["shadow", "advise", "enforce"] | None = None
    action: Literal["pass", "rewrite", "advise", "deny"] | None = None
    basis: Literal["measured", "estimate"]
    model: str | None = None
    raw_tokens: int = Field(ge=0)
    compact_tokens: int = Field(ge=0)
    carry_calls: int = Field(ge=0)
    saved_once_tokens: int
    saved_carry_tokens: int  # negative when the runner printed a short output unchanged plus its lines
    charged_tokens: int = Field(ge=0)
    net_tokens: int
    net_usd: float | None = None
    context_tokens: int = Field(ge=0)
    fidelity: float | None = Field(ge=0, le=1, default=None)
    fidelity_used: int = Field(ge=0)
    run_id: str | None = None  # the runner's run (its log and metadata under $OUTLOOP_HOME/runs/)
    decided_at: Time


class RoutingRule(_Closed):
    """A routing rule as the router loaded it; the latest ``updated_at`` of a name is its row."""

    name: str = Field(min_length=1, max_length=200)
    version: str
    family: str
    kind: Literal["structured", "generic"]
    mode: Literal["shadow", "advise", "enforce"]
    signatures: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    threshold: int = Field(ge=0, le=100)
    promote_at: float = Field(ge=0, le=1)
    min_decisions: int = Field(ge=1)
    builtin: bool
    source: str = ""
    updated_at: Time


class RoutingTool(_Closed):
    """A deterministic tool the rules route to: a runner family and how it is started."""

    name: str = Field(min_length=1, max_length=200)
    kind: Literal["structured", "generic"]
    entry: str  # the command line that runs a command through it (COMMAND stands for the command)
    rules: list[str] = Field(default_factory=list)
    version: str
    updated_at: Time


class QuotaDecision(_Closed):
    """A throttle decision of the quota (``agents.quota_risk.ThrottleDecision.as_dict``) as the sink
    decided and stored it (``throttle_decisions``) and published it on the throttle-decisions topic.
    ``id`` is ``throttle:<at>:<window>:<level>``: a replay publishes the same ids."""

    id: str = Field(min_length=1, max_length=512)
    at: Time
    level: Literal["low", "medium", "high", "critical"]
    action: Literal["none", "warn", "deny"]
    window: str | None = None
    percent: float | None = None
    basis: str
    abnormal: bool
    reason: str


class Flush(_Closed):
    marker: str
    partitions: int = Field(ge=1)


class DeadLetter(_Closed):
    """A record outloop could not accept, kept with its original bytes (base64 in JSON) and the reason."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    id: str  # "dl:" + digest of the record key and bytes (see streams.codec.dead_letter)
    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str  # a short machine-readable code, e.g. "not_json", "schema"
    detail: str
    raw: bytes
    at: datetime


EVENT_TYPES: dict[EventType, type[BaseModel]] = {
    EventType.HOOK_EVENT: HookEvent,
    EventType.TOOL_USE: ToolUseRecord,
    EventType.TOOL_RESULT: ToolResultRecord,
    EventType.TOOL_CALL: ToolCall,
    EventType.USAGE: UsageRecord,
    EventType.MESSAGE: ApiMessage,
    EventType.WORKFLOW_STARTED: WorkflowStarted,
    EventType.WORKFLOW_PHASE_CHANGED: WorkflowPhaseChanged,
    EventType.WORKFLOW_ENDED: WorkflowEnded,
    EventType.FLUSH: Flush,
    EventType.ROUTING_DECISION: RoutingDecision,
    EventType.ROUTING_RULE: RoutingRule,
    EventType.ROUTING_TOOL: RoutingTool,
    EventType.QUOTA_DECISION: QuotaDecision,
    EventType.ROUTING_SAVING: RoutingSaving,
}
