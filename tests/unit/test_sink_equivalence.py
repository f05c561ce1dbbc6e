"""The vectorized sink against the former per-record one (``tests.unit.sinkref``): generated batches of
valid records, versions of one key, and records malformed in many ways leave the same database (rows,
values, digests, dead letters and their reasons), the same counts and the same offsets. And record by
record: wherever the fast path vouches for a record, its row equals the pydantic path's."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from outloop.projections import open_sink, standard
from outloop.schemas.events import EventType
from outloop.sinks.decode import BATCH_MIN, CHECKED, FAST, KINDS, SCHEMAS, TABLES, Folded, _fold_one, fold
from outloop.sinks.writer import DuckSink, ErrorKind, WriteResult, classify_error
from outloop.streams.codec import Rejected, dead_letter
from tests.unit import sinkdata as d
from tests.unit import sinkref
from tests.unit.test_sink import DATA_TABLES, dump


class ReferenceSink(DuckSink):
    """The writer as it was: pydantic for every record, the fold in Python (with the product's projections)."""

    def __init__(self, path: Path, clock: Any = None) -> None:
        super().__init__(path, clock=clock, projections=standard())

    def _write(self, messages: list[Any], anchors: dict[Any, str | None]) -> WriteResult:
        if not messages:
            return WriteResult()
        folded = sinkref.fold(messages, self.clock())
        try:
            with self.transaction() as con:
                rows = sinkref.apply(con, folded, anchors)
                self._mark(con, folded)  # type: ignore[arg-type]
            return WriteResult(folded.records, rows, folded.decode_errors)
        except (duckdb.Error, pa.ArrowException, OverflowError, UnicodeError) as exc:
            if classify_error(exc) is ErrorKind.TRANSIENT:
                raise
            if len(messages) == 1:
                topic, partition, offset, key, value = messages[0]
                dl = dead_letter(value, Rejected("sink_write", f"{type(exc).__name__}: {exc}"[:500]),
                                 topic, partition, offset, key, now=self.clock())
                one = sinkref.Folded()
                one.records = 1
                one.rows["dead_letters"][dl.id] = dl.model_dump()
                one.offsets[(topic, partition)] = offset + 1
                with self.transaction() as con:
                    rows = sinkref.apply(con, one, anchors)
                return WriteResult(1, rows, 0, refused=1)
        half = len(messages) // 2
        result = self._write(messages[:half], anchors)
        result.add(self._write(messages[half:], anchors))
        return result


# -- generated records ----------------------------------------------------------------------------
T0 = d.T0
NAMES = st.sampled_from(["a", "b", "toolu_1", "syn:s1:k:0", "s1", "ü", "x\ny", 'q"t', "b\\s", "\x01", "é/😀",
                         "", "z" * 513])
TIMES = st.sampled_from([
    "2025-06-01T12:00:00Z", "2025-06-01T12:00:00.250000Z", "2025-06-01T12:00:01.000000Z",
    "2025-06-01T12:00:00+00:00", "2025-06-01T14:00:00+02:00", "2025-06-01T12:00:00", "2025-06-01 12:00:00Z",
    "2025-06-01T12:00:00.5Z", "2025-06-01T12:00:00.1234567Z", "2025-02-30T12:00:00Z", "2025-06-01T24:00:00Z",
    "2025-06-01T12:00:60Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59.999999Z", "2025-06-01t12:00:00z",
    "1700000000", "not a time"])
INTS = st.one_of(st.integers(0, 5000), st.sampled_from([-1, 2**63 - 1, 2**63, 2**64, 2**70, -(2**63) - 1]))
ODD = st.sampled_from([None, "1", 1.0, 1.5, True, [], {}, "", 2**64, -0.0, 1e300, 0.1])


def usage_obj(draw: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": draw(st.sampled_from(["m1:r", "m2:r", "m3:r"])), "session_id": draw(st.sampled_from(["s1", "s2"])),
        "model": draw(st.sampled_from([None, "claude-sonnet-4-5", "gpt"])),
        "timestamp": draw(st.one_of(st.none(), TIMES)),
        "input_tokens": draw(INTS), "output_tokens": draw(st.integers(0, 50))}
    for name in ("cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation_5m_tokens",
                 "cache_creation_1h_tokens"):
        if draw(st.booleans()):
            obj[name] = draw(st.one_of(st.integers(0, 20), st.none()))
    if draw(st.booleans()):
        obj["cost_usd"] = draw(st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1, 0.0213, 1e16, 1e-7, -0.0])))
    if draw(st.booleans()):
        obj["source"] = draw(st.sampled_from(["transcript", "trajectory"]))
    return obj


def tool_obj(draw: Any) -> dict[str, Any]:
    tid = draw(st.sampled_from(["toolu_1", "toolu_2", None]))
    key = draw(st.sampled_from([None, "s1:k:0", "s1:k:1"]))
    obj: dict[str, Any] = {
        "id": tid or f"syn:{key or 's1:k:0'}", "tool_use_id": tid, "call_key": key,
        "session_id": draw(st.sampled_from(["s1", "s2"])), "tool_name": draw(st.sampled_from(["Bash", "Read", None])),
        "status": draw(st.sampled_from(["started", "ok", "error", "interrupted"])),
        "source": draw(st.sampled_from(["hook", "transcript", "hook+transcript", "transcript+hook", ""]))}
    if draw(st.booleans()):
        obj["tool_input"] = draw(st.sampled_from([
            {"command": "ls -la", "timeout": 5}, {"b": 1, "a": [1, 2.5, {"z": None, "y": "é"}]}, "raw text",
            [1, "x"], None, {"command": 'echo "\\n"\t\u2028'}, {"n": 1.0}, {"n": 10**20}]))
    for name in ("command", "file_path"):
        if draw(st.booleans()):
            obj[name] = draw(st.sampled_from(["ls", "pytest -q", None, "a/b"]))
    for name in ("started_at", "ended_at"):
        if draw(st.booleans()):
            obj[name] = draw(st.one_of(st.none(), TIMES))
    if draw(st.booleans()):
        obj["duration_ms"] = draw(st.sampled_from([None, 0.0, 850.0, 12.5, 3]))
    for name in ("input_bytes", "output_bytes", "output_tokens_est"):
        if draw(st.booleans()):
            obj[name] = draw(st.one_of(st.none(), st.integers(0, 9000)))
    for name in ("hook_pre_at", "hook_post_at"):  # what a run time is derived from; views disagree
        if draw(st.booleans()):
            obj[name] = draw(st.one_of(st.none(), TIMES))
    if draw(st.booleans()):
        obj["reported_ms"] = draw(st.sampled_from([None, 0.0, 12.5, 850.0]))
    if draw(st.booleans()):
        obj["permission_asked"] = draw(st.sampled_from([None, True, False]))
    return obj


def hook_obj(draw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"session_id": draw(st.sampled_from(["s1", "", 5, None])),
                            "hook_event_name": draw(st.sampled_from(["PreToolUse", "PostToolUse", None, 3])),
                            "tool_name": "Bash", "tool_use_id": draw(st.sampled_from(["toolu_1", None])),
                            "tool_input": {"command": "ls"}}
    if draw(st.booleans()):
        data["tool_response"] = draw(st.sampled_from([
            {"stdout": "ok", "n": [1, 2.5, -0.0, 1e16]}, "plain", {"big": 2**64 - 1}, {"bigger": 2**64},
            {"z": {"y": [True, None, "\x00\u001f"]}}]))
    obj: dict[str, Any] = {"id": draw(st.sampled_from(["e1", "e2", "e3"])),
                           "type": draw(st.sampled_from(["hook.event"] * 6 + ["usage.record", "nope"])),
                           "source": draw(st.sampled_from(["hook", "hook-log"])), "subject": "s1", "data": data}
    if draw(st.booleans()):
        obj["time"] = draw(st.one_of(st.none(), TIMES))
    if draw(st.booleans()):
        obj["specversion"] = draw(st.sampled_from(["1", "2", 1]))
    return obj


BUILDERS = {"usage": usage_obj, "tool-calls": tool_obj, "hook-events": hook_obj}


def mutate(draw: Any, obj: dict[str, Any]) -> bytes:
    """Valid JSON of ``obj``, or a damaged form of it."""
    how = draw(st.sampled_from(["none"] * 8 + ["odd", "drop", "extra", "dupkey", "spaces", "bytes", "trailing",
                                               "nan", "cut", "notutf8", "array"]))
    obj = dict(obj)
    if how == "odd":
        obj[draw(st.sampled_from(sorted(obj)))] = draw(ODD)
    elif how == "drop":
        obj.pop(draw(st.sampled_from(sorted(obj))))
    elif how == "extra":
        obj["unexpected"] = 1
    raw = _json(obj)
    if how == "dupkey":
        name = draw(st.sampled_from(sorted(obj)))
        raw = raw[:-1] + b',"' + name.encode() + b'":' + _json(draw(ODD)) + b"}"
    elif how == "spaces":
        raw = raw.replace(b'":', b'" : ', 1) + b" \n"
    elif how == "bytes" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1:]
    elif how == "trailing":
        raw = raw[:-1] + b",}"
    elif how == "nan":
        raw = raw[:-1] + b',"cost_usd":NaN}'
    elif how == "cut":
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif how == "notutf8":
        raw = raw.replace(b"s1", b"s\xff", 1)
    elif how == "array":
        raw = b"[" + raw + b"]"
    return raw


def _json(obj: Any) -> bytes:
    """Compact JSON the way another producer might write it (integers past 64 bits included)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def records(draw: Any) -> tuple[str, bytes | None, bytes | None]:
    topic = draw(st.sampled_from(["usage"] * 3 + ["tool-calls"] * 3 + ["hook-events"] * 3
                                 + ["workflow-runs", "dlq", "elsewhere", "flush", "empty"]))
    if topic == "flush":
        return d.flush_msg(draw(st.sampled_from(["usage", "tool-calls"])), draw(st.sampled_from(["m1", "m2"])), 0)
    if topic == "empty":
        return "t.usage", b"k", draw(st.sampled_from([b"", None]))
    if topic == "workflow-runs":
        return draw(st.sampled_from(d.workflow_msgs("run1") + d.workflow_msgs("run2")))
    if topic == "dlq":
        return d.dead_letter_msg(draw(st.sampled_from([b"\xff\x00raw", b"x"])), offset=draw(st.integers(0, 3)))
    if topic == "elsewhere":
        return "t.elsewhere", None, b"{}"
    return f"t.{topic}", draw(st.sampled_from([b"s1", None])), mutate(draw, BUILDERS[topic](draw))


@st.composite
def batches(draw: Any) -> list[list[tuple[str, int, int, bytes | None, bytes | None]]]:
    items = draw(st.lists(records(), min_size=1, max_size=40))
    messages = d.with_offsets(items)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(messages) - 1)), max_size=2)))
    return [messages[a:b] for a, b in zip([0, *cuts], [*cuts, len(messages)], strict=True) if messages[a:b]]


def clock() -> datetime:
    return datetime(2025, 6, 2, tzinfo=UTC)


def state(sink: DuckSink) -> dict[str, Any]:
    out: dict[str, Any] = dump(sink, DATA_TABLES)
    out["offsets"] = sorted(sink.stored_offsets().items())
    t = sink.totals
    out["totals"] = (t.records, t.decode_errors, t.refused, sorted(t.rows.items()))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batches())
@example([d.with_offsets([("t.usage", b"s1", json.dumps(
    {"id": "m1:r", "session_id": "s1", "model": None, "timestamp": None, "input_tokens": 2**63 - 1,
     "output_tokens": 1}).encode())])])  # summed by the quota refresh, it overflowed 64 bits
def test_generated_batches_leave_the_database_the_reference_leaves(tmp_path_factory: Any, chunks: list) -> None:
    assume(not any(BIG_TOOL_INPUT in (m[4] or b"") for chunk in chunks for m in chunk))  # crashes the reference
    tmp: Path = tmp_path_factory.mktemp("eq")
    with open_sink(tmp / "new.duckdb", clock=clock) as new, ReferenceSink(tmp / "ref.duckdb", clock=clock) as ref:
        for chunk in chunks:
            for sink in (new, ref):
                sink.write_batch(chunk)
        assert state(new) == state(ref)


def test_a_usage_record_claiming_more_tokens_than_any_response_can_is_a_dead_letter(tmp_path: Path) -> None:
    """Token counts are bounded (``TOKENS_MAX``): a record at the 64-bit limit used to be stored and then
    overflowed the sums of every refresh after it."""
    usage = {"id": "m1:r", "session_id": "s1", "model": None, "timestamp": None, "output_tokens": 1}
    msgs = d.with_offsets([("t.usage", b"s1", json.dumps({**usage, "input_tokens": 2**63 - 1}).encode()),
                           ("t.usage", b"s1", json.dumps({**usage, "id": "m2:r", "input_tokens": 5}).encode())])
    with open_sink(tmp_path / "u.duckdb", clock=clock) as sink:
        sink.write_batch(msgs)
        con = sink.con
        assert con.execute("SELECT id, input_tokens FROM usage").fetchall() == [("m2:r", 5)]
        assert con.execute("SELECT count(*) FROM dead_letters").fetchone() == (1,)


BIG_TOOL_INPUT = b'"tool_input":{"n":100000000000000000000}'


def test_a_tool_input_orjson_cannot_write_is_a_dead_letter_not_a_lost_batch(tmp_path: Path) -> None:
    """The former writer raised (TypeError out of ``write_batch``) on a tool input holding an integer
    past 64 bits; now the record becomes a ``sink_decode`` dead letter and the rest is written."""
    good = d.tool_msg(d.tool_view("toolu_1"))
    bad = ("t.tool-calls", b"s1", good[2].replace(b'"tool_input":null', BIG_TOOL_INPUT))
    assert BIG_TOOL_INPUT in bad[2]
    with open_sink(tmp_path / "s.duckdb", clock=clock) as sink:
        result = sink.write_batch(d.with_offsets([good, bad]))
        assert result.decode_errors == 1
        assert sink.query("SELECT id FROM tool_calls")[1] == [["toolu_1"]]
        assert sink.query("SELECT reason, detail, \"offset\" FROM dead_letters")[1] == [
            ["sink_decode", "TypeError: Integer exceeds 64-bit range", 1]]
    with ReferenceSink(tmp_path / "r.duckdb", clock=clock) as ref, pytest.raises(TypeError):
        ref.write_batch(d.with_offsets([good, bad]))


@pytest.mark.parametrize("when", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_a_time_outside_the_utc_range_is_a_decode_dead_letter_in_both(tmp_path: Path, when: str) -> None:
    """A time whose UTC instant falls outside years 1-9999 is refused by the models with its reason; it
    used to be written and then fail the pattern fold (a ``sink_write`` dead letter whose reason said
    nothing of the time, and a different one than the former writer's)."""
    good = d.tool_msg(d.tool_view("toolu_1"))
    bad = ("t.tool-calls", b"s1", good[2].replace(b'"id":"toolu_1"', b'"id":"toolu_2"').replace(
        b'"ended_at":null', b'"ended_at":"' + when.encode() + b'"'))
    assert when.encode() in bad[2]
    for kind in (open_sink, ReferenceSink):
        with kind(tmp_path / f"{kind.__name__}.duckdb", clock=clock) as sink:
            result = sink.write_batch(d.with_offsets([good, bad]))
            assert (result.decode_errors, result.refused) == (1, 0)
            assert sink.query("SELECT id FROM tool_calls")[1] == [["toolu_1"]]
            [[reason, detail]] = sink.query("SELECT reason, detail FROM dead_letters")[1]
            assert reason == "sink_decode" and "outside the range of UTC times" in detail, detail


PAYLOAD_TEXTS = [  # JSON texts orjson would write otherwise (exponent, escapes, spacing, key order kept)
    b'{"session_id":"s1","hook_event_name":"Stop","n":1e16}',
    b'{"hook_event_name":"Stop","session_id":"s1","s":"caf\\u00e9 \\/ \\t"}',
    b'{ "session_id" : "s1", "hook_event_name": "Stop" }',
    b'{"session_id":"s1","hook_event_name":"Stop","big":18446744073709551616}',  # past 64 bits
]


@pytest.mark.parametrize("text", PAYLOAD_TEXTS)
@pytest.mark.parametrize("time", [b'"2025-06-01T12:00:00Z"', b'"2025-06-01T12:00:00+00:00"'])  # fast, checked
def test_a_hook_payload_is_stored_as_the_text_the_record_holds(tmp_path: Path, text: bytes, time: bytes) -> None:
    """The payload column holds the record's ``data`` text exactly, whichever path read the record (a
    time not in the agents' form sends it to pydantic), in a run and alone; an integer past 64 bits,
    which orjson cannot write, is kept rather than refused."""
    value = b'{"id":"e1","type":"hook.event","source":"hook","subject":"s1","time":' + time + b',"data":' + text + b"}"
    fast = time.endswith(b'Z"')
    assert (_fold_one_row(value) is not None) == fast
    run = [("t.hook-events", b"s1", value.replace(b'"e1"', f'"e{i}"'.encode())) for i in range(BATCH_MIN)]
    for sink_kind in (open_sink, ReferenceSink):
        with sink_kind(tmp_path / f"{sink_kind.__name__}.duckdb", clock=clock) as sink:
            sink.write_batch(d.with_offsets(run))
            rows = sink.query("SELECT id, session_id, hook_event_name, payload::VARCHAR FROM hook_events "
                              "ORDER BY id")[1]
            assert rows == [[f"e{i}", "s1", "Stop", text.decode()] for i in sorted(range(BATCH_MIN), key=str)], rows
            assert sink.query("SELECT count(*) FROM dead_letters")[1] == [[0]]


def _fold_one_row(value: bytes) -> tuple[Any, ...] | None:
    try:
        return FAST["hook_events"](value)
    except Exception:  # noqa: BLE001 - not vouched for by the fast path
        return None


@pytest.mark.parametrize("data", [b'{"session_id":"s1","s":"caf\xff"}', b'[1,2]', b'"text"'])
def test_a_hook_payload_that_is_not_an_object_of_utf8_text_is_a_decode_dead_letter(tmp_path: Path, data: bytes) -> None:
    good = b'{"id":"e1","type":"hook.event","source":"hook","subject":"s1","time":"2025-06-01T12:00:00Z","data":{}}'
    bad = good.replace(b'"e1"', b'"e2"').replace(b'"data":{}', b'"data":' + data)
    assert _fold_one_row(bad) is None
    with open_sink(tmp_path / "s.duckdb", clock=clock) as sink:
        result = sink.write_batch(d.with_offsets([("t.hook-events", b"s1", good), ("t.hook-events", b"s1", bad)]))
        assert result.decode_errors == 1
        assert sink.query("SELECT id, payload::VARCHAR FROM hook_events")[1] == [["e1", "{}"]]
        assert sink.query("SELECT reason FROM dead_letters")[1] == [["sink_decode"]]


def _as_row(kind: str, row: tuple[Any, ...]) -> dict[str, Any]:
    """A fast-path row as the pydantic path gives it (times as datetimes)."""
    out = dict(zip(SCHEMAS[kind].names, row, strict=True))
    for name, f in zip(SCHEMAS[kind].names, SCHEMAS[kind], strict=True):
        if f.type == pa.timestamp("us", tz="UTC") and out[name] is not None:
            out[name] = datetime.fromisoformat(out[name])
    return out


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(sorted(BUILDERS)), st.data())
def test_where_the_fast_path_vouches_its_row_is_the_checked_row(topic: str, data: st.DataObject) -> None:
    value = mutate(data.draw, BUILDERS[topic](data.draw))
    kind = {"usage": "usage", "tool-calls": "tool_calls", "hook-events": "hook_events"}[topic]
    try:
        fast = FAST[kind](value)
    except Exception:  # noqa: BLE001 - not vouched for: the checked path decides, nothing to compare
        return
    checked = CHECKED[kind](value)  # must not raise: the fast path accepted it
    assert _as_row(kind, fast) == {name: checked.get(name) for name in SCHEMAS[kind].names}


def test_the_fast_path_serves_what_the_agents_write() -> None:
    """The agents' own records take the fast path (else the vectorized writer would be the old one)."""
    rng = random.Random(3)
    msgs = [d.tool_msg(v) for v in d.random_views(rng)] + [d.usage_msg(cost_usd=0.5), d.hook_msg("h1")]
    batch = fold(d.with_offsets(msgs), clock())
    assert batch.checked == {k: [] for k in batch.checked}
    assert sum(len(v) for v in batch.fast.values()) + sum(t.num_rows for v in batch.tables.values() for t in v) \
        == len(msgs)
    assert sum(t.num_rows for t in batch.tables["tool_calls"]) == len(msgs) - 2  # a run decoded at once


# -- the batch path against the record-by-record one ------------------------------------------------
def one_by_one(messages: list[Any]) -> Folded:
    """The record-by-record paths alone (the decoder before the batch path)."""
    out = Folded()
    for m in messages:
        _fold_one(out, m, KINDS.get(m[0].rsplit(".", 1)[-1]), clock())
    return out


def _plain(row: dict[str, Any]) -> str:
    return repr({k: v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v for k, v in row.items()})


def staged(batch: Folded) -> dict[str, Any]:
    """What a decoded batch stages, order aside: every table's rows (as decoded, before Arrow, which
    cannot hold some that the checked path lets through and the write then refuses), the markers, the
    decode errors."""
    rows = {}
    for t in TABLES:
        found = [*batch.checked.get(t, ()), *(_as_row(t, r) for r in batch.fast.get(t, ()))]
        found += [r for table in batch.tables.get(t, ()) for r in table.to_pylist()]
        rows[t] = sorted(map(_plain, found))
    return {"rows": rows, "markers": batch.markers, "decode_errors": batch.decode_errors}


AGENT_TIMES = st.sampled_from(["2025-06-01T12:00:00Z", "2025-06-01T12:00:00.250000Z", "2025-06-01T12:00:01.000000Z",
                               "2025-06-01T11:59:59.999999Z", "2025-05-31T23:00:00Z", None, None])
ODD_AGENT_TIMES = st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "1703-03-01T01:02:03Z",
                                   "0000-01-01T00:00:00Z", "2025-02-30T12:00:00Z", "2025-06-01T12:00:00.5Z"])
SIZES = st.one_of(st.integers(0, 9000), st.sampled_from([2**63 - 1, 0]))


def agent_obj(topic: str, draw: Any) -> dict[str, Any]:
    """A record as the agents write it (the struct takes it), its values varied."""
    time = lambda: draw(ODD_AGENT_TIMES) if draw(st.integers(0, 60)) == 0 else draw(AGENT_TIMES)  # noqa: E731
    if topic == "usage":
        obj: dict[str, Any] = {"id": draw(st.sampled_from(["m1:r", "m2:r", "m3:r"])), "session_id": "s1",
                               "model": draw(st.sampled_from([None, "claude-sonnet-4-5"])), "timestamp": time(),
                               "input_tokens": draw(SIZES), "output_tokens": draw(SIZES)}
        for name in ("cache_read_input_tokens", "cache_creation_input_tokens"):
            if draw(st.booleans()):
                obj[name] = draw(SIZES)
        for name in ("cache_creation_5m_tokens", "cache_creation_1h_tokens"):
            if draw(st.booleans()):
                obj[name] = draw(st.one_of(st.none(), SIZES))
        if draw(st.booleans()):
            obj["cost_usd"] = draw(st.sampled_from([None, 0.0, -0.0, 0.5, 3, 1e16, 1e-7]))
        if draw(st.booleans()):
            obj["source"] = draw(st.sampled_from(["transcript", "trajectory"]))
        return obj
    if topic == "tool-calls":
        tid = draw(st.sampled_from(["toolu_1", "toolu_2", "toolu_3", None]))
        key = draw(st.sampled_from([None, "s1:k:0", "s1:k:1"]))
        obj = {"id": tid or f"syn:{key or 's1:k:0'}", "tool_use_id": tid, "call_key": key, "session_id": "s1",
               "tool_name": draw(st.sampled_from(["Bash", "Read", None])),
               "status": draw(st.sampled_from(["started", "ok", "error", "interrupted"])),
               "source": draw(st.sampled_from(["hook", "transcript", "hook+transcript", ""]))}
        if draw(st.booleans()):
            obj["tool_input"] = draw(st.sampled_from([
                {"command": "ls -la", "timeout": 5}, {"b": 1, "a": [1, 2.5, {"z": None, "y": "é"}]}, "raw text",
                [1, "x"], None, {"command": 'echo "\\n"\t\u2028'}, {"n": 1.0}]))
        for name in ("command", "file_path"):
            if draw(st.booleans()):
                obj[name] = draw(st.sampled_from(["ls", "pytest -q", None, "a/b"]))
        for name in ("started_at", "ended_at"):
            if draw(st.integers(0, 3)):
                obj[name] = time()
        if draw(st.booleans()):
            obj["duration_ms"] = draw(st.sampled_from([None, 0.0, -0.0, 850.0, 12.5, 3, 250.0, 1000.0]))
        if draw(st.booleans()):
            obj["input_bytes"] = draw(SIZES)
        for name in ("output_bytes", "output_tokens_est"):
            if draw(st.booleans()):
                obj[name] = draw(st.one_of(st.none(), SIZES))
        return obj
    data = {"session_id": draw(st.sampled_from(["s1", "", 5, None])), "hook_event_name": "PostToolUse",
            "tool_name": draw(st.sampled_from(["Bash", None, 3])),
            "tool_use_id": draw(st.sampled_from(["toolu_1", None])), "tool_input": {"command": "ls"},
            "tool_response": draw(st.sampled_from([{"stdout": "ok", "n": [1, 2.5, -0.0, 1e16]}, "plain",
                                                   {"big": 2**64 - 1}, {"z": [True, None, "\x00"]}]))}
    obj = {"id": draw(st.sampled_from(["e1", "e2", "e3"])), "type": "hook.event",
           "source": draw(st.sampled_from(["hook", "hook-log"])), "subject": "s1", "data": data}
    if draw(st.integers(0, 3)):
        obj["time"] = time()
    if draw(st.booleans()):
        obj["specversion"] = "1"
    return obj


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(sorted(BUILDERS)), st.data())
def test_a_run_decoded_at_once_stages_what_record_by_record_stages(topic: str, data: st.DataObject) -> None:
    """Runs of one topic as the agents write them, their values varied (times at the ends of the
    range, spans that run backwards, signed zeros, the largest sizes), now and then a time that only
    looks right or a record damaged or odd in any of the ways above: the batch path (whole runs,
    halves, then record by record) stages exactly the rows, dead letters and counts of the
    record-by-record paths, and takes every run it vouches for."""
    values = []
    for _ in range(data.draw(st.integers(1, 3 * BATCH_MIN))):
        if data.draw(st.integers(0, 40)) == 0:
            values.append(mutate(data.draw, BUILDERS[topic](data.draw)))
        else:
            values.append(_json(agent_obj(topic, data.draw)))
    msgs = d.with_offsets([(f"t.{topic}", b"s1", v) for v in values])
    batch = fold(msgs, clock())
    assert staged(batch) == staged(one_by_one(msgs))
    if len(msgs) >= BATCH_MIN and not batch.checked["dead_letters"] and not any(batch.fast.values()) \
            and not any(batch.checked.values()):
        assert sum(t.num_rows for v in batch.tables.values() for t in v) == len(msgs)


def _base(topic: str, i: int) -> dict[str, Any]:
    if topic == "usage":
        return {"id": f"m{i}:r", "session_id": "s1", "model": "m", "timestamp": "2025-06-01T12:00:00Z",
                "input_tokens": i, "output_tokens": 1}
    if topic == "tool-calls":
        return {"id": f"toolu_{i}", "tool_use_id": f"toolu_{i}", "call_key": None, "session_id": "s1",
                "tool_name": "Bash", "status": "ok", "source": "hook", "started_at": "2025-06-01T12:00:00Z",
                "ended_at": "2025-06-01T12:00:01.000000Z", "duration_ms": 3.0}
    return {"id": f"e{i}", "type": "hook.event", "source": "hook", "subject": "s1", "time": "2025-06-01T12:00:00Z",
            "data": {"session_id": "s1", "hook_event_name": "Stop"}}


EDGES = {  # (topic, fields of one record among clean ones, whether the batch path may take it)
    "zero span, duration -0.0": ("tool-calls", {"ended_at": "2025-06-01T12:00:00Z", "duration_ms": -0.0}, True),
    "span backwards": ("tool-calls", {"ended_at": "2025-06-01T11:00:00Z", "duration_ms": None}, True),
    "span backwards, duration -0.0": ("tool-calls", {"ended_at": "2025-06-01T11:00:00Z", "duration_ms": -0.0}, True),
    "span under the duration": ("tool-calls", {"duration_ms": 5000.0}, True),
    "no start": ("tool-calls", {"started_at": None, "duration_ms": None}, True),
    "span past 285 years": ("tool-calls", {"started_at": "0001-01-01T00:00:00Z",  # a double would round it
                                           "ended_at": "2440-06-26T12:07:31.241020Z"}, False),
    "year 0": ("usage", {"timestamp": "0000-01-01T00:00:00Z"}, False),
    "30 February": ("usage", {"timestamp": "2025-02-30T12:00:00Z"}, False),
    "second 60": ("usage", {"timestamp": "2025-06-01T12:00:60Z"}, False),
    "half a second": ("usage", {"timestamp": "2025-06-01T12:00:00.5Z"}, False),
    "the last microsecond": ("usage", {"timestamp": "9999-12-31T23:59:59.999999Z"}, True),
    "a usage envelope among hooks": ("hook-events", {"type": "usage.record"}, False),
    "a hook at year 0": ("hook-events", {"time": "0000-01-01T00:00:00Z"}, False),
    "a hook without time": ("hook-events", {"time": None}, True),
}


@pytest.mark.parametrize("edge", sorted(EDGES))
def test_the_batch_path_at_the_edges_stages_what_record_by_record_stages(edge: str) -> None:
    topic, fields, batched = EDGES[edge]
    objs = [_base(topic, i) for i in range(2 * BATCH_MIN)]
    objs[BATCH_MIN // 2] = {**objs[BATCH_MIN // 2], **fields}
    msgs = d.with_offsets([(f"t.{topic}", b"s1", _json(o)) for o in objs])
    batch = fold(msgs, clock())
    assert staged(batch) == staged(one_by_one(msgs))
    in_tables = sum(t.num_rows for v in batch.tables.values() for t in v)
    assert in_tables == (len(msgs) if batched else BATCH_MIN), in_tables  # else the other half only


def test_a_bad_record_in_a_run_leaves_the_rest_to_the_batch_path() -> None:
    rng = random.Random(5)
    views = d.random_views(rng, calls=40)
    good = [d.tool_msg(v) for v in views]
    assert len(good) >= 4 * BATCH_MIN
    bad = ("t.tool-calls", b"s1", good[0][2].replace(b'"status":', b'"status":7,"x":', 1))
    msgs = d.with_offsets([*good[:len(good) // 2], bad, *good[len(good) // 2:]])
    batch = fold(msgs, clock())
    assert staged(batch) == staged(one_by_one(msgs))
    assert batch.decode_errors == 1
    assert sum(t.num_rows for t in batch.tables["tool_calls"]) >= len(good) - 2 * BATCH_MIN  # only near it


def test_versions_of_one_key_fold_like_the_reference(tmp_path: Path) -> None:
    rng = random.Random(11)
    views = d.random_views(rng, calls=30)
    items = [d.tool_msg(v) for v in views]
    items += [d.usage_msg(id=f"m{i % 4}:r", input_tokens=rng.randrange(50), output_tokens=rng.randrange(9),
                          cost_usd=rng.choice([None, 0.25])) for i in range(30)]
    items += [d.hook_msg(f"h{i % 3}", tool_use_id=f"toolu_{i}") for i in range(9)]
    msgs = d.with_offsets(items)
    rng.shuffle(msgs)
    with open_sink(tmp_path / "n.duckdb", clock=clock) as new, ReferenceSink(tmp_path / "r.duckdb", clock=clock) as ref:
        for i in range(0, len(msgs), 50):
            new.write_batch(msgs[i:i + 50])
            ref.write_batch(msgs[i:i + 50])
        assert state(new) == state(ref)
        assert new.query("SELECT count(*) FROM usage")[1] == [[4]]
    _ = (EventType, timedelta)
