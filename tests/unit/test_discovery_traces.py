"""Discovery on the real traces through the real pipeline (importers, sessions fold, DuckDB sink in process):
recommendations with ROI and evidence, monthly savings recomputed from the stored rows alone, a second run that
changes nothing, changed data that rewrites a draft in place, and the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from outloop.agents.pricing import PriceTable
from outloop.drafts import SECTIONS, render, write_drafts
from outloop.projections import open_sink
from tests.unit.fakegh import FAKE_GH

# traces-dev spends little in its last 30 days: the default $0.50/month for a tool keeps none;
# this threshold lets the tool kind show as well
CONFIG = "[thresholds]\nmin_monthly_usd = 0.05\n"
OUTLOOP = Path(sys.executable).with_name("outloop")


@pytest.fixture(scope="module")
def loaded(traces_db: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("discovery")
    db, config = folder / "dev.duckdb", folder / "discovery.toml"
    shutil.copy(traces_db, db)  # the loaded traces are shared: write on a copy
    config.write_text(CONFIG)
    with open_sink(db) as sink:
        sink.discover(str(config))
    return db, config


def _recs(db: Path) -> list[dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute("SELECT * FROM v_recommendations WHERE current ORDER BY rank")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def test_the_default_thresholds_recommend_more_than_one_opportunity(traces_db: Path, tmp_path: Path) -> None:
    """With the built-in thresholds (a tool needs $0.50 per 30 days, the other kinds $0.05), each
    recommendation carries its ROI."""
    db = tmp_path / "defaults.duckdb"
    shutil.copy(traces_db, db)
    with open_sink(db) as sink:
        recs = sink.discover(None)
    assert len(recs) >= 2 and {"context", "macro"} <= {r["kind"] for r in recs}
    assert all(r["monthly_savings_usd"] >= (0.5 if r["kind"] == "tool" else 0.05) for r in recs)
    assert all(r["roi_pct"] is not None and r["payback_months"] > 0 for r in recs)


def test_recommendations_with_roi_and_evidence(loaded: tuple[Path, Path]) -> None:
    db, _ = loaded
    recs = _recs(db)
    assert len(recs) >= 2 and {"tool", "context"} <= {r["kind"] for r in recs}
    con = duckdb.connect(str(db), read_only=True)
    try:
        for r in recs:
            assert r["monthly_savings_usd"] >= 0.05 and r["roi_pct"] is not None and r["payback_months"] > 0
            assert r["monthly_low_usd"] <= r["monthly_savings_usd"] <= r["monthly_high_usd"]
            n = con.execute("SELECT count(*) FROM recommendation_occurrences WHERE rec_id = ?", [r["id"]]).fetchone()
            assert n == (r["occurrences"],)
            assert r["window_end"] == r["as_of"] and (r["window_end"] - r["window_start"]).days == 30
    finally:
        con.close()


def test_monthly_savings_recomputed_from_the_rows_alone(loaded: tuple[Path, Path]) -> None:
    db, _ = loaded
    recs = {r["key"]: r for r in _recs(db)}
    con = duckdb.connect(str(db), read_only=True)
    try:
        cache = recs["cache-break:idle"]
        (extra,) = con.execute('SELECT sum(extra_cost_usd) FROM cache_breaks WHERE cause = \'idle\' AND "at" > ? '
                               'AND "at" <= ?', [cache["window_start"], cache["window_end"]]).fetchone()
        assert cache["monthly_savings_usd"] == pytest.approx(extra, abs=1e-4)

        tool = next(r for r in recs.values() if r["kind"] == "tool")
        rows = con.execute(
            "SELECT c.tokens, c.carry, (SELECT u.model FROM usage u WHERE u.session_id = o.session_id "
            "AND u.\"timestamp\" >= o.ts ORDER BY u.\"timestamp\" LIMIT 1) FROM pattern_occurrences o "
            "LEFT JOIN context_outputs c ON c.id = o.tool_use_id WHERE o.signature = ? AND o.ts > ? AND o.ts <= ?",
            [tool["key"], tool["window_start"], tool["window_end"]]).fetchall()
    finally:
        con.close()
    prices, share = PriceTable.default(), 0.6
    saved = []
    for tokens, carry, model in rows:
        if tokens is None:
            continue
        rates = prices.lookup(model)[1].rates  # type: ignore[index]
        saved.append(0.0 if carry == 0 else round(share * tokens) * (rates.cache_write_5m
                                                                     + (carry - 1) * rates.cache_read) / 1e6)
    assert len(rows) == tool["occurrences"] and len(saved) == tool["measured"]
    assert tool["monthly_savings_usd"] == pytest.approx(len(rows) * sum(saved) / len(saved), abs=1e-4)


def test_twice_changes_nothing_and_changed_data_updates_a_draft_in_place(loaded: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    db, config = loaded
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    drafts = tmp_path / "drafts"
    with open_sink(copy) as sink:
        first = sink.discover(str(config))
        write_drafts(first, drafts)
        second = sink.discover(str(config))
        again = write_drafts(second, drafts)
        assert second == first and not again.created and not again.updated
        cache = next(r for r in second if r["key"] == "cache-break:idle")
        with sink.transaction() as con:  # one more idle cache break in the window
            con.execute("INSERT INTO cache_breaks SELECT 'extra:' || usage_id, session_id, \"at\", model, cause, "
                        "gap_seconds, tokens, cost_usd, extra_cost_usd FROM cache_breaks WHERE cause = 'idle' "
                        "AND \"at\" > ? ORDER BY \"at\" DESC LIMIT 1", [cache["window_start"]])
        third = sink.discover(str(config))
    changed = write_drafts(third, drafts)
    assert [p.name for p in changed.updated] == [f"{cache['id']}.md"] and not changed.created
    assert sorted(p.name for p in drafts.iterdir()) == sorted(f"{r['id']}.md" for r in first)
    text = (drafts / f"{cache['id']}.md").read_text()
    assert f"Occurrences in the window: {cache['occurrences'] + 1}" in text
    for section in SECTIONS:
        assert section in text


def test_the_cli_discovers_drafts_files_once_and_takes_feedback(loaded: tuple[Path, Path], tmp_path: Path) -> None:
    """Five runs of the installed command (about 2.5 s each to start), the one end-to-end test of the user's
    path: discover with drafts and a dry-run filing, a real filing through a fake gh on PATH, again (nothing
    filed twice: the recorded issues are edited), accept with a rule, show a draft."""
    db, config = loaded
    copy = tmp_path / "cli.duckdb"
    shutil.copy(db, copy)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH.format(python=sys.executable))
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "gh.log"
    env = {**os.environ, "OUTLOOP_HOME": str(tmp_path / "home"), "OUTLOOP_HTTP_PORT": "1",  # no worker answers
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_GH_LOG": str(log),
           "FAKE_GH_STATE": str(tmp_path / "issues.json")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(OUTLOOP), *args, "--db", str(copy)], env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    def discover(*extra: str) -> dict:
        done = cli("discover", "--json", "--config", str(config), "--out", str(tmp_path / "d"), "--file", *extra)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    data = discover()
    ids = [r["id"] for r in data["recommendations"]]
    assert len(ids) >= 2 and len(data["drafts"]["created"]) == len(ids)
    assert [f["action"] for f in data["filing"]] == ["would-create"] * len(ids)  # dry run by default
    assert not log.exists()  # ... which calls nothing
    filed = discover("--no-dry-run", "--repo", "o/r")["filing"]
    assert [f["action"] for f in filed] == ["create"] * len(ids)
    again = discover("--no-dry-run", "--repo", "o/r")
    assert [f["action"] for f in again["filing"]] == ["update"] * len(ids)
    assert {r["filed_url"] for r in again["recommendations"]} == {f["url"] for f in filed}
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[:2] for c in calls].count(["issue", "create"]) == len(ids)
    accepted = cli("recommendations", "accept", ids[0], "--rule", "my-rule")
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["projected_monthly_usd"] == data["recommendations"][0]["monthly_savings_usd"]
    shown = cli("recommendations", "show", ids[1])
    assert shown.returncode == 0 and ids[1] in shown.stdout and "## Acceptance criteria" in shown.stdout


def test_an_active_rule_that_under_delivers_becomes_an_opportunity(loaded: tuple[Path, Path], tmp_path: Path) -> None:
    db, config = loaded
    copy = tmp_path / "rule.duckdb"
    shutil.copy(db, copy)
    with open_sink(copy) as sink:
        tool = next(r for r in sink.discover(str(config)) if r["kind"] == "tool")
        sink.recommendation_feedback(tool["id"], "accept", "my-rule")
        with sink.transaction() as con:
            con.execute("INSERT INTO routing_rules (name, version, family, kind, mode, signatures, categories, "
                        "updated_at) VALUES ('my-rule', '1', 'generic', 'generic', 'advise', ?, '[]', ?)",
                        [json.dumps([tool["key"]]), tool["as_of"]])
            for i in range(4):  # measured decisions that realised almost nothing (as routing.savings stores them)
                con.execute("INSERT INTO cost_savings_log (decision_id, session_id, rule, mode, action, decided_at, "
                            "net_tokens, net_usd, fidelity, fidelity_used, basis) VALUES (?, 's', 'my-rule', 'advise', "
                            "'advise', ?, 10, 0.0001, 1.0, 3, 'measured')", [f"rd:{i}", tool["as_of"]])
        recs = sink.discover(str(config))
    rule = next(r for r in recs if r["kind"] == "rule")
    assert rule["key"] == "my-rule" and rule["occurrences"] == 4
    assert rule["evidence"]["projected_monthly_usd"] == tool["monthly_savings_usd"]
    assert rule["monthly_savings_usd"] == pytest.approx(tool["monthly_savings_usd"] - 4 * 0.0001, abs=1e-4)
    assert all(r["key"] != tool["key"] for r in recs)  # covered by an active rule: no tool any more


def test_memory_files_of_a_project_are_priced_by_every_call_that_re_reads_them(loaded: tuple[Path, Path],
                                                                               tmp_path: Path) -> None:
    db, config = loaded
    copy = tmp_path / "memory.duckdb"
    shutil.copy(db, copy)
    files = json.dumps([{"path": "/proj/CLAUDE.md", "bytes": 24000, "tokens": 8000}])
    with open_sink(copy) as sink:
        cache = next(r for r in sink.discover(str(config)) if r["key"] == "cache-break:idle")
        with sink.transaction() as con:  # two sessions of the window measured in a project folder at hand
            sessions = con.execute(
                "SELECT e.session_id, e.api_calls, (SELECT mode(model) FROM usage u WHERE u.session_id = e.session_id) "
                "FROM context_efficiency e JOIN context_overhead o USING (session_id) WHERE e.api_calls > 1 "
                "AND e.window_end > ? AND e.window_end <= ? ORDER BY e.session_id LIMIT 2",
                [cache["window_start"], cache["window_end"]]).fetchall()
            assert len(sessions) == 2
            con.execute("UPDATE context_overhead SET cwd = '/proj', memory_tokens = 8000, memory_files = ? "
                        "WHERE session_id IN (?, ?)", [files, sessions[0][0], sessions[1][0]])
        recs = sink.discover(str(config))
    memory = next((r for r in recs if r["key"] == "memory:/proj"), None)
    assert memory is not None, (sessions, [(r["key"], r["monthly_savings_usd"]) for r in recs])
    prices = PriceTable.default()
    expected = 0.0
    for _sid, calls, model in sessions:
        rates = prices.lookup(model)[1].rates  # type: ignore[index]
        expected += 4000 * (rates.cache_write_5m + (calls - 1) * rates.cache_read) / 1e6
    assert memory["kind"] == "context" and memory["occurrences"] == 2 and memory["sessions"] == 2
    assert memory["monthly_savings_usd"] == pytest.approx(expected, abs=1e-4)
    assert "/proj/CLAUDE.md" in render(memory)
