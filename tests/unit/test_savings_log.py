"""``cost_savings_log`` as a table the real DuckDB sink writes from ``routing.saving`` events (through the
sessions agent), and the measured columns of the live decision it fills in ``routing_decisions``: the
same rows whatever the order, the batches and the redeliveries; migration 14 from a version-12 file."""

from __future__ import annotations

import collections
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from outloop.agents.pairing import Pairing
from outloop.agents.sessions import SessionOutputs, session_records
from outloop.projections import open_sink
from outloop.router.decide import decide
from outloop.router.rules import build
from outloop.router.server import decision_envelope
from outloop.router.state import decision_id, decision_record
from outloop.savings import savings_sql
from outloop.schemas.events import EventType, RoutingSaving
from outloop.sinks.schema import migrate
from outloop.streams.importers import make_envelope

NAMES = SessionOutputs("outloop.hook-events", "outloop.tool-calls", "outloop.usage", "outloop.dlq")
NOW = 1_780_000_000.0
SESSION = "sess-live"


def _decision(tool_use_id: str) -> bytes:
    payload = {"session_id": SESSION, "hook_event_name": "PreToolUse", "tool_name": "Bash",
               "tool_input": {"command": "pytest -q"}, "tool_use_id": tool_use_id, "cwd": "/repo"}
    rules = build({"rules": {"pytest": {"mode": "enforce", "threshold": 0}}})
    d = decide("Bash", payload["tool_input"], "/repo", None, rules, {}, NOW)  # type: ignore[arg-type]
    return orjson.dumps(orjson.loads(decision_envelope(decision_record(d, payload, NOW, 0.4), int(NOW * 1e9))))


def _saving(tool_use_id: str, carry: int, used: int = 2, raw: int = 900, compact: int = 100) -> bytes:
    data: dict[str, Any] = {
        "decision_id": decision_id(SESSION, tool_use_id, 0), "tool_use_id": tool_use_id, "session_id": SESSION,
        "rule": "pytest", "kind": "structured", "family": "pytest", "mode": "enforce", "action": "rewrite",
        "basis": "measured", "model": "claude-sonnet-4-5-20250929", "raw_tokens": raw, "compact_tokens": compact,
        "carry_calls": carry, "saved_once_tokens": raw - compact, "saved_carry_tokens": (raw - compact) * carry,
        "charged_tokens": 0, "net_tokens": (raw - compact) * carry, "net_usd": 0.001 * carry,
        "context_tokens": 20_000, "fidelity": 1.0, "fidelity_used": used, "run_id": "20261206T100000000Z-1-ab",
        "decided_at": "2026-12-06T23:30:00Z"}
    env = make_envelope(RoutingSaving.model_validate(data), id=f"saving:{tool_use_id}:{carry}:{used}",
                        type=EventType.ROUTING_SAVING, source="runner", subject=SESSION, time=None)
    return env.model_dump_json().encode()


def _records(values: list[bytes]) -> list[tuple[str, bytes | None, bytes]]:
    stats: collections.Counter[str] = collections.Counter()
    messages = [("outloop.events", 0, i, SESSION.encode(), v, []) for i, v in enumerate(values)]
    out = session_records(Pairing(), messages, NAMES, datetime.now(UTC), stats)  # type: ignore[arg-type]
    return [(t, k, v) for t, k, v, _ in out]


def _tables(db: Path) -> tuple[list[Any], list[Any]]:
    with open_sink(db) as sink:
        _, log = sink.query("SELECT * FROM cost_savings_log ORDER BY decision_id")
        _, dec = sink.query("SELECT decision_id, mode, action, latency_ms, fidelity, fidelity_used, raw_tokens, "
                            "compact_tokens, carry_calls, net_tokens, net_usd, basis FROM routing_decisions "
                            "ORDER BY decision_id")
    return [tuple(r) for r in log], [tuple(r) for r in dec]


def test_a_measurement_fills_its_decision_in_any_order_and_the_most_complete_wins(tmp_path: Path) -> None:
    values = [_decision("toolu_a"), _saving("toolu_a", 1, used=1), _saving("toolu_a", 3), _saving("toolu_a", 2)]
    records = _records(values)
    assert {t for t, _, _ in records} == {"outloop.routing-decisions", "outloop.routing-savings"}
    seen = set()
    for n, order in enumerate([records[::-1], [records[2], records[0], records[3], records[1]]]):
        db = tmp_path / f"o{n}.duckdb"  # the measurements before the decision, or around it; one per batch
        with open_sink(db) as sink:
            for i, (t, k, v) in enumerate(order):
                sink.write_batch([(t, 0, i, k, v)])
        seen.add(repr(_tables(db)))
    one = tmp_path / "one.duckdb"  # all in one batch, then redelivered twice
    with open_sink(one) as sink:
        sink.write_batch([(t, 0, i, k, v) for i, (t, k, v) in enumerate(records)])
        sink.write_batch([(t, 0, 10 + i, k, v) for i, (t, k, v) in enumerate(records + records)])
    seen.add(repr(_tables(one)))
    assert len(seen) == 1
    log, dec = _tables(one)
    assert len(log) == 1 and log[0][16] == 3  # carry_calls: the largest measurement
    assert dec == [(decision_id(SESSION, "toolu_a", 0), "enforce", "rewrite", 0.4, 1.0, 2, 900, 100, 3, 2400,
                    0.003, "measured")]


def test_outloop_savings_reads_the_table(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with open_sink(db) as sink:
        sink.write_batch([(t, 0, i, k, v) for i, (t, k, v) in
                          enumerate(_records([_saving("toolu_b", 2), _saving("toolu_c", 1, raw=50, compact=80)]))])
        cols, rows = sink.query(savings_sql("rule"))
    got = dict(zip(cols, rows[0], strict=True))
    assert (got["rule"], got["basis"], got["decisions"], got["net_tokens"]) == ("pytest", "measured", 2, 1600 - 30)


def test_migration_14_copies_the_stored_estimates(tmp_path: Path) -> None:
    db = tmp_path / "v12.duckdb"
    con = duckdb.connect(str(db))
    migrate(con, upto=12)
    con.execute("INSERT INTO routing_decisions (decision_id, session_id, rule, mode, action, decided_at, fidelity, "
                "fidelity_used, raw_tokens, compact_tokens, carry_calls, saved_once_tokens, net_tokens, net_usd, "
                "basis) VALUES ('rd:1', 's', 'pytest', 'shadow', 'rewrite', TIMESTAMPTZ '2026-12-06 23:30:00+00', "
                "0.5, 2, 500, 50, 4, 450, -20000, -0.01, 'estimate'), "
                "('rd:3', 's', 'ruff', 'shadow', 'rewrite', TIMESTAMPTZ '2026-12-06 23:30:00+00', NULL, 0, 20, 30, 2, "
                "-10, -20, -0.001, 'estimate'), "
                "('rd:2', 's', 'git', 'shadow', 'pass', TIMESTAMPTZ '2026-12-06 23:30:00+00', NULL, NULL, NULL, "
                "NULL, NULL, NULL, NULL, NULL, NULL)")
    migrate(con)
    rows = con.execute("SELECT decision_id, day, basis, net_tokens, saved_carry_tokens, charged_tokens "
                       "FROM cost_savings_log ORDER BY decision_id").fetchall()
    con.close()
    assert [(r[0], str(r[1]), r[2], r[3], r[4], r[5]) for r in rows] == [
        ("rd:1", "2026-12-06", "estimate", -20000, 0, 20000),  # lost: the extra turn charged
        ("rd:3", "2026-12-06", "estimate", -20, -20, 0)]  # a short output plus the runner's lines
