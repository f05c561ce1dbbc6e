"""The five-hour backtest: baselines on a drawn timeline, and the figures on the real dev traces."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from outloop.agents.quota import UsageRow, blocks
from outloop.agents.quota_backtest import Point, linear_projection, run_backtest, windows_of

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def row(minutes: float, total: int) -> UsageRow:
    return UsageRow(T0 + timedelta(minutes=minutes), total, 0, 0, 0)


def test_linear_projection_is_ccusages() -> None:
    # 12:00 [ 12:30 (1000)  13:30 (1000) ... at 14:00: 2000 tokens over 60 min, 180 min left -> 2000 + 6000
    block = blocks([row(30, 1000), row(90, 1000)])[0]
    assert linear_projection(block, T0 + timedelta(hours=2)) == pytest.approx(8000)
    assert linear_projection(block, T0 + timedelta(minutes=40)) == 1000  # one row: no rate yet


def test_backtest_points_and_baselines() -> None:
    # two sessions a day apart; the second one goes on after the 25% point
    rows = [row(m, 1000) for m in range(0, 60, 5)] + [row(24 * 60 + m, 1000) for m in range(0, 200, 5)]
    bt = run_backtest(rows)
    assert bt.blocks == 2
    second = [p for p in bt.points if p.block_start == T0 + timedelta(days=1)]
    assert [p.fraction for p in second] == [0.25, 0.5, 0.75]
    p25 = second[0]
    assert p25.final == 40000 and p25.so_far == 16000
    assert p25.predictions["persistence"] == 16000
    assert p25.predictions["mean_of_earlier"] == 12000  # the first block's total
    assert p25.predictions["model"] > p25.so_far  # it was active at the forecast time


def test_month_and_week_windows() -> None:
    # usage on Jan 5, Jan 20 and Mar 3: two calendar months hold it (February none); weeks: three
    rows = [row(0, 10), row(15 * 24 * 60, 20), row(57 * 24 * 60, 5)]
    months = windows_of("month", rows)
    assert [(w.start.month, w.total) for w in months] == [(1, 30), (3, 5)]
    assert [w.total for w in windows_of("seven_day", rows)] == [10, 20, 5]
    bt = run_backtest([row(m * 60 * 24, 100) for m in range(20)], kind="month")  # a row a day, Jan 5-24 at noon
    assert bt.window == "month" and bt.blocks == 1 and [p.fraction for p in bt.points] == [0.25, 0.5, 0.75]
    assert bt.points[0].final == 2000 and bt.points[0].so_far == 400  # Jan 5-8 by 25% of January (Jan 8 18:00)


_ROWS = """
import json, sys
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import iter_paths
best, turns = {}, {}
for env in iter_paths([__import__("pathlib").Path(sys.argv[1])], ImportStats(), messages=True):
    d = env.data
    if env.type == "transcript.message":  # the version with the most content blocks wins, as in the sink
        if d["id"] not in turns or d["content_blocks"] > turns[d["id"]][0]:
            turns[d["id"]] = (d["content_blocks"], "tool" if d["tool_use_ids"] else "end")
        continue
    if env.type != "usage.record" or d.get("timestamp") is None or d.get("model") == "<synthetic>":
        continue
    row = [str(d["timestamp"]), d["input_tokens"], d["output_tokens"], d.get("cache_creation_input_tokens", 0),
           d.get("cache_read_input_tokens", 0)]
    if d["id"] not in best or sum(row[1:]) > sum(best[d["id"]][1:]):
        best[d["id"]] = row
json.dump([[*row, turns.get(i, (0, None))[1]] for i, row in best.items()], sys.stdout)
"""


def usage_rows(folder: Path) -> list[UsageRow]:
    """Usage rows as the pipeline stores them: one per id, the record with the largest totals, with the turn
    state of its response. Read in a child process, so that the traces never swell this process (children
    forked later inherit its size)."""
    proc = subprocess.run([sys.executable, "-c", _ROWS, str(folder)], capture_output=True, text=True, timeout=300,
                          check=True)
    return [UsageRow(datetime.fromisoformat(ts.replace("Z", "+00:00")), i, o, w, r, turn=turn)
            for ts, i, o, w, r, turn in json.loads(proc.stdout)]


@pytest.mark.traces
def test_backtest_on_dev_traces(traces: Path) -> None:
    bt = run_backtest(usage_rows(traces))
    assert bt.blocks >= 10 and len(bt.points) >= 20
    # the model beats the linear projection and the mean of earlier blocks by far, and is no worse
    # than persistence; its p10-p90 interval covers within 10 points of 80% and stays narrow
    assert bt.mape["model"] < 0.2 * bt.mape["linear"]
    assert bt.mape["model"] < 0.2 * bt.mape["mean_of_earlier"]
    # the renewal model (gaps between calls by turn state, context per call) beats persistence by the
    # issue's margin: 0.767x measured (0.80x before the gaps were kept apart by turn state)
    assert bt.mape["model"] <= 0.8 * bt.mape["persistence"]
    # 20 of the 30 points come after the session ended: the final equals the tokens so far, an atom the
    # interval holds at its lower end, so coverage runs above the nominal 80% (93% measured) and matches the
    # probability the forecasts gave their intervals (93%); the randomized PIT, exact for atoms, covers 80%
    assert 0.7 <= bt.coverage <= 0.95
    assert abs(bt.coverage - bt.stated) <= 0.1
    assert 0.7 <= bt.pit_coverage <= 0.9
    assert 0 < bt.median_width < 2.0


@pytest.mark.parametrize(("pit", "covered"), [
    ((0.5, 0.5), 1.0),  # no atom: the plain indicator
    ((0.95, 0.95), 0.0),
    ((0.0, 0.6), (0.6 - 0.1) / 0.6),  # an atom from 0 to 0.6: its part above 0.1
    ((0.0, 1.0), 0.8),  # the whole distribution on one value: 80% of the time inside the central 80%
    ((0.92, 1.0), 0.0),
])
def test_randomized_pit_coverage(pit: tuple[float, float], covered: float) -> None:
    point = Point(T0, 0.25, T0, 0, 1, {}, 0, 0, 1.0, pit)
    assert point.pit_covered(0.1, 0.9) == pytest.approx(covered)
