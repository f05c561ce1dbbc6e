"""The output registry (``schemas.registry``): topics, decoders, Arrow schemas, DDL and merge SQL are
derived from one entry per record, and equal what was written by hand before; a new record kind needs
only its entry (and the agent that writes it)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from pydantic import BaseModel

from outloop.schemas.events import ContextWindow, HookEvent
from outloop.schemas.ids import HOOK_TIE, MESSAGE_TIE, USAGE_TIE, WORKFLOW_TIE
from outloop.schemas.registry import OUTPUTS, Output, Registry, cols
from outloop.schemas.topics import TopicCatalogue
from outloop.sinks.decode import CHECKED, KINDS, SCHEMAS, arrow_schema, model_row
from outloop.sinks.schema import SCHEMA_VERSION, create_table, ensure_outputs, migrate
from outloop.sinks.upsert import FOLD, UPSERT, fold_sql, upsert_sql


def _digest(value: Any) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def test_the_derived_sink_tables_equal_the_hand_written_ones() -> None:
    """Digests of the hand-written staging schemas, topic kinds and merge SQL as they were before the
    registry (taken from that code, with the routing-savings output it gained last): the derived ones
    are the same, character for character."""
    assert _digest(sorted(KINDS.items())) == "53bf1d27b17b1df4"
    assert _digest(sorted((t, str(s)) for t, s in SCHEMAS.items())) == "cd3bb2779522626f"
    assert _digest(sorted(UPSERT.items())) == "2f7979fbd26189f2"
    assert _digest(sorted(FOLD.items())) == "4e0030ca5ea0afb7"


def test_the_derived_topics_equal_the_hand_written_catalogue() -> None:
    outputs = {(t.name, t.key, t.doc) for t in TopicCatalogue(prefix="p").outputs()}
    assert outputs == {
        ("p.hook-events", "session_id", "validated hook events (envelopes)"),
        ("p.tool-calls", "session_id", "paired tool calls"),
        ("p.usage", "session_id", "deduplicated, priced usage records"),
        ("p.api-messages", "session_id", "API responses of transcripts: ids, model, sizes"),
        ("p.workflow-runs", "run_id", "validated workflow run events"),
        ("p.dlq", "original key", "rejected records with their bytes and a reason"),
        ("p.routing-decisions", "session_id", "the router's decisions, shadow ones too"),
        ("p.routing-savings", "session_id", "fidelity and net saving of routing decisions"),
        ("p.routing-rules", "subject", "routing rules as the router loaded them"),
        ("p.adw-tools", "subject", "the deterministic tools routing rules name"),
        ("p.context-windows", "session_id", "per-session context-efficiency windows"),
    }
    assert {t.name for t in TopicCatalogue(prefix="p").all()} - {t[0] for t in outputs} == {
        "p.events", "p.workflows", "p.throttle-decisions"}


def test_the_tie_orders_of_the_agents_are_the_registry_own_columns() -> None:
    """The agents' "smallest own columns wins" (``schemas.ids``) and the sink's merge compare the same
    columns in the same order."""
    by = OUTPUTS.by_table
    assert by["hook_events"].own == HOOK_TIE and by["workflow_events"].own == WORKFLOW_TIE
    assert by["usage"].own == USAGE_TIE and by["api_messages"].own == MESSAGE_TIE


def test_the_migrated_tables_match_their_registry_entries(tmp_path: Path) -> None:
    """Every output's table, as the migrations made it, has the registry's columns with its types,
    nullability and key (and a table from ``create_table`` is the same): DDL and registry agree."""
    con = duckdb.connect(str(tmp_path / "m.duckdb"))
    migrate(con, upto=SCHEMA_VERSION)  # the numbered migrations alone (upto: no tables from the registry)
    fresh = duckdb.connect()
    for output in OUTPUTS:
        fresh.execute(create_table(output))
        for db in (con, fresh):
            found = {name: (kind, nullable) for name, kind, nullable in db.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = ?",
                [output.table]).fetchall()}
            for c in output.columns:
                kind = {"time": "TIMESTAMP WITH TIME ZONE"}.get(c.type, create_table(output).split(
                    f'"{c.name}" ')[1].split(",")[0].split(" NOT NULL")[0].rstrip(");"))
                assert found[c.name] == (kind, "YES" if c.nullable else "NO"), (output.table, c.name)
            keys = db.execute("SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
                              "AND constraint_type = 'PRIMARY KEY'", [output.table]).fetchall()
            assert keys == [([output.key],)], output.table


class Toy(BaseModel):
    """A record kind that exists only in this test."""

    id: str
    session_id: str
    size: int
    tags: list[str]
    at: datetime


TOY = Output(kind="toys", table="toys", key="id", topic_key="session_id", doc="toy records", merge="smallest",
             columns=cols("id text!", "session_id text!", "size int!", "tags json", "at time"), model=Toy)


def test_a_new_record_kind_needs_only_its_registry_entry(tmp_path: Path) -> None:
    """A toy record registered in a registry of its own gets its output topic, decoder, Arrow schema,
    table and merge SQL; two versions of one key fold to one row in a batch and upsert to the same row
    in any order and any number of deliveries."""
    registry = OUTPUTS.with_output(TOY)
    assert "p.toys" in {t.name for t in TopicCatalogue(prefix="p", registry=registry).outputs()}
    assert "p.toys" not in {t.name for t in TopicCatalogue(prefix="p").outputs()}
    decode = model_row(TOY)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    versions = [decode(Toy(id="t1", session_id="s", size=n, tags=["a", str(n)], at=at).model_dump_json().encode())
                for n in (7, 3, 5)]
    assert versions[1] == {"id": "t1", "session_id": "s", "size": 3, "tags": '["a","3"]', "at": at}
    schema = arrow_schema(TOY)
    con = duckdb.connect(str(tmp_path / "toy.duckdb"))
    migrate(con)
    assert ensure_outputs(con, registry) == ["toys"]  # what opening the sink does, no migration needed
    assert ensure_outputs(con, registry) == []

    def write(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        con.register("raw_toys", pa.Table.from_pylist(rows, schema=schema))
        one = con.sql(fold_sql(TOY)).to_arrow_table().select(schema.names).cast(schema)
        con.unregister("raw_toys")
        con.register("stg_toys", one)
        con.execute(upsert_sql(TOY))
        con.unregister("stg_toys")
        return con.execute("SELECT id, size, tags::VARCHAR FROM toys").fetchall()

    assert write(versions) == [("t1", 3, '["a","3"]')]  # the smallest own columns win
    assert write(versions[::-1]) == write([versions[0]]) == write(versions[2:]) == [("t1", 3, '["a","3"]')]
    with pytest.raises(ValueError, match="share a kind or a table"):
        registry.with_output(TOY)


@pytest.mark.parametrize("bad", [
    {"merge": "newest"}, {"merge": "ranked"}, {"key": "nope"}, {"columns": cols("id text!", "x decimal")},
    {"merge": "latest"},
])
def test_a_malformed_entry_is_refused_when_declared(bad: dict[str, Any]) -> None:
    fields = {**{f: getattr(TOY, f) for f in ("kind", "table", "key", "topic_key", "doc", "merge", "columns")},
              **bad}
    with pytest.raises(ValueError):
        Output(**fields)


def test_an_output_whose_row_is_its_model_uses_the_derived_decoder() -> None:
    """``context_windows`` has no hand-written row function any more: its decoder is the registry's."""
    window = ContextWindow.model_validate({
        "id": "s:w", "session_id": "s", "opened_at": "2026-01-02T03:04:05Z", "last_event_at": "2026-01-02T03:09:05Z",
        **dict.fromkeys(("events", "outputs", "loaded_tokens", "carry_tokens", "reread_tokens", "api_calls",
                         "max_prompt_tokens", "compactions", "cache_break_tokens"), 2)})
    row = CHECKED["context_windows"](window.model_dump_json().encode())
    assert row == {c: getattr(window, c) for c in OUTPUTS.by_table["context_windows"].names}
    assert isinstance(Registry((TOY,)).by_kind["toys"], Output) and HookEvent is OUTPUTS.by_kind["hook-events"].model
