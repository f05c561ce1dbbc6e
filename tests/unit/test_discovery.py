"""Discovery's pure ROI and ranking (the worked examples of the defaults file), sequences, drafts written in
place, and filing through a fake ``gh`` on PATH that records its arguments."""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from outloop.agents.discovery import (
    Candidate,
    DiscoveryConfig,
    Occurrence,
    assess,
    examples,
    find_sequence,
    load_config,
    rank,
    rec_id,
    roi_figures,
    sequence_tokens,
    underdelivers,
    window,
)
from outloop.drafts import SECTIONS, render, write_drafts
from outloop.filing import file_issues
from outloop.projections.discovery import turns_saved
from tests.unit.fakegh import FAKE_GH

END = datetime(2026, 1, 17, 18, 0, tzinfo=UTC)


def _cand(kind: str, key: str, usd: list[float], days_ago: list[float] | None = None, sessions: int = 3) -> Candidate:
    ago = days_ago or [1.0 + i * 0.5 for i in range(len(usd))]
    occ = tuple(Occurrence(f"t{i}", f"s{i % sessions}", END - timedelta(days=a), 1000, u)
                for i, (u, a) in enumerate(zip(usd, ago, strict=True)))
    return Candidate(kind, key, f"title {key}", occ, "do it", ("criterion",), {"signature": key})


@pytest.mark.parametrize("example", examples(), ids=lambda e: e["kind"])
def test_worked_examples_of_the_defaults_file(example: dict) -> None:
    cfg = load_config()
    c = _cand(example["kind"], "k", [example["usd_per_occurrence"]] * example["occurrences"])
    r = assess(c, *window(END, cfg), cfg)
    assert r.monthly_savings_usd == pytest.approx(example["expect_monthly_usd"])
    assert r.build_cost_usd == pytest.approx(example["expect_build_cost_usd"])
    assert r.payback_months == pytest.approx(example["expect_payback_months"], abs=1e-3)
    assert r.roi_pct == pytest.approx(example["expect_roi_pct"], abs=0.1)
    assert r.priority == example["expect_priority"]


def test_only_occurrences_inside_the_window_count_and_the_rate_is_per_30_days() -> None:
    cfg = replace(load_config(), window_days=15.0)
    c = _cand("tool", "test:x:y", [0.1] * 10, days_ago=[1, 2, 3, 4, 5, 20, 40, 60, 80, 100])
    r = assess(c, *window(END, cfg), cfg)
    assert r.occurrences == 5 and r.occurrences_30d == 10.0  # 5 in 15 days, never the all-time 10
    assert r.monthly_savings_usd == pytest.approx(1.0)
    assert len(r.detail) == 5 and all(o.at > END - timedelta(days=15) for o in r.detail)


def test_interval_comes_from_the_spread_and_holds_the_estimate() -> None:
    cfg = load_config()
    even = assess(_cand("tool", "a", [0.2] * 8), *window(END, cfg), cfg)
    spread = assess(_cand("tool", "b", [0.0, 0.4] * 4), *window(END, cfg), cfg)
    assert even.monthly_low_usd == even.monthly_savings_usd == even.monthly_high_usd
    assert spread.monthly_savings_usd == pytest.approx(even.monthly_savings_usd)
    assert spread.monthly_low_usd < spread.monthly_savings_usd < spread.monthly_high_usd


def test_unmeasured_occurrences_count_in_the_rate_not_in_the_mean() -> None:
    cfg = load_config()
    occ = tuple(Occurrence(f"t{i}", "s", END - timedelta(days=1), None if i % 2 else 10, None if i % 2 else 0.5)
                for i in range(6))
    r = assess(Candidate("tool", "x", "x", occ, "", ()), *window(END, cfg), cfg)
    assert (r.occurrences, r.measured, r.monthly_savings_usd) == (6, 3, pytest.approx(3.0))


def test_rank_applies_thresholds_and_orders_by_priority_then_roi() -> None:
    cfg = load_config()
    big = _cand("context", "big", [3.0] * 12)  # high (the second worked example)
    mid = _cand("tool", "mid", [3.0] * 12)  # $36/month for $400: pays back in 11 months, medium
    small = _cand("tool", "small", [0.01] * 12)  # below min_monthly_usd
    few = _cand("tool", "few", [5.0] * 3)  # below min_occurrences
    lonely = _cand("macro", "lonely", [1.0] * 12, sessions=1)  # one session only
    ranked = rank([small, mid, few, lonely, big], END, cfg)
    assert [r.key for r in ranked] == ["big", "mid"]
    assert [r.priority for r in ranked] == ["high", "medium"]


def test_ids_are_stable_and_distinct_per_kind_and_key() -> None:
    assert rec_id("tool", "vcs:git:status") == rec_id("tool", "vcs:git:status")
    assert rec_id("tool", "vcs:git:status") != rec_id("macro", "vcs:git:status")
    assert rec_id("tool", "a").startswith("rec-") and len(rec_id("tool", "a")) == 16


def test_roi_without_savings_and_config_overrides(tmp_path: Path) -> None:
    cfg = load_config()
    assert roi_figures(0.0, 400.0, cfg) == (None, -100.0, "low")
    path = tmp_path / "d.toml"
    path.write_text("[thresholds]\nmin_monthly_usd = 0.1\n[build_hours]\ntool = 8\n")
    mine = load_config(path)
    assert mine.min_monthly_usd == 0.1 and mine.build_cost("tool") == 800.0 and mine.build_cost("macro") == 300.0
    path.write_text("[thresholds]\nno_such = 1\n")
    with pytest.raises(ValueError, match="no_such"):
        load_config(path)


def test_sequences_as_the_miner_tokenises_them() -> None:
    calls = [("a", "vcs:git:status", "ok"), ("p", "plan:todowrite:*", "ok"), ("b", "vcs:git:status", "ok"),
             ("c", "vcs:git:commit", "ok"), ("d", "vcs:git:log", "error"), ("e", "vcs:git:commit", "ok"),
             ("f", "vcs:git:log", "ok")]
    toks = sequence_tokens(calls)
    assert toks == [("vcs:git:status", "a"), ("vcs:git:commit", "c"), ("vcs:git:log!", "d"),
                    ("vcs:git:commit", "e"), ("vcs:git:log", "f")]
    assert find_sequence(toks, ("vcs:git:commit", "vcs:git:log")) == [["e", "f"]]
    assert find_sequence(toks, ("vcs:git:status", "vcs:git:commit")) == [["a", "c"]]


def test_a_rule_under_delivers_on_savings_or_fidelity() -> None:
    cfg = DiscoveryConfig()
    assert underdelivers(10.0, 2.0, 0.99, cfg) is not None
    assert underdelivers(10.0, 6.0, 0.5, cfg) is not None
    assert underdelivers(10.0, 6.0, 0.95, cfg) is None


def _row(key: str, monthly: float) -> dict:
    cfg = load_config()
    r = assess(_cand("tool", key, [monthly / 12] * 12), *window(END, cfg), cfg)
    return {**r.as_dict(), "as_of": END, "basis": "estimate", "price_version": "v", "config": cfg.as_dict()}


def test_drafts_have_every_section_and_are_rewritten_in_place(tmp_path: Path) -> None:
    recs = [_row("vcs:git:status", 6.0), _row("test:pytest:tests", 9.0)]
    text = render(recs[0])
    for section in SECTIONS:
        assert section in text
    assert recs[0]["id"] in text and "- [ ] criterion" in text and "95% interval" in text
    first = write_drafts(recs, tmp_path)
    assert len(first.created) == 2
    again = write_drafts(recs, tmp_path)
    assert (len(again.created), len(again.updated), len(again.unchanged)) == (0, 0, 2)
    changed = write_drafts([_row("vcs:git:status", 12.0)], tmp_path)
    assert [p.name for p in changed.updated] == [f"{recs[0]['id']}.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{r['id']}.md" for r in recs)
    assert "$12.00" in (tmp_path / f"{recs[0]['id']}.md").read_text()




def test_filing_through_a_fake_gh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH.format(python=sys.executable))
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "gh.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GH_LOG", str(log))
    monkeypatch.setenv("FAKE_GH_STATE", str(tmp_path / "issues.json"))
    recs = [_row("vcs:git:status", 6.0), _row("test:pytest:tests", 9.0)]
    drafts = tmp_path / "drafts"
    write_drafts(recs, drafts)

    dry = file_issues(recs, drafts, repo="o/r")
    assert not log.exists()  # the dry run calls nothing
    assert [f.action for f in dry] == ["would-create"] * 2 and dry[0].command[:3] == ["gh", "issue", "create"]

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    first = file_issues(recs, drafts, repo="o/r", dry_run=False)
    assert [f.action for f in first] == ["create", "create"]
    assert [c[:2] for c in calls()].count(["issue", "create"]) == 2
    assert first[0].url == "https://github.com/o/r/issues/1"

    log.unlink()
    recs.append(_row("build:cargo:*", 7.0))
    write_drafts(recs, drafts)
    second = file_issues(recs, drafts, repo="o/r", dry_run=False)  # matched by the id in the issue body
    assert [f.action for f in second] == ["update", "update", "create"]
    creates = [c for c in calls() if c[:2] == ["issue", "create"]]
    assert len(creates) == 1 and "build:cargo:*" in creates[0][creates[0].index("--title") + 1]

    log.unlink()
    recorded = {recs[0]["id"]: "1"}  # recorded as filed: edited at once, no search, no create
    third = file_issues(recs[:1], drafts, repo="o/r", dry_run=False, filed=recorded)
    assert [f.action for f in third] == ["update"] and [c[:3] for c in calls()] == [["issue", "edit", "1"]]
    assert json.loads((tmp_path / "issues.json").read_text())[-1]["number"] == 3  # never filed twice


def test_a_sequence_saves_the_turns_of_its_later_steps() -> None:
    cost = {"m1": (500, 0.2), "m2": (100, 0.5), "m3": (50, None)}
    assert turns_saved(["m1", "m2"], cost) == (100, 0.5)
    assert turns_saved(["m1", "m1", "m2"], cost) == (100, 0.5)  # steps issued together save no turn
    assert turns_saved(["m1", "m1"], cost) == (0, 0.0)
    assert turns_saved(["m1", "m2", "m3"], cost) == (150, None)  # an unpriced model: tokens only
    assert turns_saved(["m1", None], cost) == (None, None)
    assert turns_saved(["m1", "m9"], cost) == (None, None)  # a response without usage


def test_the_timed_run_is_due_an_interval_after_the_last_one(tmp_path: Path) -> None:
    from outloop.worker import discovery_due

    stamp = tmp_path / ".last-discovery"
    assert discovery_due(stamp, 1_000_000.0, 604_800.0)  # never ran: due at the first tick
    stamp.write_text("1000000\n")
    assert not discovery_due(stamp, 1_000_000.0 + 3_600, 604_800.0)  # a restarted worker waits for the interval
    assert discovery_due(stamp, 1_000_000.0 + 604_800, 604_800.0)
    assert discovery_due(stamp, 999_000.0, 604_800.0)  # a stamp from the future (clock changed): due
    stamp.write_text("garbage")
    assert discovery_due(stamp, 1_000_000.0, 604_800.0)


def test_a_draft_is_the_same_from_the_file_or_from_the_workers_json() -> None:
    import orjson

    row = _row("vcs:git:status", 6.0)
    assert render(orjson.loads(orjson.dumps(row))) == render(row)
