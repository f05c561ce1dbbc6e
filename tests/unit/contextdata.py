"""Real traces through the real pipeline without a broker: the importers' envelopes, the sessions
agent's fold (:func:`agents.sessions.session_records`) and the DuckDB sink, in process."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from outloop.agents.pairing import Pairing
from outloop.agents.pricing import cost_usd
from outloop.agents.sessions import SessionOutputs, session_records
from outloop.projections.context import refresh_context
from outloop.projections.patterns import refresh
from outloop.replay import _flush_envelopes
from outloop.schemas.topics import TOPICS
from outloop.sinks.writer import DuckSink
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import iter_paths

NAMES = SessionOutputs(TOPICS.hook_events.name, TOPICS.tool_calls.name, TOPICS.usage.name, TOPICS.dead_letters.name,
                       api_messages=TOPICS.api_messages.name, context_windows=TOPICS.context_windows.name)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def outputs(paths: list[Path]) -> list[tuple[str, int, int, bytes | None, bytes | None]]:
    """What the sessions agent emits for ``paths`` as sink messages (topic, partition, offset, key, value)."""
    stats: dict[str, int] = Counter()
    pairing = Pairing(price=cost_usd)
    envelopes = [*iter_paths(paths, ImportStats(), messages=True), *_flush_envelopes("ctx-test", 1)]
    messages = [(TOPICS.events.name, 0, i, env.subject.encode(), env.model_dump_json().encode(), None)
                for i, env in enumerate(envelopes)]
    offsets: Counter[str] = Counter()
    out = []
    for topic, key, value, partition in session_records(pairing, messages, NAMES, NOW, stats, {}):
        out.append((topic, partition, offsets[topic], key, value))
        offsets[topic] += 1
    return out


def load(sink: DuckSink, paths: list[Path], batch: int = 2000) -> None:
    """Write the outputs for ``paths`` in batches, then refresh every derived table."""
    msgs = outputs(paths)
    for start in range(0, len(msgs), batch):
        sink.write_batch(msgs[start:start + batch])
    with sink.transaction() as con:
        refresh(con, True, True)
        refresh_context(con)
