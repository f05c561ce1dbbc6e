"""The price table: model matching, cost arithmetic, JSON overrides."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outloop.agents.pricing import (
    PRICE_TABLE_VERSION,
    PRICES_ENV,
    PriceTable,
    active_table,
    cost_usd,
    load_prices,
    model_key,
)
from outloop.schemas.events import UsageRecord
from outloop.streams.settings import SETTINGS_DOC

M = 1_000_000


def usage(model: str | None, **tokens: int | None) -> UsageRecord:
    return UsageRecord(id="m:r", session_id="s", model=model, timestamp=datetime(2025, 1, 1, tzinfo=UTC),
                       input_tokens=tokens.pop("input_tokens", 0) or 0,
                       output_tokens=tokens.pop("output_tokens", 0) or 0, **tokens)


@pytest.mark.parametrize(("model", "key"), [
    ("claude-opus-4-5-20251101", "opus-4.5"),
    ("claude-opus-4-1-20250805", "opus-4.1"),
    ("claude-opus-4-20250514", "opus-4.0"),
    ("claude-sonnet-4-5-20250929", "sonnet-4.5"),
    ("claude-sonnet-4-5[1m]", "sonnet-4.5"),
    ("claude-haiku-4-5-20251001", "haiku-4.5"),
    ("claude-3-7-sonnet-20250219", "sonnet-3.7"),
    ("claude-3-5-haiku-20241022", "haiku-3.5"),
    ("claude-3-haiku-20240307", "haiku-3.0"),
    ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "sonnet-3.5"),
    ("claude-opus-4@20250514", "opus-4.0"),
    ("<synthetic>", None),
    ("gpt-4o", None),
])
def test_model_ids_resolve_to_family_and_version(model: str, key: str | None) -> None:
    assert model_key(model) == (None if model.startswith("<") else key)
    found = PriceTable.default().lookup(model)
    assert (found[0] if found else None) == key


@pytest.mark.parametrize(("model", "inp", "out", "w5", "w1", "read"), [
    ("claude-opus-4-5-20251101", 5, 25, 6.25, 10, 0.5),
    ("claude-opus-4-1-20250805", 15, 75, 18.75, 30, 1.5),
    ("claude-sonnet-4-5-20250929", 3, 15, 3.75, 6, 0.3),
    ("claude-haiku-4-5-20251001", 1, 5, 1.25, 2, 0.1),
    ("claude-3-5-haiku-20241022", 0.8, 4, 1, 1.6, 0.08),
    ("claude-3-haiku-20240307", 0.25, 1.25, 0.3, 0.5, 0.03),
])
def test_each_token_kind_has_its_own_rate(model: str, inp: float, out: float, w5: float, w1: float,
                                          read: float) -> None:
    table, n = PriceTable.default(), 100_000  # below the long-context threshold
    assert table.cost_usd(usage(model, input_tokens=n)) == pytest.approx(inp * n / M)
    assert table.cost_usd(usage(model, output_tokens=n)) == pytest.approx(out * n / M)
    assert table.cost_usd(usage(model, cache_read_input_tokens=n)) == pytest.approx(read * n / M)
    assert table.cost_usd(usage(model, cache_creation_input_tokens=n)) == pytest.approx(w5 * n / M)
    assert table.cost_usd(usage(model, cache_creation_input_tokens=n, cache_creation_5m_tokens=0,
                                cache_creation_1h_tokens=n)) == pytest.approx(w1 * n / M)


def test_a_realistic_claude_code_response() -> None:
    u = usage("claude-opus-4-5-20251101", input_tokens=3, output_tokens=412, cache_read_input_tokens=48_211,
              cache_creation_input_tokens=2_040, cache_creation_5m_tokens=0, cache_creation_1h_tokens=2_040)
    expected = (3 * 5 + 412 * 25 + 48_211 * 0.5 + 2_040 * 10) / M
    assert cost_usd(u, PriceTable.default()) == pytest.approx(expected)


def test_unsplit_cache_writes_are_priced_as_5_minute_writes() -> None:
    u = usage("claude-sonnet-4-5", cache_creation_input_tokens=1000, cache_creation_1h_tokens=400)
    assert PriceTable.default().cost_usd(u) == pytest.approx((600 * 3.75 + 400 * 6) / M)


def test_sonnet_long_context_rates_above_200k_prompt_tokens() -> None:
    table = PriceTable.default()

    def sonnet(read: int) -> UsageRecord:
        return usage("claude-sonnet-4-5", input_tokens=100_000, cache_read_input_tokens=read,
                     output_tokens=1000)

    short, long = sonnet(100_000), sonnet(100_001)
    assert table.cost_usd(short) == pytest.approx((100_000 * 3 + 100_000 * 0.3 + 1000 * 15) / M)
    assert table.cost_usd(long) == pytest.approx((100_000 * 6 + 100_001 * 0.6 + 1000 * 22.5) / M)
    opus = usage("claude-opus-4-5", input_tokens=300_000)  # no long-context premium listed for opus
    assert table.cost_usd(opus) == pytest.approx(1.5)


def test_unknown_models_have_no_price_and_new_versions_fall_back_within_their_family() -> None:
    table = PriceTable.default()
    assert table.cost_usd(usage("<synthetic>", input_tokens=10)) is None
    assert table.cost_usd(usage(None, input_tokens=10)) is None
    assert table.cost_usd(usage("mistral-large", input_tokens=10)) is None
    assert table.lookup("claude-opus-4-6")[0] == "opus-4.5"  # type: ignore[index]
    assert table.lookup("claude-sonnet-5-0")[0] == "sonnet-4.5"  # type: ignore[index]
    assert cost_usd({"model": "claude-haiku-4-5", "input_tokens": M}, table) == pytest.approx(1.0)


def test_json_file_overrides_and_replaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"version": "team-2026-02", "models": {
        "claude-opus-4-5": {"input": 4, "output": 20},
        "opus-9.0": {"input": 1, "output": 2, "cache_write_5m": 3, "cache_write_1h": 4, "cache_read": 5},
        "local-llm": {"input": 0, "output": 0}}}))
    table = load_prices(path)
    assert table.version == "team-2026-02"
    both = usage("claude-opus-4-5", input_tokens=M, cache_read_input_tokens=M)
    assert table.cost_usd(both) == pytest.approx(4.4)
    assert table.cost_usd(usage("claude-opus-9", cache_read_input_tokens=M)) == pytest.approx(5)
    assert table.cost_usd(usage("local-llm-7b", input_tokens=M)) == 0
    assert table.cost_usd(usage("claude-haiku-4-5", input_tokens=M)) == pytest.approx(1)  # built-in kept
    path.write_text(json.dumps({"replace": True, "models": {"haiku-4.5": {"input": 2, "output": 3}}}))
    replaced = load_prices(path)
    assert replaced.version == f"{PRICE_TABLE_VERSION}+prices.json"
    assert replaced.cost_usd(usage("claude-opus-4-5", input_tokens=M)) is None
    assert PRICES_ENV in SETTINGS_DOC
    monkeypatch.setenv(PRICES_ENV, str(path))
    assert active_table().cost_usd(usage("claude-haiku-4-5", input_tokens=M)) == pytest.approx(2)
    monkeypatch.delenv(PRICES_ENV)
    assert active_table().version == PRICE_TABLE_VERSION


def test_bad_price_files_are_refused(tmp_path: Path) -> None:
    for text in ("{not json", json.dumps({"models": {"opus-4.5": {"input": 1}}}), "[]"):
        path = tmp_path / "bad.json"
        path.write_text(text)
        with pytest.raises(ValueError, match="bad price file"):
            load_prices(path)
    with pytest.raises(ValueError):
        load_prices(tmp_path / "missing.json")
