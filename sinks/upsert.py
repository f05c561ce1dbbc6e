"""The fold and the upserts: Arrow staging views -> ``INSERT ... ON CONFLICT`` per table, inside the
caller's transaction. A batch's versions of one key are first folded in SQL (:data:`FOLD`) with the
same rule the upsert then applies against the stored row, so the stored row is the same whatever the
batch boundaries, the order or the number of deliveries:

* tool_calls - field by field as :func:`agents.toolcalls.merge_tool_calls` (least identity and text,
  highest status rank, earliest start, latest end, largest sizes and duration, union of sources,
  the earliest PreToolUse and latest PostToolUse time, a permission dialog if any view saw one);
  then a ``syn:<call_key>`` row (hook call without tool_use_id) is merged into the row of the real
  tool_use_id carrying that call_key and deleted.
* usage - the whole record with the largest (total tokens, output tokens, cost, then its own columns).
* api_messages - the version with the most content blocks, then content bytes, then its own columns.
* hook_events, workflow_events - the version whose own columns are the smallest (versions of one id
  are normally identical). dead_letters - the first seen. flush_markers - the first sighting.

"Own columns" is :func:`tie`: the row value of every stored column but the key, which DuckDB
compares column by column with NULL above every value (``schemas.ids.column_order`` is the same
order in Python, for the agents' own "usage wins" rule).
* workflow_runs - recomputed from all stored events of the runs the batch touched.
* cost_savings_log - the most complete measurement of a decision: the largest carry, then the most
  used evidence, then its own columns; its measured columns are then copied into the decision's
  routing_decisions row (:data:`FILL_MEASURED`, after either table is written: either may come first).

``INSERT ... ON CONFLICT`` costs in proportion to the table (DuckDB 2.0 runs it as a merge against
the stored keys): 6 us/row into an empty table, 13 at 1M rows, 21 at 2M, where a plain ``INSERT``
checks the primary key in its index and stays near 2 us/row. Most batches only bring new keys, so a
table may be written with a plain insert (tables in :data:`PLAIN`, chosen by :class:`Optimism`): for new
keys it stores exactly what the upsert would. A key already stored makes it fail with a duplicate-key
error; :func:`apply` raises :class:`KeyConflict`, the caller rolls the transaction back and writes the
batch again with that table upserted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from outloop.schemas.ids import MESSAGE_TIE, USAGE_TIE
from outloop.schemas.registry import OUTPUTS, Output
from outloop.sinks.decode import SCHEMAS, TABLES, Folded

_TOOL_TEXT = ("tool_use_id", "call_key", "session_id", "tool_name", "command", "file_path")
_TOOL_MAX = ("input_bytes", "output_bytes", "output_tokens_est", "reported_ms", "hook_post_at", "permission_asked")
_TOOL_MIN = ("hook_pre_at",)
_RANK = "list_position(['started', 'ok', 'error', 'interrupted'], {}.status)"


def tool_call_merge(t: str, e: str) -> list[str]:
    """SET clauses merging row ``e`` into row ``t`` (both aliases) like ``merge_tool_calls``."""
    started, ended = f"least({t}.started_at, {e}.started_at)", f"greatest({t}.ended_at, {e}.ended_at)"
    derived = (f"CASE WHEN {started} IS NOT NULL AND {ended} IS NOT NULL THEN greatest(0.0, "
               f"(epoch_us({ended}) - epoch_us({started}))::DOUBLE / 1000000.0 * 1000.0) END")
    sets = [f"{c} = least({t}.{c}, {e}.{c})" for c in _TOOL_TEXT]
    sets += [f"{c} = greatest({t}.{c}, {e}.{c})" for c in _TOOL_MAX]
    sets += [
        f"tool_input = CASE WHEN {e}.tool_input IS NULL THEN {t}.tool_input WHEN {t}.tool_input IS NULL "
        f"THEN {e}.tool_input WHEN {t}.tool_input::VARCHAR <= {e}.tool_input::VARCHAR THEN {t}.tool_input "
        f"ELSE {e}.tool_input END",
        f"status = CASE WHEN {_RANK.format(t)} >= {_RANK.format(e)} THEN {t}.status ELSE {e}.status END",
        f"started_at = {started}",
        f"ended_at = {ended}",
        f"duration_ms = greatest({t}.duration_ms, {e}.duration_ms, {derived})",
        *(f"{c} = least({t}.{c}, {e}.{c})" for c in _TOOL_MIN),
        f"source = CASE WHEN {t}.source = {e}.source THEN {t}.source ELSE array_to_string(list_sort("
        f"list_distinct(string_split({t}.source, '+') || string_split({e}.source, '+'))), '+') END",
    ]
    return sets


def _columns(table: str, skip: tuple[str, ...] = (), names: tuple[str, ...] | None = None) -> list[str]:
    return [f'"{c}"' for c in (names or SCHEMAS[table].names) if c not in skip]


def _insert(table: str, names: tuple[str, ...] | None = None) -> str:
    cols = ", ".join(_columns(table, (), names))
    return f"INSERT INTO {table} ({cols}) SELECT {cols} FROM stg_{table}"


def _replace_where(table: str, key: str, condition: str, names: tuple[str, ...] | None = None) -> str:
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in _columns(table, (key,), names))
    return f"{_insert(table, names)} ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE {condition}"


def tie(columns: tuple[str, ...], t: str = "") -> str:
    """The row value of ``columns`` (of alias ``t``): DuckDB compares it column by column, NULL above
    every value, the same in ``<`` and in ORDER BY."""
    q = f"{t}." if t else ""
    return f"({', '.join(f'{q}{chr(34)}{c}{chr(34)}' for c in columns)})"


def _usage_rank(t: str = "", total_type: str = "BIGINT") -> str:
    q = f"{t}." if t else ""
    total = " + ".join(f"{q}{c}::{total_type}" for c in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                                                        "cache_creation_input_tokens"))
    return f"({total}, {q}output_tokens, coalesce({q}cost_usd, 0.0), {tie(USAGE_TIE, t)})"


def _message_rank(t: str = "") -> str:
    """Most content blocks, then most content bytes, then the row's own columns (agents.pairing.message_wins)."""
    q = f"{t}." if t else ""
    size = " + ".join(f"{q}{c}::HUGEINT" for c in ("text_bytes", "thinking_bytes", "tool_use_bytes"))
    return f"({q}content_blocks, {size}, {tie(MESSAGE_TIE, t)})"


_DEAD_LETTER_ORDER = ('"at"', "topic", '"partition"', '"offset"', "reason", "detail", "key", "raw")


def _dead_letter_rank(t: str) -> str:
    """First seen, then position, then the content itself: versions of one id that tie on when and
    where they were seen (they cannot in practice: the id digests them) still have one winner
    whatever the order they arrive in. A row value compares a NULL as larger than any value, as the
    fold's ORDER BY does."""
    return "(" + ", ".join(f"{t}.{c}" for c in _DEAD_LETTER_ORDER) + ")"


SAVING_TIE = OUTPUTS.by_table["cost_savings_log"].own
KEYS = {o.table: o.key for o in OUTPUTS}


def _saving_rank(t: str = "") -> str:
    """A decision's most complete measurement wins: the largest carry (it grows until a compaction as the
    session goes on), then the most used evidence (it grows as the agent's next steps arrive), then the
    smallest own columns. As a row value, smallest first."""
    q = f"{t}." if t else ""
    return f"(-{q}carry_calls, -{q}fidelity_used, {tie(SAVING_TIE, t)[1:-1]})"


# The measured columns of a live decision, from its cost_savings_log row (either may arrive first).
_MEASURED = ("fidelity", "fidelity_used", "raw_tokens", "compact_tokens", "carry_calls", "saved_once_tokens",
             "net_tokens", "net_usd", "context_tokens", "model", "basis")
FILL_MEASURED = (
    "UPDATE routing_decisions SET " + ", ".join(f"{c} = s.{c}" for c in _MEASURED)
    + " FROM cost_savings_log AS s WHERE s.decision_id = routing_decisions.decision_id AND s.basis = 'measured' "
    "AND routing_decisions.decision_id IN (SELECT decision_id FROM stg_{table}) AND ("
    + " OR ".join(f"routing_decisions.{c} IS DISTINCT FROM s.{c}" for c in _MEASURED) + ")")


def _latest(t: str, columns: tuple[str, ...]) -> str:
    """The latest version wins (then the smallest own columns): ``(updated_at DESC, tie)`` as a row
    value compared with the negated epoch."""
    return f"(-epoch_us({t}.updated_at), {tie(columns, t)[1:-1]})"


WINDOW_TIE = ("last_event_at", "closed_at", "close_reason", "outputs", "loaded_tokens", "carry_tokens",
              "reread_tokens", "api_calls", "max_prompt_tokens", "compactions", "cache_break_tokens")


def _window_rank(t: str = "") -> str:
    """A context window's later version wins: more events, then closed over open, then its own columns."""
    q = f"{t}." if t else ""
    return f"({q}events, {q}closed_at IS NOT NULL, {tie(WINDOW_TIE, t)[1:-1]})"


def _latest_tie(output: Output) -> tuple[str, ...]:
    return tuple(c for c in output.own if c != "updated_at")


# The named ranks of ``ranked`` merges: (the upsert's condition for the new row ``EXCLUDED`` to replace the
# stored one, the ORDER BY whose first row the fold keeps).
RANKS: dict[str, tuple[Callable[[str], str], str]] = {
    "usage": (lambda t: f"{_usage_rank('EXCLUDED')} > {_usage_rank(t)}", f"{_usage_rank(total_type='HUGEINT')} DESC"),
    "message": (lambda t: f"{_message_rank('EXCLUDED')} > {_message_rank(t)}", f"{_message_rank()} DESC"),
    "window": (lambda t: f"{_window_rank('EXCLUDED')} > {_window_rank(t)}", f"{_window_rank()} DESC"),
    "dead_letter": (lambda t: f"{_dead_letter_rank('EXCLUDED')} < {_dead_letter_rank(t)}",
                    ", ".join(_DEAD_LETTER_ORDER)),
    "saving": (lambda t: f"{_saving_rank('EXCLUDED')} < {_saving_rank(t)}", _saving_rank()[1:-1]),
}


def upsert_sql(output: Output) -> str:
    """The ``INSERT ... ON CONFLICT`` of an output's staged rows, by its merge rule (``schemas.registry``)."""
    t, key, names = output.table, output.key, output.names
    if output.merge == "tool_call":
        return _insert(t, names) + f" ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(tool_call_merge(t, "EXCLUDED"))
    if output.merge == "smallest":
        return _replace_where(t, key, f"{tie(output.own, 'EXCLUDED')} < {tie(output.own, t)}", names)
    if output.merge == "latest":
        own = _latest_tie(output)
        return _replace_where(t, key, f"{_latest('EXCLUDED', own)} < {_latest(t, own)}", names)
    return _replace_where(t, key, RANKS[output.rank or ""][0](t), names)


def fold_sql(output: Output) -> str:
    """One row per key from a batch's versions (``raw_<table>``), by the same rule as :func:`upsert_sql`."""
    t, key = output.table, output.key
    if output.merge == "tool_call":
        return FOLD_TOOL_CALLS
    if output.merge == "smallest":
        return _first(t, tie(output.own), key)
    if output.merge == "latest":
        return _first(t, f"updated_at DESC, {tie(_latest_tie(output))[1:-1]}", key)
    return _first(t, RANKS[output.rank or ""][1], key)




class KeyConflict(Exception):
    """A plain insert into ``table`` met a key already stored: the batch must be upserted."""

    def __init__(self, table: str) -> None:
        super().__init__(f"{table}: a key of the batch is already stored")
        self.table = table


OPTIMISM_MAX_SKIP = 64  # batches a table that keeps conflicting is upserted before the next plain try


@dataclass
class Optimism:
    """Which tables the next batch writes with a plain insert. A table whose plain insert met a
    stored key is upserted for 1, 2, 4 ... :data:`OPTIMISM_MAX_SKIP` batches with rows for it (the
    batch written again counts; doubling while the conflicts go on), then tried plain again; a plain
    insert that succeeds resets it. At worst (every batch conflicts) one batch in 64 is written
    twice. Pure: counts batches, no clock."""

    penalty: dict[str, int] = field(default_factory=dict)
    skip: dict[str, int] = field(default_factory=dict)

    def plain(self) -> frozenset[str]:
        return frozenset(t for t in PLAIN if not self.skip.get(t))

    def conflicted(self, table: str) -> None:
        self.penalty[table] = min(max(1, 2 * self.penalty.get(table, 0)), OPTIMISM_MAX_SKIP)
        self.skip[table] = self.penalty[table]

    def written(self, plain: frozenset[str], tables: set[str] | dict[str, int]) -> None:
        """A batch committed; ``tables``: those it wrote rows to, ``plain``: the plan it was written with."""
        for table in tables:
            if table in plain:
                self.penalty.pop(table, None)
            elif self.skip.get(table):
                self.skip[table] -= 1


_JOINABLE = ("SELECT * FROM tool_calls WHERE id LIKE 'syn:%' AND call_key IN "
             "(SELECT call_key FROM stg_tool_calls WHERE call_key IS NOT NULL)")
JOIN_SYN = [
    f"UPDATE tool_calls SET {', '.join(s for s in tool_call_merge('tool_calls', 's'))} "
    f"FROM ({_JOINABLE}) AS s WHERE tool_calls.call_key = s.call_key AND tool_calls.id NOT LIKE 'syn:%'",
    "DELETE FROM tool_calls WHERE id LIKE 'syn:%' AND call_key IN (SELECT call_key FROM tool_calls "
    "WHERE id NOT LIKE 'syn:%' AND call_key IN (SELECT call_key FROM stg_tool_calls))",
]

_FIRST = 'ORDER BY "at", id'
_LAST = 'ORDER BY "at" DESC, id DESC'


def _last_ended(field: str, sql_type: str) -> str:
    return f"first(CAST(data->>'{field}' AS {sql_type}) {_LAST})"


REFOLD_RUNS = f"""
INSERT OR REPLACE INTO workflow_runs
WITH ev AS (SELECT * FROM workflow_events WHERE run_id IN (SELECT run_id FROM stg_workflow_events)),
started AS (
    SELECT run_id, first(data->>'workflow' {_FIRST}) AS workflow,
           first(data->>'session_id' {_FIRST}) AS session_id, min("at") AS started_at
    FROM ev WHERE type = 'workflow.started' GROUP BY run_id),
ended AS (
    SELECT run_id, first(data->>'status' {_LAST}) AS status, max("at") AS ended_at,
           {_last_ended('input_tokens', 'BIGINT')} AS input_tokens,
           {_last_ended('output_tokens', 'BIGINT')} AS output_tokens,
           {_last_ended('cache_read_input_tokens', 'BIGINT')} AS cache_read,
           {_last_ended('cache_creation_input_tokens', 'BIGINT')} AS cache_write,
           {_last_ended('cost_usd', 'DOUBLE')} AS cost_usd
    FROM ev WHERE type = 'workflow.ended' GROUP BY run_id),
phases AS (
    SELECT run_id,
           first(data->>'phase' ORDER BY CAST(data->>'seq' AS INTEGER) DESC, "at" DESC, id DESC) AS phase,
           max(CAST(data->>'seq' AS INTEGER)) AS phase_seq
    FROM ev WHERE type = 'workflow.phase_changed' GROUP BY run_id),
counts AS (SELECT run_id, count(*) AS events FROM ev GROUP BY run_id)
SELECT c.run_id, s.workflow, s.session_id, coalesce(e.status, 'running'), s.started_at, e.ended_at,
       p.phase, p.phase_seq, coalesce(e.input_tokens, 0), coalesce(e.output_tokens, 0),
       coalesce(e.cache_read, 0), coalesce(e.cache_write, 0), e.cost_usd, c.events
FROM counts c LEFT JOIN started s USING (run_id) LEFT JOIN ended e USING (run_id)
     LEFT JOIN phases p USING (run_id)
"""

OFFSETS = (_insert("consumer_offsets") + ' ON CONFLICT (topic, "partition") DO UPDATE SET '
           " next_offset = EXCLUDED.next_offset, "
           "anchor = coalesce(EXCLUDED.anchor, consumer_offsets.anchor)")


_STATUS = "list_position(['started', 'ok', 'error', 'interrupted'], status)"
_DERIVED = ("CASE WHEN min(started_at) IS NOT NULL AND max(ended_at) IS NOT NULL THEN greatest(0.0, "
            "(epoch_us(max(ended_at)) - epoch_us(min(started_at)))::DOUBLE / 1000000.0 * 1000.0) END")


def _first(table: str, order: str, key: str = "id") -> str:
    return f"SELECT * FROM raw_{table} QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1"


FOLD_TOOL_CALLS = ("SELECT id, " + ", ".join(f"min({c}) AS {c}" for c in _TOOL_TEXT) + f"""
        , arg_max(status, {_STATUS}) AS status, min(started_at) AS started_at, max(ended_at) AS ended_at,
        greatest(max(duration_ms), {_DERIVED}) AS duration_ms,
        min(hook_pre_at) AS hook_pre_at, """
                  + ", ".join(f"max({c}) AS {c}" for c in _TOOL_MAX) + """,
        CASE WHEN count(DISTINCT source) = 1 THEN min(source) ELSE array_to_string(list_sort(list_distinct(
            flatten(list(string_split(source, '+'))))), '+') END AS source,
        min(tool_input) AS tool_input
        FROM raw_tool_calls GROUP BY id""")  # merge_tool_calls over a batch's versions

UPSERT: dict[str, str] = {**{o.table: upsert_sql(o) for o in OUTPUTS},
                          "flush_markers": _insert("flush_markers") + " ON CONFLICT DO NOTHING"}
FOLD: dict[str, str] = {o.table: fold_sql(o) for o in OUTPUTS}  # one row per key from the batch's versions
PLAIN: frozenset[str] = frozenset(UPSERT)  # the tables a plain insert may write


def unregister_quietly(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a registered view in a ``finally`` without hiding the real error: inside a transaction that a
    failed statement aborted, unregistering fails too, and its "transaction is aborted" would replace the
    error the writer must see (an out-of-memory makes it grow its limit; a refusal becomes a dead letter).
    A view left registered is replaced by the next register of its name."""
    with suppress(duckdb.Error):
        con.unregister(name)


def _staged(con: duckdb.DuckDBPyConnection, table: str, data: object, statements: list[str]) -> None:
    name = f"stg_{table}"
    con.register(name, data)
    for sql in statements:
        con.execute(sql)  # on failure the view stays until the next register of its name replaces it:
    con.unregister(name)  # unregistering inside an aborted transaction would hide the real error


def folded(con: duckdb.DuckDBPyConnection, table: str, staged: pa.Table) -> pa.Table:
    """The batch's rows of ``table``, one per key: ``staged`` itself when its keys are distinct."""
    key = KEYS.get(table, "id")
    if table not in FOLD or pc.count_distinct(staged.column(key)).as_py() == staged.num_rows:
        return staged
    con.register(f"raw_{table}", staged)
    out = con.sql(FOLD[table]).to_arrow_table().select(SCHEMAS[table].names).cast(SCHEMAS[table])
    con.unregister(f"raw_{table}")
    return out


def _duplicate_key(exc: duckdb.Error) -> bool:
    return isinstance(exc, duckdb.ConstraintException) and "Duplicate key" in str(exc)


def apply(con: duckdb.DuckDBPyConnection, batch: Folded,
          anchors: dict[tuple[str, int], str | None] | None = None,
          plain: frozenset[str] = frozenset(),
          enrich: Mapping[str, Callable[[pa.Table], pa.Table]] | None = None) -> dict[str, int]:
    """Write one batch and its offsets; the caller owns the transaction. Returns rows per table.
    Tables in ``plain`` are written with a plain insert: :class:`KeyConflict` when a key is stored
    already (the transaction is then aborted: roll back and write again without that table). What a
    plain insert put in is kept in ``batch.fresh``; ``enrich[table]`` may add stored columns to those
    rows first (the signature columns of new tool calls, so they need no update afterwards)."""
    written: dict[str, int] = {}
    batch.fresh.clear()
    for table in TABLES:
        if not batch.count(table):
            continue
        rows = folded(con, table, batch.arrow(table))
        if table in plain:
            fresh = enrich[table](rows) if enrich and table in enrich else rows
            cols = ", ".join(f'"{c}"' for c in fresh.column_names)
            try:
                _staged(con, table, fresh, [f"INSERT INTO {table} ({cols}) SELECT {cols} FROM stg_{table}"])
            except duckdb.Error as exc:
                if _duplicate_key(exc):
                    raise KeyConflict(table) from exc
                raise
            batch.fresh[table] = fresh
            statements = []
        else:
            statements = [UPSERT[table]]
        if table == "tool_calls" and pc.max(pc.utf8_length(rows.column("call_key"))).as_py():
            statements += JOIN_SYN
        elif table == "workflow_events":
            statements.append(REFOLD_RUNS)
        elif table in ("routing_decisions", "cost_savings_log"):
            statements.append(FILL_MEASURED.format(table=table))
        if statements:
            _staged(con, table, rows, statements)
        written[table] = rows.num_rows
    if batch.offsets:
        _staged(con, "consumer_offsets", batch.offsets_arrow(anchors or {}), [OFFSETS])
    return written
