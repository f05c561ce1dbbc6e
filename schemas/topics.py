"""The topic catalogue: every topic outloop reads or writes, its key and its partition count.

The output topics are those of the output registry (``schemas.registry``), one per output.
Session-scoped topics share one partition count and are keyed by ``session_id`` so that they are
co-partitioned; workflow topics are keyed by ``run_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from outloop.schemas.registry import OUTPUTS, Registry


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
    registry: Registry = field(default=OUTPUTS, compare=False, repr=False)  # the output topics

    def _t(self, suffix: str, key: str, doc: str, role: str) -> Topic:
        return Topic(f"{self.prefix}.{suffix}", key, doc, role)

    @property
    def events(self) -> Topic:
        return self._t("events", "session_id", "session-scoped input envelopes (hooks, transcripts)", "input")

    @property
    def workflows(self) -> Topic:
        return self._t("workflows", "run_id", "workflow run events published by ADWs", "input")

    def output(self, kind: str) -> Topic:
        """The output topic of ``kind`` (``schemas.registry``)."""
        o = self.registry.by_kind[kind]
        return self._t(o.kind, o.topic_key, o.doc, "output")

    @property
    def hook_events(self) -> Topic:
        return self.output("hook-events")

    @property
    def tool_calls(self) -> Topic:
        return self.output("tool-calls")

    @property
    def usage(self) -> Topic:
        return self.output("usage")

    @property
    def api_messages(self) -> Topic:
        return self.output("api-messages")

    @property
    def workflow_runs(self) -> Topic:
        return self.output("workflow-runs")

    @property
    def routing_decisions(self) -> Topic:
        return self.output("routing-decisions")

    @property
    def routing_savings(self) -> Topic:
        return self.output("routing-savings")

    @property
    def routing_rules(self) -> Topic:
        return self.output("routing-rules")

    @property
    def adw_tools(self) -> Topic:
        return self.output("adw-tools")

    @property
    def context_windows(self) -> Topic:
        return self.output("context-windows")

    @property
    def dead_letters(self) -> Topic:
        return self.output("dlq")

    @property
    def throttle_decisions(self) -> Topic:
        return self._t("throttle-decisions", "'quota'", "quota throttle decisions, as the sink stores them",
                       "published")

    def all(self) -> list[Topic]:
        return [self.events, self.workflows, *self.outputs(), self.throttle_decisions]

    def outputs(self) -> list[Topic]:
        """Every output topic: one per output of the registry."""
        return [self.output(o.kind) for o in self.registry]


TOPICS = TopicCatalogue()
