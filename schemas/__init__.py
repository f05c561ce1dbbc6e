"""The contract of outloop: event, row and decision models, and the topic catalogue. No I/O here."""

from outloop.schemas.events import (
    EVENT_TYPES,
    DeadLetter,
    Envelope,
    EventType,
    HookEvent,
    ToolCall,
    ToolResultRecord,
    ToolUseRecord,
    UsageRecord,
    WorkflowEnded,
    WorkflowPhaseChanged,
    WorkflowStarted,
)
from outloop.schemas.topics import TOPICS, Topic, TopicCatalogue

__all__ = [
    "EVENT_TYPES",
    "DeadLetter",
    "Envelope",
    "EventType",
    "HookEvent",
    "TOPICS",
    "ToolCall",
    "ToolResultRecord",
    "ToolUseRecord",
    "Topic",
    "TopicCatalogue",
    "UsageRecord",
    "WorkflowEnded",
    "WorkflowPhaseChanged",
    "WorkflowStarted",
]
