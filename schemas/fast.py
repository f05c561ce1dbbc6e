"""msgspec mirrors of the event models of :mod:`schemas.events`, for the agents' fast decode
(:func:`streams.codec.decode_fast`): the same field names, types, defaults and bounds, converted in C.

They are strict (exact JSON types, no coercion) and vouch only for what the pydantic models accept
with the same values; anything they refuse goes to the models, which alone judge a record bad. The
integers are bounded to 64 bits as ``streams.codec._unstorable`` bounds the models' ones. Times are
handed to them only in the form the publisher writes (checked by the codec). The few methods mirror
the pydantic ones the fold uses (``model_copy``, ``model_dump``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from outloop.schemas.events import TOKENS_MAX, EventType

_I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # the models' ints, as _unstorable bounds them
_N64 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # Field(ge=0)
_TOK = Annotated[int, msgspec.Meta(ge=0, le=TOKENS_MAX)]  # UsageRecord's token counts
_ID = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
_NONEMPTY = Annotated[str, msgspec.Meta(min_length=1)]


class FastEnvelope(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """:class:`schemas.events.Envelope`, fields in its order."""

    specversion: Literal["1"] = "1"
    id: _ID
    type: EventType
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    time: datetime | None = None
    subject: _ID
    data: dict[str, Any]

    def model_copy(self, update: dict[str, Any]) -> FastEnvelope:
        return msgspec.structs.replace(self, **update)


class FastHookEvent(msgspec.Struct, kw_only=True):
    """The typed fields of :class:`schemas.events.HookEvent`; unknown fields stay in the envelope's data."""

    session_id: _NONEMPTY
    hook_event_name: _NONEMPTY
    transcript_path: str | None = None
    cwd: str | None = None
    tool_name: str | None = None
    tool_input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    call_key: str | None = None


class FastToolUse(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    session_id: str
    tool_use_id: str
    tool_name: str
    tool_input: dict[str, Any] | list[Any] | str | None
    call_key: str
    timestamp: datetime | None = None
    agent_id: str | None = None
    is_sidechain: bool = False
    cwd: str | None = None
    input_bytes: _N64 | None = None


class FastToolResult(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    session_id: str
    tool_use_id: str
    is_error: bool = False
    output_text: str = ""
    timestamp: datetime | None = None
    output_bytes: _N64 | None = None
    duration_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None


class FastToolCall(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    tool_use_id: str | None
    call_key: str | None
    session_id: str
    tool_name: str | None
    tool_input: dict[str, Any] | list[Any] | str | None = None
    command: str | None = None
    file_path: str | None = None
    status: Literal["started", "ok", "error", "interrupted"]
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: float | None = None
    input_bytes: _I64 = 0
    output_bytes: _I64 | None = None
    output_tokens_est: _I64 | None = None
    source: str
    reported_ms: float | None = None
    hook_pre_at: datetime | None = None
    hook_post_at: datetime | None = None
    permission_asked: bool | None = None

    def model_dump(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


class FastUsage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    session_id: str
    model: str | None
    timestamp: datetime | None
    input_tokens: _TOK
    output_tokens: _TOK
    cache_read_input_tokens: _TOK = 0
    cache_creation_input_tokens: _TOK = 0
    cache_creation_5m_tokens: _TOK | None = None
    cache_creation_1h_tokens: _TOK | None = None
    cost_usd: float | None = None
    source: str = "transcript"

    def model_copy(self, update: dict[str, Any]) -> FastUsage:
        return msgspec.structs.replace(self, **update)


class FastApiMessage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    message_id: str
    request_id: str | None = None
    session_id: str
    model: str | None = None
    timestamp: datetime | None = None
    tool_use_ids: list[str] = msgspec.field(default_factory=list)
    content_blocks: _N64 = 0
    text_bytes: _N64 = 0
    thinking_bytes: _N64 = 0
    tool_use_bytes: _N64 = 0
    agent_id: str | None = None
    is_sidechain: bool = False
    source: str = "transcript"
