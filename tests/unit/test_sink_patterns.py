"""Pattern materialization on a real DuckDB file: counts are facts, windows follow event time."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from outloop.projections import open_sink
from outloop.sinks.writer import DuckSink
from tests.unit import sinkdata as d

PYTEST = {"command": "cd api && pytest tests/unit -q"}


def call(n: int, *, session: str = "s1", at=d.T0, tool_input=PYTEST, status="ok", tokens=100, ms=1000.0,
         tool_name="Bash") -> dict:
    # a hook call both of whose ends were seen: the run time is measured from the hook times
    return d.tool_view(f"toolu_{session}_{n}", session_id=session, tool_name=tool_name, tool_input=tool_input,
                       command=tool_input.get("command"), status=status, started_at=at,
                       ended_at=at + timedelta(milliseconds=ms), output_tokens_est=tokens, hook_pre_at=at,
                       hook_post_at=at + timedelta(milliseconds=ms))


def write(sink: DuckSink, views: list[dict], flush: bool = True) -> None:
    items = [d.tool_msg(v) for v in views]
    if flush:
        items.append(d.flush_msg("tool-calls", "m", 0))
    sink.write_batch(d.with_offsets(items))


def patterns(sink: DuckSink) -> dict[str, dict]:
    cols, rows = sink.query("SELECT * FROM operation_patterns")
    return {r[0]: dict(zip(cols, r, strict=True)) for r in rows}


@pytest.fixture
def sink(tmp_path: Path):
    with open_sink(tmp_path / "p.duckdb", clock=d.clock) as s:
        yield s


def test_counts_windows_and_confidence_from_facts(sink: DuckSink) -> None:
    # timeline (event time, watermark = T0):  T0-40d  T0-10d  T0-2d  T0-2h  T0
    ages = [timedelta(days=40), timedelta(days=10), timedelta(days=2), timedelta(hours=2), timedelta(0)]
    views = [call(i, session=f"s{i % 2}", at=d.T0 - age) for i, age in enumerate(ages)]
    write(sink, views)
    row = patterns(sink)["test:pytest:tests/unit"]
    assert (row["occurrence_count"], row["session_count"]) == (5, 2)
    assert (row["count_1h"], row["count_24h"], row["count_7d"], row["count_30d"]) == (1, 2, 3, 4)
    assert row["tokens_total"] == 500 and row["success_rate"] == 1.0 and row["avg_duration_ms"] == 1000.0
    breakdown = orjson.loads(row["confidence_breakdown"])
    points = breakdown["frequency"]["points"] + breakdown["consistency"]["points"] + breakdown["success"]["points"]
    assert round(points) == row["confidence_score"]
    assert breakdown["consistency"]["cv_duration"] == 0.0  # identical durations: perfectly consistent
    assert row["status"] == "candidate"
    assert orjson.loads(row["samples"]) == ["cd api && pytest tests/unit -q"]


def test_redelivery_and_partial_views_never_count_twice(sink: DuckSink) -> None:
    views = [call(i) for i in range(6)]
    started = [d.tool_view(v["id"], session_id="s1", tool_name="Bash", tool_input=PYTEST, started_at=d.T0)
               for v in views]
    write(sink, started, flush=False)
    write(sink, views)
    write(sink, list(reversed(views)))
    row = patterns(sink)["test:pytest:tests/unit"]
    assert row["occurrence_count"] == 6 and row["ok_count"] == 6
    _, n = sink.query("SELECT count(*) FROM pattern_occurrences")
    assert n == [[6]]


def test_same_final_state_whatever_the_batching(tmp_path: Path) -> None:
    rng = random.Random(5)
    cmds = [{"command": c} for c in ("pytest -q", "npm run build", "git status", "ruff check .")]
    views = [call(i, session=f"s{i % 3}", at=d.T0 + timedelta(minutes=i), tool_input=rng.choice(cmds),
                  status=rng.choice(["ok", "error"]), tokens=rng.randint(1, 900), ms=rng.uniform(1, 9000))
             for i in range(60)]
    dumps = []
    for seed in range(3):
        order = views[:]
        random.Random(seed).shuffle(order)
        with open_sink(tmp_path / f"{seed}.duckdb", clock=d.clock) as s:
            size = 1 + seed * 7
            for i in range(0, len(order), size):
                write(s, order[i:i + size], flush=False)
            write(s, [], flush=True)
            dumps.append({t: sorted(s.query(f"SELECT * FROM {t}")[1], key=repr)
                          for t in ("operation_patterns", "pattern_occurrences", "session_sequences")})
    assert dumps[0] == dumps[1] == dumps[2]


def test_sequences_by_distinct_sessions_without_plan_rhythm(sink: DuckSink) -> None:
    edit = {"file_path": "/repo/src/app.py", "old_string": "a", "new_string": "b"}
    todo = {"todos": [{"content": "x", "status": "pending"}]}
    views = []
    for s in ("a", "b"):
        steps = [("Edit", edit), ("TodoWrite", todo), ("Bash", PYTEST), ("Edit", edit), ("Bash", PYTEST)]
        for i, (tool, inp) in enumerate(steps):
            views.append(call(i, session=s, at=d.T0 + timedelta(seconds=i), tool_input=inp, tool_name=tool))
    write(sink, views)
    _, rows = sink.query("SELECT ngram, session_count, occurrence_count FROM sequence_patterns "
                         "WHERE level = 'category' AND n = 4")
    assert rows == [["edit -> test -> edit -> test", 2, 2]]
    _, plan = sink.query("SELECT count(*) FROM session_sequences WHERE ngram LIKE '%plan%'")
    assert plan == [[0]]


def test_syn_occurrence_goes_when_its_call_joins_the_real_row(sink: DuckSink) -> None:
    key = "s1:abc:0"
    syn = d.tool_view(f"syn:{key}", call_key=key, tool_input=PYTEST, command=PYTEST["command"],
                      started_at=d.T0, status="ok")
    write(sink, [syn])
    assert patterns(sink)["test:pytest:tests/unit"]["occurrence_count"] == 1
    real = d.tool_view("toolu_real", call_key=key, tool_input=PYTEST, command=PYTEST["command"],
                       started_at=d.T0, source="transcript")
    write(sink, [real])
    assert patterns(sink)["test:pytest:tests/unit"]["occurrence_count"] == 1
    _, ids = sink.query("SELECT tool_use_id FROM pattern_occurrences")
    assert ids == [["toolu_real"]]


def test_window_boundaries_are_exclusive_to_the_microsecond(sink: DuckSink) -> None:
    # watermark W off the hour; a call counts in a window when ts > W - window (buckets + boundary hour)
    w = d.T0 + timedelta(minutes=17, seconds=3, microseconds=5)
    us = timedelta(microseconds=1)
    ats = [w, w - timedelta(hours=1), w - timedelta(hours=1) + us, w - timedelta(hours=24) + us,
           w - timedelta(hours=24), w - timedelta(hours=24, minutes=17, seconds=3, microseconds=5),
           w - timedelta(days=7) + timedelta(minutes=42), w - timedelta(days=30) + us, w - timedelta(days=30)]
    write(sink, [call(i, at=at) for i, at in enumerate(ats)])
    row = patterns(sink)["test:pytest:tests/unit"]
    assert row["windows_as_of"] == w
    assert (row["count_1h"], row["count_24h"], row["count_7d"], row["count_30d"]) == (2, 4, 7, 8)
    _, buckets = sink.query("SELECT sum(n) FROM pattern_hours")
    assert buckets == [[9]]


def test_sequences_mined_in_chunks_equal_sequences_mined_at_once(sink: DuckSink,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """refresh_sequences walks the occurrences and inserts n-grams SEQUENCE_CHUNK rows at a time (its
    memory bound): a session cut by a chunk boundary must come out as if mined in one go."""
    from outloop.projections import patterns as pat

    edit = {"file_path": "/repo/src/app.py", "old_string": "a", "new_string": "b"}
    steps = [("Edit", edit), ("Bash", PYTEST), ("Read", {"file_path": "/repo/README.md"}), ("Bash", PYTEST)]
    views = [call(i, session=f"s{k}", at=d.T0 + timedelta(seconds=i), tool_input=steps[(i + k) % 4][1],
                  tool_name=steps[(i + k) % 4][0]) for k in range(5) for i in range(7)]
    write(sink, views)
    query = "SELECT * FROM session_sequences ORDER BY ALL"
    at_once = sink.query(query)[1]
    assert len(at_once) > 20

    monkeypatch.setattr(pat, "SEQUENCE_CHUNK", 3)  # 35 occurrences: 12 chunks, sessions cut across them
    with sink.transaction() as con:
        written = pat.refresh_sequences(con, {f"s{k}" for k in range(5)})
    assert written == len(at_once)
    assert sink.query(query)[1] == at_once


def test_a_statement_that_fails_inside_materialization_surfaces_as_itself(sink: DuckSink) -> None:
    """A refusal inside a registered view's block must reach the writer as itself: unregistering in
    the aborted transaction used to replace it with "transaction is aborted" (a transient error, so
    the batch was retried forever instead of being split down to a dead letter)."""
    import duckdb

    from outloop.projections.patterns import _CALL, occurrences_for

    write(sink, [call(1)])
    [[tid]] = sink.query("SELECT tool_use_id FROM pattern_occurrences")[1]
    with pytest.raises(duckdb.ConstraintException), sink.transaction() as con:
        row = con.execute(_CALL.format(keys="?"), [tid]).fetchall()[0]
        occurrences_for(con, [tid], fresh={tid: row})  # taken for new: its occurrence meets the stored one


def test_each_command_keeps_its_side_effect_and_the_pattern_counts_the_classes(sink: DuckSink) -> None:
    """`rm -f tmp* && git status` is destructive, `git status` read-only, both `vcs:git:status`: the
    pattern shows both classes with their counts and is read-only by a share of 0.8, not destructive
    because of two calls; a redelivery counts nothing twice; a tie goes to the riskier class."""
    status, cleanup = {"command": "git status"}, {"command": "rm -f tmp* && git status"}
    views = [call(i, tool_input=status if i < 8 else cleanup, at=d.T0 + timedelta(seconds=i)) for i in range(10)]
    write(sink, views)
    write(sink, views)  # redelivered: nothing changes
    row = patterns(sink)["vcs:git:status"]
    assert orjson.loads(row["side_effects"]) == {"read-only": 8, "destructive": 2}
    assert list(orjson.loads(row["side_effects"])) == ["read-only", "destructive"]  # safest first
    assert (row["side_effect"], row["side_effect_share"]) == ("read-only", 0.8)
    assert row["status"] == "candidate"
    calls = dict(sink.query("SELECT command, count(*) FROM tool_calls WHERE side_effect = 'destructive' "
                            "GROUP BY ALL")[1])
    assert calls == {"rm -f tmp* && git status": 2}
    write(sink, [call(i, tool_input=cleanup, at=d.T0 + timedelta(seconds=i)) for i in range(10, 16)])
    row = patterns(sink)["vcs:git:status"]
    assert orjson.loads(row["side_effects"]) == {"read-only": 8, "destructive": 8}
    assert (row["side_effect"], row["side_effect_share"], row["status"]) == ("destructive", 0.5, "detected")


def test_wall_clock_durations_stay_out_of_average_durations_and_confidence(sink: DuckSink) -> None:
    """Four `cat` calls measured by the hooks (40-46 ms) and one seen only in a transcript, whose
    result came 638,790 ms after its use (a permission wait, inseparable there): the wall-clock call is
    stored as such, labelled, and the pattern's average and consistency come from the measured four; a
    fifth hook call whose Pre and Post had a permission dialog between them counts in no average either."""
    cat = {"command": "cat README.md"}
    measured = [call(i, tool_input=cat, ms=40.0 + 2 * i, at=d.T0 + timedelta(minutes=i)) for i in range(4)]
    waited = d.tool_view("toolu_wait", session_id="s1", tool_name="Bash", tool_input=cat, command=cat["command"],
                         status="ok", started_at=d.T0 + timedelta(minutes=9),
                         ended_at=d.T0 + timedelta(minutes=9, milliseconds=638_790), output_tokens_est=100,
                         source="transcript")
    asked = {**call(5, tool_input=cat, ms=90_000.0, at=d.T0 + timedelta(minutes=5)), "permission_asked": True}
    write(sink, [*measured, waited, asked])
    rows = dict((r[0], r[1:]) for r in sink.query("SELECT id, duration_ms, run_ms, duration_source FROM tool_calls")[1])
    assert rows["toolu_wait"] == [638_790.0, None, "transcript-wallclock"]
    assert rows["toolu_s1_3"] == [46.0, 46.0, "hook"]
    assert rows["toolu_s1_5"] == [90_000.0, None, "hook-wallclock"]
    row = patterns(sink)["read:cat:README.md"]
    assert row["occurrence_count"] == 6 and row["avg_duration_ms"] == 43.0
    breakdown = orjson.loads(row["confidence_breakdown"])
    assert 0 < breakdown["consistency"]["cv_duration"] < 0.1  # the 638 s wait would make it ~2
