"""``outloop replay --route-mode shadow`` on the real traces: every tool call decided by the router and
priced with the runner's real summarisers, the routing section, and the decisions stored once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from outloop.replay import replay
from tests.integration.test_pipeline import settings_for

pytestmark = [pytest.mark.integration, pytest.mark.traces, pytest.mark.slow]

KEYS = {"total_tokens", "total_cost_usd", "net_tokens_saved", "net_usd_saved", "reduction_tokens_pct",
        "reduction_cost_pct", "reduction_tokens_pct_without_largest", "median_session_reduction_tokens_pct",
        "by_rule", "by_category", "fidelity", "test_build_operations", "estimator", "basis"}


def _decisions(db: Path) -> list[list[tuple[object, ...]]]:
    """The rows of the routing tables a shadow replay writes."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in ("routing_decisions", "cost_savings_log")]
    finally:
        con.close()


def test_shadow_replay_prices_every_decision_and_stores_it_once(tmp_path: Path, broker: str, traces: Path) -> None:
    s = settings_for(tmp_path, broker)
    first = replay([traces], s, route_mode="shadow")
    r = first.routing
    assert r is not None and set(r) >= KEYS
    assert r["total_tokens"] == first.tokens["total"] - _trajectory_tokens(s.db)
    assert r["decisions"] == r["stored_decisions"] > 0
    ops = r["test_build_operations"]
    assert ops["structured_share_pct"] >= 40, ops
    assert r["estimator"]["calibrated"] and 2.0 < r["estimator"]["chars_per_token"] < 4.0
    con = duckdb.connect(str(s.db), read_only=True)
    try:
        # a structured decision never lands on a command whose side effect is not deterministic
        bad = con.execute(
            "SELECT d.signature, t.side_effect FROM routing_decisions d JOIN tool_calls t USING (tool_use_id) "
            "WHERE d.kind = 'structured' AND t.side_effect NOT IN ('read-only', 'writes files')").fetchall()
        assert bad == []
        logged = con.execute("SELECT count(*), sum(net_tokens), count(*) FILTER (WHERE basis = 'estimate') "
                             "FROM cost_savings_log").fetchone()
        assert logged == (r["decisions"], r["net_tokens_saved"], r["decisions"])
        # routing never costs: a short output is printed exactly (saves 0), so no kept decision is negative
        negative = con.execute("SELECT rule, net_tokens FROM cost_savings_log "
                               "WHERE net_tokens < 0 AND (fidelity IS NULL OR fidelity >= 1)").fetchall()
        assert negative == [] and all(g["net_tokens"] >= 0 for g in r["by_rule"].values()), r["by_rule"]
    finally:
        con.close()
    before = _decisions(s.db)
    second = replay([traces], replace(s, topic_prefix=s.topic_prefix + "b", app_id=s.app_id + "b"),
                    route_mode="shadow")
    assert _decisions(s.db) == before
    assert second.routing is not None and second.routing["net_tokens_saved"] == r["net_tokens_saved"]


def _trajectory_tokens(db: Path) -> int:
    """Tokens of the replayed trajectories: imported, but not routed (the section says so)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute("SELECT coalesce(sum(input_tokens + output_tokens + cache_read_input_tokens "
                          "+ cache_creation_input_tokens), 0) FROM usage WHERE source = 'trajectory'").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()
