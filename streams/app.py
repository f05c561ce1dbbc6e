"""The Faust application factory. Values and keys travel as raw bytes: agents decode them with
:mod:`streams.codec`, so a bad record becomes a dead letter instead of stalling a partition."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from schemas.topics import TopicCatalogue
from streams.settings import Settings


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


def create_app(settings: Settings, bootstrap: str) -> tuple[faust.App, Topics]:
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=max(6.0, settings.rebalance_timeout),
        broker_heartbeat_interval=1.0,
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
    )
    return app, topics
