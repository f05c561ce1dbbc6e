"""An in-process replay with the batching under the test's control: the importers' envelopes, partitioned as
the publisher partitions them, folded by the sessions agent (:func:`agents.sessions.session_records`) in
batches that mix partitions as Faust's ``take_events`` does, and written by the DuckDB sink with the
product's projections in batches whose cross-topic order the test chooses. No broker: what varies between two
runs is only what a broker and a scheduler may vary (batch boundaries, the interleaving of partitions and
of topics), never the order within one topic partition. A flush marker ends every input partition, as
``outloop replay`` sends them, so the sink brings every projection up to date with the last batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from kafka.partitioner.default import murmur2

from outloop.agents.pairing import Pairing
from outloop.agents.pricing import cost_usd
from outloop.agents.sessions import SessionOutputs, flush_value, session_records
from outloop.projections.kinds import standard
from outloop.replay import _flush_envelopes, measured_runs
from outloop.schemas.events import Envelope
from outloop.schemas.topics import TOPICS
from outloop.sinks.writer import DuckSink
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import iter_paths

SESSION_NAMES = SessionOutputs(
    TOPICS.hook_events.name, TOPICS.tool_calls.name, TOPICS.usage.name, TOPICS.dead_letters.name,
    TOPICS.routing_decisions.name, TOPICS.routing_rules.name, TOPICS.adw_tools.name,
    api_messages=TOPICS.api_messages.name, context_windows=TOPICS.context_windows.name,
    routing_savings=TOPICS.routing_savings.name)
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # stamps dead letters (the time a record was refused)

# Bookkeeping, not facts: excluded from the comparison of two replays (docs/determinism.md).
BOOKKEEPING_TABLES = frozenset({"consumer_offsets", "flush_markers"})
BOOKKEEPING_COLUMNS = {"schema_version": frozenset({"applied_at"})}  # when the migration ran

Input = tuple[str, int, int, bytes | None, bytes | None, Any]  # topic, partition, offset, key, value, headers
Output = tuple[str, int, int, bytes | None, bytes | None]  # topic, partition, offset, key, value


@dataclass(frozen=True)
class Batching:
    """How one replay is cut: partitions of the input topics, events per agent batch (taken round-robin
    across partitions, ``stride`` events of a partition at a time), records per sink batch, and whether the
    sink receives each batch's records grouped by topic (a consumer that drains one topic before the next)."""

    partitions: int = 4
    agent_batch: int = 1000
    stride: int = 100
    sink_batch: int = 2000
    by_topic: bool = False


def _inputs(paths: list[Path], partitions: int) -> list[list[Input]]:
    """Every envelope of ``paths`` on its partition (the publisher's default partitioner on the key), and a
    flush marker at the end of each partition."""
    parts: list[list[Input]] = [[] for _ in range(partitions)]
    envelopes: list[Envelope] = [*iter_paths(paths, ImportStats(), messages=True), *measured_runs(paths)]
    for env in envelopes:
        workflow = env.type.value.startswith("workflow.")
        topic = TOPICS.workflows.name if workflow else TOPICS.events.name
        key = env.subject.encode()
        p = (murmur2(key) & 0x7FFFFFFF) % partitions  # kafka-python's default partitioner
        parts[p].append((topic, p, len(parts[p]), key, env.model_dump_json().encode(), None))
    for p, env in enumerate(_flush_envelopes("determinism", partitions)):
        parts[p].append((TOPICS.events.name, p, len(parts[p]), env.subject.encode(),
                         env.model_dump_json().encode(), None))
    return parts


def _agent_batches(parts: list[list[Input]], batching: Batching) -> Iterator[list[Input]]:
    """The input as Faust hands it to an agent: batches mixing the partitions, each partition in order."""
    cursors = [0] * len(parts)
    batch: list[Input] = []
    while any(c < len(p) for c, p in zip(cursors, parts, strict=True)):
        for i, part in enumerate(parts):
            take = part[cursors[i]:cursors[i] + batching.stride]
            cursors[i] += len(take)
            for message in take:
                batch.append(message)
                if len(batch) == batching.agent_batch:
                    yield batch
                    batch = []
    if batch:
        yield batch


def agent_outputs(paths: list[Path], batching: Batching) -> list[Output]:
    """What the agents emit for ``paths`` cut as ``batching`` says, with offsets per topic partition."""
    pairing, windows, stats = Pairing(price=cost_usd), {}, Counter[str]()
    offsets: Counter[tuple[str, int]] = Counter()
    out: list[Output] = []

    def emit(topic: str, key: bytes | None, value: bytes, partition: int) -> None:
        out.append((topic, partition, offsets[(topic, partition)], key, value))
        offsets[(topic, partition)] += 1

    for batch in _agent_batches(_inputs(paths, batching.partitions), batching):
        sessions = [m for m in batch if m[0] == TOPICS.events.name]
        for record in session_records(pairing, sessions, SESSION_NAMES, NOW, stats, windows):
            emit(*record)
        for _, partition, _, key, value, _ in (m for m in batch if m[0] == TOPICS.workflows.name):
            emit(TOPICS.workflow_runs.name, key, value or b"", partition)  # the workflows agent forwards them
    for p in range(batching.partitions):  # the workflows agent's share of the markers
        for topic in (TOPICS.workflow_runs.name, TOPICS.dead_letters.name):
            emit(topic, None, flush_value("determinism:wf", p), p)
    return out


def replay_into(db: Path, paths: list[Path], batching: Batching) -> None:
    """Replay ``paths`` into the DuckDB file ``db`` through the agents and the sink, cut as ``batching`` says."""
    records = agent_outputs(paths, batching)
    with DuckSink(db, clock=lambda: NOW, projections=standard()) as sink:
        for start in range(0, len(records), batching.sink_batch):
            batch = records[start:start + batching.sink_batch]
            if batching.by_topic:
                batch = sorted(batch, key=lambda m: m[0])  # stable: each partition keeps its order
            sink.write_batch(batch)


def tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every base table of ``db`` but the bookkeeping ones, as sorted rows of all its columns."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_name").fetchall()]
        out = {}
        for name in names:
            if name in BOOKKEEPING_TABLES:
                continue
            skip = BOOKKEEPING_COLUMNS.get(name, frozenset())
            cols = [r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall() if r[0] not in skip]
            listed = ", ".join(f'"{c}"' for c in cols)
            rows = con.execute(f'SELECT {listed} FROM "{name}"').fetchall()
            out[name] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


def differences(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]], show: int = 3
                ) -> dict[str, str]:
    """Per table that differs: row counts and the first rows found in one and not the other."""
    out = {}
    for name in sorted(set(a) | set(b)):
        ra, rb = a.get(name, []), b.get(name, [])
        if ra == rb:
            continue
        sa, sb = set(map(repr, ra)), set(map(repr, rb))
        only_a = [r for r in ra if repr(r) not in sb][:show]
        only_b = [r for r in rb if repr(r) not in sa][:show]
        out[name] = f"{len(ra)} vs {len(rb)} rows; only in the first: {only_a}; only in the second: {only_b}"
    return out
