"""The Faust application factory. Values and keys travel as raw bytes: agents decode them with
:mod:`streams.codec`, so a bad record becomes a dead letter instead of stalling a partition."""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.tables import TableManager

from outloop.schemas.topics import TopicCatalogue
from outloop.streams.settings import Settings


class PromptTableManager(TableManager):
    """Faust's table manager without its start-up grace second: Faust sleeps 1 s before it registers
    the tables' changelog channels, for tables declared after the app started, and only then lets
    the consumer subscribe and join its group. This app declares no table, so every worker start
    waited that second for nothing; with tables declared, the wait stays."""

    async def on_start(self) -> None:
        if len(self):
            await super().on_start()
            return
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


@dataclass(frozen=True)
class Topics:
    """The Faust topic objects of one app, by catalogue role."""

    events: faust.TopicT
    workflows: faust.TopicT
    hook_events: faust.TopicT
    tool_calls: faust.TopicT
    usage: faust.TopicT
    workflow_runs: faust.TopicT
    dead_letters: faust.TopicT
    routing_decisions: faust.TopicT
    routing_savings: faust.TopicT
    routing_rules: faust.TopicT
    adw_tools: faust.TopicT
    api_messages: faust.TopicT
    context_windows: faust.TopicT


def stay_in_group_on_close() -> None:
    """Make every consumer of this process stop without sending LeaveGroup; the broker evicts it
    once its session times out instead.

    Why: Tansu 0.6 (the embedded broker) keeps a group's leader when that leader leaves while the
    group is rebalancing, and it only elects a new leader when the old one is evicted for missed
    heartbeats. A worker that stops gracefully during a rebalance (a second worker leaving while
    the first one rejoins after a crash) therefore wedged the group for good: every later member
    joined as a follower of a leader that no longer existed and never got a partition. Eviction
    has no such flaw. The cost is that a stopped worker's partitions move to the others after the
    session timeout (``OUTLOOP_SESSION_TIMEOUT``, 6 s by default) rather than at once.
    ``OUTLOOP_LEAVE_GROUP=1`` restores the leave, for brokers without the flaw."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    if getattr(GroupCoordinator._maybe_leave_group, "outloop_stays", False):
        return

    async def _maybe_leave_group(self: GroupCoordinator) -> None:
        self.reset_generation()  # what aiokafka does after its LeaveGroup, without the request

    _maybe_leave_group.outloop_stays = True  # type: ignore[attr-defined]
    GroupCoordinator._maybe_leave_group = _maybe_leave_group  # type: ignore[method-assign]


def create_app(settings: Settings, bootstrap: str) -> tuple[faust.App, Topics]:
    if not settings.leave_group:
        stay_in_group_on_close()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.consumer_session_timeout,
        broker_heartbeat_interval=settings.consumer_heartbeat_interval,
        broker_commit_interval=1.0,
        producer_acks=-1,
        producer_linger=0.005,
        # a batch of ~1 KB outputs per partition per request instead of 16 KB: fewer produce
        # requests and socket writes per emitted record (the bulk of the agents' produce cost)
        producer_max_batch_size=512 * 1024,
        producer_max_request_size=4 * 1024 * 1024,
        store="memory://",
        web_enabled=True,
        web_bind=settings.http_host,
        web_host=settings.http_host,
        web_port=settings.http_port,
        web_in_thread=False,
        datadir=str(settings.home / "faust"),
        autodiscover=False,
        TableManager=PromptTableManager,
    )
    cat = TopicCatalogue(prefix=settings.topic_prefix)

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, partitions=settings.partitions, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")

    topics = Topics(
        events=topic(cat.events.name),
        workflows=topic(cat.workflows.name),
        hook_events=topic(cat.hook_events.name),
        tool_calls=topic(cat.tool_calls.name),
        usage=topic(cat.usage.name),
        workflow_runs=topic(cat.workflow_runs.name),
        dead_letters=topic(cat.dead_letters.name),
        routing_decisions=topic(cat.routing_decisions.name),
        routing_savings=topic(cat.routing_savings.name),
        routing_rules=topic(cat.routing_rules.name),
        adw_tools=topic(cat.adw_tools.name),
        api_messages=topic(cat.api_messages.name),
        context_windows=topic(cat.context_windows.name),
    )
    return app, topics
