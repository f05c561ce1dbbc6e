"""Versions of one key that tie on their table's rule are told apart by their own columns, in SQL
(no record digest): migration 5 drops the digest columns of a version-4 database in place, and the
agents' "usage wins" rule picks the version the sink keeps."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outloop.agents.pairing import usage_wins
from outloop.projections import open_sink
from outloop.schemas.events import UsageRecord
from outloop.sinks.schema import SCHEMA_VERSION, migrate
from tests.unit import sinkdata as d


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]).fetchall()]


def test_migration_5_drops_the_digests_of_a_version_4_database(tmp_path: Path) -> None:
    db = tmp_path / "v4.duckdb"
    con = duckdb.connect(str(db))
    assert migrate(con, upto=4) == 4
    con.execute("SET TimeZone = 'UTC'")
    con.execute("INSERT INTO usage VALUES ('m1:r', 's1', 'claude', ?, 10, 5, 0, 0, NULL, NULL, 0.5, 'transcript', "
                "'ffff')", [d.T0])
    con.execute("INSERT INTO hook_events VALUES ('h1', 's1', 'PreToolUse', 'Bash', 'toolu_1', ?, 'hook', "
                "'{\"session_id\":\"s1\"}', 'abcd')", [d.T0])
    con.execute("INSERT INTO workflow_events VALUES ('w1', 'run1', 'workflow.started', ?, 'adw', '{}', '0123')",
                [d.T0])
    assert "digest" in _columns(con, "usage")
    con.close()
    with open_sink(db, clock=d.clock) as sink:
        for table in ("usage", "hook_events", "workflow_events"):
            assert "digest" not in _columns(sink.con, table)
        assert sink.query("SELECT max(version) FROM schema_version")[1] == [[SCHEMA_VERSION]] and SCHEMA_VERSION >= 5
        assert sink.query("SELECT id, input_tokens, cost_usd FROM usage")[1] == [["m1:r", 10, 0.5]]
        assert sink.query("SELECT id, tool_use_id FROM hook_events")[1] == [["h1", "toolu_1"]]
        assert sink.query("SELECT id, run_id FROM workflow_events")[1] == [["w1", "run1"]]
        # the stored rows go on taking versions: a larger usage wins, a tie is decided by the columns
        sink.write_batch(d.with_offsets([d.usage_msg(id="m1:r", input_tokens=10, output_tokens=5, cost_usd=0.5,
                                                     model="claude", session_id="s2")]))
        assert sink.query("SELECT session_id FROM usage")[1] == [["s2"]]
        sink.write_batch(d.with_offsets([d.usage_msg(id="m1:r", input_tokens=11, output_tokens=5)]))
        assert sink.query("SELECT input_tokens, session_id FROM usage")[1] == [[11, "s1"]]
        sink.write_batch(d.with_offsets([d.hook_msg("h1", tool_use_id="toolu_0")]))
        assert sink.query("SELECT tool_use_id FROM hook_events")[1] == [["toolu_0"]]  # the smaller row


_RUN = itertools.count()
TIED = st.fixed_dictionaries({
    "session_id": st.sampled_from(["s1", "s2", "é"]), "model": st.sampled_from([None, "a", "b"]),
    "timestamp": st.sampled_from([None, d.T0, d.T0 + timedelta(microseconds=1)]),
    "cache_creation_5m_tokens": st.sampled_from([None, 0, 7]), "cache_creation_1h_tokens": st.sampled_from([None, 3]),
    "cost_usd": st.sampled_from([None, 0.0, -0.0, 0.25]), "source": st.sampled_from(["transcript", "trajectory"]),
    "in_out": st.sampled_from([(10, 5), (5, 10), (14, 1)]),
})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(TIED, min_size=2, max_size=4))
def test_the_agents_usage_rule_keeps_the_version_the_sink_keeps(tmp_path: Path, versions: list[dict[str, Any]]
                                                                ) -> None:
    """Versions with equal totals (and often equal output and cost): whichever order and batching they
    come in, the sink stores the version ``usage_wins`` picks over all of them."""
    records = []
    for v in versions:
        (i, o), rest = v["in_out"], {k: x for k, x in v.items() if k != "in_out"}
        records.append(UsageRecord.model_validate({"id": "m1:r", "input_tokens": i, "output_tokens": o, **rest}))
    best = records[0]
    for r in records[1:]:
        if usage_wins(r, best):
            best = r
    for n, order in enumerate(itertools.islice(itertools.permutations(records), 3)):
        msgs = d.with_offsets([(f"{d.PREFIX}.usage", b"s1", r.model_dump_json().encode()) for r in order])
        path = tmp_path / f"u{n}-{next(_RUN)}.duckdb"
        with open_sink(path, clock=d.clock) as sink:
            sink.write_batch(msgs[:1])
            sink.write_batch(msgs[1:])  # a stored row against the batch, and versions folded in the batch
            cols = list(UsageRecord.model_fields)
            got = sink.query(f"SELECT {', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)} FROM usage")[1]
            stored = UsageRecord.model_validate(dict(zip(cols, got[0], strict=True)))
            assert stored == best
            if best.cost_usd == 0.0:  # a zero cost is stored as 0.0 (DuckDB does not update 0.0 to -0.0)
                assert sink.query("SELECT cost_usd::VARCHAR FROM usage")[1] == [["0.0"]]
        for leftover in tmp_path.glob(f"{path.name}*"):  # many examples: leave no files behind
            leftover.unlink()
