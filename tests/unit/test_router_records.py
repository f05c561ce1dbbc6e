"""Routing decisions through the pipeline's pure parts and the real DuckDB sink: the router's spool
record -> forwarder envelope -> sessions agent -> routing-decisions topic -> routing_decisions row,
stored once per decision_id whatever the redeliveries; the routing snapshot the sink publishes."""

from __future__ import annotations

import collections
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from outloop.agents.pairing import Pairing
from outloop.agents.sessions import SessionOutputs, session_records
from outloop.projections import open_sink
from outloop.router.decide import decide
from outloop.router.rules import build
from outloop.router.server import decision_envelope
from outloop.router.state import decision_record
from outloop.sinks.snapshot import snapshot_path
from outloop.streams.codec import Decoded, decode
from outloop.streams.forwarder import envelope_for
from outloop.streams.spool import Spool

NAMES = SessionOutputs("outloop.hook-events", "outloop.tool-calls", "outloop.usage", "outloop.dlq",
                       "outloop.routing-decisions")
NOW = 1_780_000_000.0


def _decision(command: str, tool_use_id: str, session: str = "sess-r") -> dict[str, object]:
    payload = {"session_id": session, "hook_event_name": "PreToolUse", "tool_name": "Bash",
               "tool_input": {"command": command}, "tool_use_id": tool_use_id, "cwd": "/repo"}
    rules = build({"rules": {"pytest": {"mode": "enforce", "threshold": 0}}})
    d = decide("Bash", payload["tool_input"], "/repo", None, rules, {}, NOW)  # type: ignore[arg-type]
    return decision_record(d, payload, NOW, 0.42)


def _through_agent(values: list[bytes]) -> list[tuple[str, bytes | None, bytes, int]]:
    stats: collections.Counter[str] = collections.Counter()
    messages = [("outloop.events", 0, i, b"sess-r", v, []) for i, v in enumerate(values)]
    return session_records(Pairing(), messages, NAMES, datetime.now(UTC), stats)  # type: ignore[arg-type]


def test_decision_travels_spool_forwarder_agent(tmp_path: Path) -> None:
    data = _decision("pytest -q", "toolu_r1")
    spool = Spool(tmp_path / "spool")
    rid = spool.write(decision_envelope(data, int(NOW * 1e9)), source="router")
    env = envelope_for(spool.read(rid))
    assert not isinstance(env, str)
    value = env.model_dump_json().encode()
    decoded = decode(value)
    assert isinstance(decoded, Decoded) and decoded.envelope.type.value == "routing.decision"
    out = _through_agent([value])
    assert [(t, k) for t, k, _, _ in out] == [("outloop.routing-decisions", b"sess-r")]


def test_a_hook_payload_never_becomes_a_decision(tmp_path: Path) -> None:
    """The same bytes written by the hook shim (no router mark) are a hook payload, not an envelope."""
    data = _decision("pytest -q", "toolu_r2")
    spool = Spool(tmp_path / "spool")
    rid = spool.write(decision_envelope(data, int(NOW * 1e9)))
    assert envelope_for(spool.read(rid)) == "no_session_id"


def test_decision_secrets_are_redacted_by_the_agent() -> None:
    data = _decision("curl -H 'Authorization: Bearer sk-ant-api03-" + "A" * 90 + "' http://x", "toolu_r3")
    env = orjson.loads(decision_envelope(data, int(NOW * 1e9)))
    ((_, _, value, _),) = _through_agent([orjson.dumps(env)])
    assert b"AAAAAAAAAAAAAAAAAAAA" not in value


def _rows(db: Path) -> list[tuple[object, ...]]:
    with open_sink(db) as sink:
        _, rows = sink.query("SELECT * EXCLUDE (fidelity) FROM routing_decisions ORDER BY decision_id")
    return [tuple(r) for r in rows]


def test_sink_stores_each_decision_once_whatever_the_redeliveries(tmp_path: Path) -> None:
    values = [orjson.dumps(orjson.loads(decision_envelope(_decision(c, f"toolu_s{i}"), int(NOW * 1e9))))
              for i, c in enumerate(["pytest -q", "rm -rf build", "git status"])]
    records = [(t, k, v) for t, k, v, _ in _through_agent(values)]
    db = tmp_path / "a.duckdb"
    with open_sink(db) as sink:
        sink.write_batch([(t, 0, i, k, v) for i, (t, k, v) in enumerate(records)])
    first = _rows(db)
    assert len(first) == 3
    by_command = {r[4]: r for r in first}
    assert by_command["pytest -q"][13] == "rewrite" and by_command["rm -rf build"][13] == "pass"
    with open_sink(db) as sink:  # redelivered, twice in one batch and once more
        sink.write_batch([(t, 0, 10 + i, k, v) for i, (t, k, v) in enumerate(records + records)])
    assert _rows(db) == first
    again = tmp_path / "b.duckdb"  # a replay into a fresh file gives the same rows
    with open_sink(again) as sink:
        sink.write_batch([(t, 1, i, k, v) for i, (t, k, v) in enumerate(reversed(records))])
    assert _rows(again) == first


def test_bad_decision_becomes_a_dead_letter(tmp_path: Path) -> None:
    bad = orjson.loads(decision_envelope(_decision("pytest -q", "toolu_b"), int(NOW * 1e9)))
    bad["data"]["mode"] = "loud"
    out = _through_agent([orjson.dumps(bad)])
    assert [t for t, _, _, _ in out] == ["outloop.dlq"]


@pytest.mark.parametrize("fidelity", [None, 0.9])
def test_sink_publishes_the_routing_snapshot(tmp_path: Path, fidelity: float | None) -> None:
    values = [orjson.dumps(orjson.loads(decision_envelope(_decision("pytest -q", "toolu_p"), int(NOW * 1e9))))]
    records = [(t, 0, i, k, v) for i, (t, k, v, _) in enumerate(_through_agent(values))]
    db = tmp_path / "s.duckdb"
    with open_sink(db) as sink:
        if fidelity is not None:
            sink.write_batch(records)
            sink.con.execute("UPDATE routing_decisions SET fidelity = ?", [fidelity])
            sink.snapshots.publish(sink.con)
        else:
            sink.write_batch(records)
    snap = orjson.loads(snapshot_path(db).read_bytes())
    assert isinstance(snap["patterns"], dict)
    if fidelity is not None:
        assert snap["rules"]["pytest"] == {"decisions": 1, "fidelity": fidelity}
