"""The topic catalogue: every topic outloop reads or writes, its key and its partition count.

Session-scoped topics share one partition count and are keyed by ``session_id`` so that they are
co-partitioned; workflow topics are keyed by ``run_id``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    key: str  # what the message key holds
    doc: str
    role: str  # "input" (published by producers), "output" (written by the agents, stored by the sink) or
    # "published" (written by the sink for subscribers, e.g. dashboards; the sink stores it itself)


@dataclass(frozen=True)
class TopicCatalogue:
    prefix: str = "outloop"

    def _t(self, suffix: str, key: str, doc: str, role: str) -> Topic:
        return Topic(f"{self.prefix}.{suffix}", key, doc, role)

    @property
    def events(self) -> Topic:
        return self._t("events", "session_id", "session-scoped input envelopes (hooks, transcripts)", "input")

    @property
    def workflows(self) -> Topic:
        return self._t("workflows", "run_id", "workflow run events published by ADWs", "input")

    @property
    def hook_events(self) -> Topic:
        return self._t("hook-events", "session_id", "validated hook events (envelopes)", "output")

    @property
    def tool_calls(self) -> Topic:
        return self._t("tool-calls", "session_id", "paired tool calls", "output")

    @property
    def usage(self) -> Topic:
        return self._t("usage", "session_id", "deduplicated, priced usage records", "output")

    @property
    def api_messages(self) -> Topic:
        return self._t("api-messages", "session_id", "API responses of transcripts: ids, model, sizes", "output")

    @property
    def workflow_runs(self) -> Topic:
        return self._t("workflow-runs", "run_id", "validated workflow run events", "output")

    @property
    def routing_decisions(self) -> Topic:
        return self._t("routing-decisions", "session_id", "the router's decisions, shadow ones too", "output")

    @property
    def routing_savings(self) -> Topic:
        return self._t("routing-savings", "session_id", "fidelity and net saving of routing decisions", "output")

    @property
    def routing_rules(self) -> Topic:
        return self._t("routing-rules", "subject", "routing rules as the router loaded them", "output")

    @property
    def adw_tools(self) -> Topic:
        return self._t("adw-tools", "subject", "the deterministic tools routing rules name", "output")

    @property
    def context_windows(self) -> Topic:
        return self._t("context-windows", "session_id", "per-session context-efficiency windows", "output")

    @property
    def throttle_decisions(self) -> Topic:
        return self._t("throttle-decisions", "'quota'", "quota throttle decisions, as the sink stores them",
                       "published")

    @property
    def dead_letters(self) -> Topic:
        return self._t("dlq", "original key", "rejected records with their bytes and a reason", "output")

    def all(self) -> list[Topic]:
        return [
            self.events,
            self.workflows,
            self.hook_events,
            self.tool_calls,
            self.usage,
            self.api_messages,
            self.workflow_runs,
            self.dead_letters,
            self.routing_decisions,
            self.routing_savings,
            self.routing_rules,
            self.adw_tools,
            self.context_windows,
            self.throttle_decisions,
        ]

    def outputs(self) -> list[Topic]:
        return [t for t in self.all() if t.role == "output"]


TOPICS = TopicCatalogue()
