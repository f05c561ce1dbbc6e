"""The output registry: every record the agents write and the sink stores, declared once.

An :class:`Output` names the record's kind (its topic's suffix), the pydantic model that judges it, the
table it is stored in, the table's key and its staged columns (name, type, nullability), and the rule
that merges two versions of one key. From it are derived:

* the output topics (``schemas.topics.TopicCatalogue.outputs``);
* the sink's decoding table (topic -> table) and its Arrow staging schemas (``sinks.decode``);
* the ``CREATE TABLE`` of a new output (``sinks.schema.create_table``);
* the merge SQL - the fold of a batch's versions and the upsert against the stored row - for the rules
  ``smallest`` (the version whose own columns, all but the key, are smallest wins), ``latest`` (the
  latest ``updated_at``, then the smallest own columns) and ``ranked`` (a named rank of ``sinks.upsert``,
  largest wins); ``tool_call`` is the field-by-field merge of ``agents.toolcalls.merge_tool_calls``.

Adding an output: an entry here and the agent (fold) that writes it. Column types: ``text``, ``json``
(JSON text), ``int`` (64 bits), ``int32``, ``float``, ``bool``, ``time`` (UTC), ``date``, ``bytes``; a trailing
``!`` means NOT NULL. The contract is a leaf: nothing here knows Arrow or DuckDB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from outloop.schemas.events import (
    ApiMessage,
    ContextWindow,
    DeadLetter,
    Envelope,
    HookEvent,
    RoutingDecision,
    RoutingRule,
    RoutingSaving,
    RoutingTool,
    ToolCall,
    UsageRecord,
)

TYPES = frozenset({"text", "json", "int", "int32", "float", "bool", "time", "date", "bytes"})
MERGES = frozenset({"smallest", "latest", "ranked", "tool_call"})


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True


def cols(*specs: str) -> tuple[Column, ...]:
    """Columns from ``"name type"`` specs (``!`` after the type: NOT NULL)."""
    out = []
    for spec in specs:
        name, kind = spec.split()
        out.append(Column(name, kind.rstrip("!"), not kind.endswith("!")))
    return tuple(out)


@dataclass(frozen=True)
class Output:
    kind: str  # the topic's suffix: records of <prefix>.<kind>
    table: str
    key: str  # the primary key column
    topic_key: str  # what the message key holds
    doc: str
    merge: str  # one of MERGES
    columns: tuple[Column, ...]
    model: type[BaseModel] | None = None  # the model that judges a record (its envelope's data, or the record)
    rank: str | None = None  # the named rank of a ``ranked`` merge
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(c.name for c in self.columns))
        bad = [c.type for c in self.columns if c.type not in TYPES]
        if bad:
            raise ValueError(f"{self.table}: unknown column types {bad}")
        if self.merge not in MERGES:
            raise ValueError(f"{self.table}: unknown merge rule {self.merge!r}")
        if (self.merge == "ranked") != (self.rank is not None):
            raise ValueError(f"{self.table}: a ranked merge, and only it, names a rank")
        if self.key not in self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"{self.table}: the key must be one of its columns, each named once")
        if self.merge == "latest" and "updated_at" not in self.names:
            raise ValueError(f"{self.table}: a latest merge needs an updated_at column")

    @property
    def own(self) -> tuple[str, ...]:
        """Every column but the key: what a ``smallest`` merge compares."""
        return tuple(n for n in self.names if n != self.key)


class Registry:
    """The outputs, in the order the sink writes their tables; kinds and tables each unique."""

    def __init__(self, outputs: tuple[Output, ...]) -> None:
        self.outputs = outputs
        self.by_kind = {o.kind: o for o in outputs}
        self.by_table = {o.table: o for o in outputs}
        if len(self.by_kind) != len(outputs) or len(self.by_table) != len(outputs):
            raise ValueError("two outputs share a kind or a table")

    def __iter__(self) -> Iterator[Output]:
        return iter(self.outputs)

    def with_output(self, output: Output) -> Registry:
        """This registry and one more output (tests, extensions)."""
        return Registry((*self.outputs, output))


OUTPUTS = Registry((
    Output(
        kind="hook-events", table="hook_events", key="id", topic_key="session_id", model=HookEvent,
        doc="validated hook events (envelopes)",
        merge="smallest",
        columns=cols("id text!", "session_id text", "hook_event_name text", "tool_name text", "tool_use_id text",
                     "received_at time", "source text", "payload json"),
    ),
    Output(
        kind="tool-calls", table="tool_calls", key="id", topic_key="session_id", model=ToolCall,
        doc="paired tool calls",
        merge="tool_call",
        columns=cols("id text!", "tool_use_id text", "call_key text", "session_id text!", "tool_name text",
                     "command text", "file_path text", "status text!", "started_at time", "ended_at time",
                     "duration_ms float", "input_bytes int", "output_bytes int", "output_tokens_est int",
                     "source text!", "reported_ms float", "hook_pre_at time", "hook_post_at time",
                     "permission_asked bool", "tool_input json"),
    ),
    Output(
        kind="usage", table="usage", key="id", topic_key="session_id", model=UsageRecord,
        doc="deduplicated, priced usage records",
        merge="ranked", rank="usage",
        columns=cols("id text!", "session_id text!", "model text", "timestamp time", "input_tokens int!",
                     "output_tokens int!", "cache_read_input_tokens int!", "cache_creation_input_tokens int!",
                     "cache_creation_5m_tokens int", "cache_creation_1h_tokens int", "cost_usd float", "source text"),
    ),
    Output(
        kind="workflow-runs", table="workflow_events", key="id", topic_key="run_id", model=Envelope,
        doc="validated workflow run events",
        merge="smallest",
        columns=cols("id text!", "run_id text!", "type text!", "at time", "source text", "data json"),
    ),
    Output(
        kind="dlq", table="dead_letters", key="id", topic_key="original key", model=DeadLetter,
        doc="rejected records with their bytes and a reason",
        merge="ranked", rank="dead_letter",
        columns=cols("id text!", "topic text", "partition int32", "offset int", "key text", "reason text!",
                     "detail text", "raw bytes", "at time!"),
    ),
    Output(
        kind="routing-decisions", table="routing_decisions", key="decision_id", topic_key="session_id",
        model=RoutingDecision,
        doc="the router's decisions, shadow ones too",
        merge="smallest",
        columns=cols("decision_id text!", "tool_use_id text", "session_id text!", "tool_name text", "command text",
                     "signature text", "category text", "side_effect text", "rule text", "rule_version text",
                     "kind text", "family text", "mode text!", "action text!", "answered bool", "confidence int32",
                     "latency_ms float", "reason text", "decided_at time", "fidelity float", "fidelity_used int32",
                     "raw_tokens int", "compact_tokens int", "carry_calls int32", "saved_once_tokens int",
                     "net_tokens int", "net_usd float", "context_tokens int", "model text", "basis text"),
    ),
    Output(
        kind="routing-savings", table="cost_savings_log", key="decision_id", topic_key="session_id",
        model=RoutingSaving,
        doc="fidelity and net saving of routing decisions",
        merge="ranked", rank="saving",
        columns=cols("decision_id text!", "tool_use_id text", "session_id text!", "day date", "rule text",
                     "rule_version text", "kind text", "family text", "category text", "signature text", "mode text",
                     "action text", "basis text!", "model text", "raw_tokens int", "compact_tokens int",
                     "carry_calls int32", "saved_once_tokens int", "saved_carry_tokens int", "charged_tokens int",
                     "net_tokens int", "net_usd float", "context_tokens int", "fidelity float", "fidelity_used int32",
                     "run_id text", "decided_at time"),
    ),
    Output(
        kind="routing-rules", table="routing_rules", key="name", topic_key="subject", model=RoutingRule,
        doc="routing rules as the router loaded them",
        merge="latest",
        columns=cols("name text!", "version text!", "family text", "kind text", "mode text", "signatures json",
                     "categories json", "exclude json", "threshold int32", "promote_at float", "min_decisions int32",
                     "builtin bool", "source text", "updated_at time!"),
    ),
    Output(
        kind="adw-tools", table="adw_tools", key="name", topic_key="subject", model=RoutingTool,
        doc="the deterministic tools routing rules name",
        merge="latest",
        columns=cols("name text!", "kind text", "entry text", "rules json", "version text", "updated_at time!"),
    ),
    Output(
        kind="api-messages", table="api_messages", key="id", topic_key="session_id", model=ApiMessage,
        doc="API responses of transcripts: ids, model, sizes",
        merge="ranked", rank="message",
        columns=cols("id text!", "message_id text!", "request_id text", "session_id text!", "model text",
                     "timestamp time", "tool_use_ids json", "content_blocks int!", "text_bytes int!",
                     "thinking_bytes int!", "tool_use_bytes int!", "agent_id text", "is_sidechain bool",
                     "source text"),
    ),
    Output(
        kind="context-windows", table="context_windows", key="id", topic_key="session_id", model=ContextWindow,
        doc="per-session context-efficiency windows",
        merge="ranked", rank="window",
        columns=cols("id text!", "session_id text!", "opened_at time", "last_event_at time", "closed_at time",
                     "close_reason text", "events int", "outputs int", "loaded_tokens int", "carry_tokens int",
                     "reread_tokens int", "api_calls int", "max_prompt_tokens int", "compactions int",
                     "cache_break_tokens int"),
    ),
))
