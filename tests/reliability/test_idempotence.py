"""Idempotence of the DuckDB sink, as a property (no broker).

The records the sessions agent emits for a synthetic input - some inputs redelivered to the agent
(as after a rebalance), which makes it emit other, more merged views - (tool-call views, usage
records, hook events, dead letters, plus one record the sink cannot decode) are laid into per-partition logs in a
random order that keeps each session's own order (sessions interleave at random), with producer
retries appended as duplicates. The logs are then delivered the way an at-least-once consumer
might: partitions interleaved at random, random batch boundaries (several partitions per batch),
and random rewinds that read an already written stretch again. After a final flush marker every
data table - including pattern_occurrences, operation_patterns and session_sequences - must equal
the one of a clean single pass, and the rows must equal the in-memory recomputation.
"""

from __future__ import annotations

import random
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outloop.agents.pairing import BatchOut, Pairing, tool_call_model
from outloop.projections import open_sink
from outloop.schemas.events import EventType
from outloop.streams.codec import Decoded, Rejected, dead_letter, decode
from tests.reliability.recompute import (
    T0,
    Input,
    Message,
    differences,
    envelope,
    outputs,
    recompute,
    stored,
    synthetic,
)

PREFIX, PARTITIONS = "t", 2
TABLES = ("hook_events", "tool_calls", "usage", "workflow_runs", "workflow_events", "dead_letters",
          "pattern_occurrences", "operation_patterns", "session_sequences")
SKIP = {"dead_letters": {"offset"}}  # a sink_decode dead letter keeps the log position it was first read at
INPUTS = synthetic(seed=9, sessions=4, calls=8) + [(b"s9x000", b"{not json"), (b"s9x001", b"[1]")]
JUNK: Message = (f"{PREFIX}.usage", 0, 0, b"s", b"junk: not a record")
BASE = outputs(INPUTS, PREFIX, PARTITIONS) + [JUNK]  # the clean pass: every input once
EXPECTED = recompute(INPUTS)
EXPECTED.dead_letters[dead_letter(JUNK[4], Rejected("sink_decode", ""), *JUNK[:4]).id] = "sink_decode"
OUTPUT_TOPICS = ("hook-events", "tool-calls", "usage", "dlq")


def marker(name: str) -> list[Message]:
    value = orjson.dumps({"control": "flush", "marker": name})
    return [(f"{PREFIX}.{t}", p, 10**9, None, value) for t in OUTPUT_TOPICS for p in range(PARTITIONS)]


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for table in TABLES:
            cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall() if r[0] not in SKIP.get(table, ())]
            quoted = ", ".join(f'"{c}"' for c in cols)
            out[table] = sorted(con.execute(f"SELECT {quoted} FROM {table}").fetchall(), key=repr)
        return out
    finally:
        con.close()


def redeliver(rng: random.Random, inputs: list[Input], rate: float) -> list[Input]:
    """Inputs as an agent may read them: some read again a little later (at-least-once)."""
    out = list(inputs)
    for i in reversed(range(len(inputs))):
        if rng.random() < rate:
            out.insert(rng.randrange(i + 1, min(len(out), i + 40) + 1), inputs[i])
    return out


def logs(rng: random.Random, base: list[Message], dup_rate: float) -> dict[tuple[str, int], list[Message]]:
    """Per (topic, partition): the records with sessions interleaved at random (each session's order
    kept) and producer-retry duplicates appended later; offsets as the broker would assign them."""
    per: dict[tuple[str, int], dict[bytes | None, list[Message]]] = defaultdict(lambda: defaultdict(list))
    for m in base:
        per[(m[0], m[1])][m[3]].append(m)
    out: dict[tuple[str, int], list[Message]] = {}
    for tp, sessions in sorted(per.items()):
        queues = [list(reversed(q)) for _, q in sorted(sessions.items(), key=lambda kv: kv[0] or b"")]
        seq: list[Message] = []
        while queues:
            q = rng.choice(queues)
            m = q.pop()
            seq.append(m)
            if rng.random() < dup_rate:  # a retried send lands again, a little later
                q.insert(rng.randrange(len(q) + 1), m)
            if not q:
                queues.remove(q)
        out[tp] = [(t, p, offset, k, v) for offset, (t, p, _, k, v) in enumerate(seq)]
    return out


def deliveries(rng: random.Random, parts: dict[tuple[str, int], list[Message]], max_batch: int,
               rewind_rate: float) -> list[list[Message]]:
    """Batches as a consumer reads them: partitions in order, interleaved at random, each batch
    with random chunks of one or more partitions; now and then a partition re-reads a stretch."""
    pos = dict.fromkeys(parts, 0)
    batches: list[list[Message]] = []
    while open_ := sorted(tp for tp in parts if pos[tp] < len(parts[tp])):
        batch: list[Message] = []
        for tp in rng.sample(open_, rng.randrange(1, len(open_) + 1)):
            if rng.random() < rewind_rate and pos[tp]:  # read a stretch again (at most a batch's worth)
                pos[tp] = max(0, pos[tp] - rng.randrange(1, max_batch + 1))
            take = rng.randrange(1, max_batch + 1)
            batch += parts[tp][pos[tp]:pos[tp] + take]
            pos[tp] += take
        batches.append(batch)
    return batches


def materialize(db: Path, batches: list[list[Message]]) -> dict[str, list[tuple[Any, ...]]]:
    with open_sink(db, clock=lambda: T0) as sink:
        for batch in batches + [marker("end")]:
            sink.write_batch(batch)
    return dump(db)


def test_clean_pass_equals_the_recomputation(tmp_path: Path) -> None:
    materialize(tmp_path / "clean.duckdb", [BASE])
    assert differences(stored(tmp_path / "clean.duckdb"), EXPECTED) == {}
    assert len(EXPECTED.dead_letters) >= 3 and len(EXPECTED.tool_calls) >= 30


_CLEAN: dict[str, Any] = {}


def clean_dump() -> dict[str, list[tuple[Any, ...]]]:
    if not _CLEAN:
        with tempfile.TemporaryDirectory() as d:
            _CLEAN.update(materialize(Path(d) / "clean.duckdb", [BASE]))
    return _CLEAN


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), dup_rate=st.sampled_from([0.0, 0.05, 0.3]),
       agent_dup_rate=st.sampled_from([0.0, 0.1]),
       max_batch=st.sampled_from([8, 32, 1000]), rewind_rate=st.sampled_from([0.0, 0.05, 0.15]))
def test_duplication_reordering_and_batching_never_change_the_state(seed: int, dup_rate: float, agent_dup_rate: float,
                                                                    max_batch: int, rewind_rate: float) -> None:
    rng = random.Random(seed)
    base = outputs(redeliver(rng, INPUTS, agent_dup_rate), PREFIX, PARTITIONS) + [JUNK] if agent_dup_rate else BASE
    batches = deliveries(rng, logs(rng, base, dup_rate), max_batch, rewind_rate)
    with tempfile.TemporaryDirectory() as d:
        got = materialize(Path(d) / "sink.duckdb", batches)
        rows = stored(Path(d) / "sink.duckdb")
    clean = clean_dump()
    changed = {t: (len(got[t]), len(clean[t])) for t in TABLES if got[t] != clean[t]}
    assert not changed, f"tables differ from the clean pass (rows got, clean): {changed}"
    assert differences(rows, EXPECTED) == {}
    assert sum(map(len, batches)) >= len(base)


def test_a_redelivered_tool_result_still_makes_a_tool_call() -> None:
    """Two views of a transcript tool_result (read twice by one worker, as after a rebalance) both
    lack input_bytes; their merge must still make a valid ToolCall. It raised a ValidationError that
    crashed the sessions agent, whose whole batch was then lost."""
    _, value = envelope("tr:x", EventType.TOOL_RESULT, "s", {"session_id": "s", "tool_use_id": "toolu_x",
                                                            "output_text": "3 passed"}, T0, "transcript")
    pairing, batch = Pairing(), BatchOut()
    for _ in range(2):
        result = decode(value)
        assert isinstance(result, Decoded)
        pairing.apply(result.envelope, result.data, batch)
    call = tool_call_model(batch.tool_calls["toolu_x"])
    assert (call.input_bytes, call.output_bytes, call.status) == (0, 8, "ok")


def test_the_property_can_fail() -> None:
    """The comparison sees a lost record: dropping one tool-call view changes the state."""
    rng = random.Random(3)
    parts = logs(rng, BASE, 0.0)
    tp = next(tp for tp in parts if tp[0].endswith("tool-calls"))
    victim = parts[tp][-1]
    parts[tp] = [m for m in parts[tp] if m[4] != victim[4]]
    with tempfile.TemporaryDirectory() as d:
        got = materialize(Path(d) / "sink.duckdb", deliveries(rng, parts, 50, 0.0))
    assert got != clean_dump()
