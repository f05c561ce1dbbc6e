"""Versioned, model-aware price table: USD per million tokens for input, output, cache writes
(5-minute and 1-hour lifetimes priced apart) and cache reads.

Sources: Anthropic's public pricing (anthropic.com/pricing and the "Pricing" page of the Claude
developer docs, including its prompt-caching multipliers: a 5-minute cache write costs 1.25x the
input price, a 1-hour write 2x, a cache read 0.1x), as known on 2025-11-30. Sonnet 4 and 4.5 bill a
request whose prompt (input + cache reads + cache writes) exceeds 200k tokens at the long-context
rates ($6 input / $22.50 output). Prices change: check the page, and override with a JSON file
(``OUTLOOP_PRICES``, see :func:`load_prices`) rather than editing this table.

Model ids are matched by family and version, whatever the spelling: ``claude-opus-4-5-20251101``,
``claude-3-5-haiku-20241022``, ``claude-sonnet-4-5[1m]``, Bedrock ``us.anthropic.claude-...-v1:0``
and Vertex ``claude-opus-4@20250514`` all resolve. A version the table does not list takes the price
of the nearest listed version below it in the same family (newer models of a family have not cost
more than their predecessor so far), else the lowest listed one. ``<synthetic>`` (Claude Code's local
messages) and unknown families cost ``None``, never 0.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

PRICE_TABLE_VERSION = "2025-11-30"
LONG_CONTEXT_THRESHOLD = 200_000
_RATES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


@dataclass(frozen=True)
class Rates:
    """USD per million tokens."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float

    @classmethod
    def standard(cls, input: float, output: float) -> Rates:
        """Rates with Anthropic's prompt-caching multipliers."""
        return cls(input, output, input * 1.25, input * 2.0, input * 0.1)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Rates:
        if set(obj) >= {"input", "output"} and not set(obj) & set(_RATES[2:]):
            return cls.standard(float(obj["input"]), float(obj["output"]))
        missing = [r for r in _RATES if r not in obj]
        if missing:
            raise ValueError(f"price entry lacks {missing}")
        return cls(*(float(obj[r]) for r in _RATES))


@dataclass(frozen=True)
class ModelPrice:
    rates: Rates
    long_context: Rates | None = None  # applies above ``threshold`` prompt tokens
    threshold: int = LONG_CONTEXT_THRESHOLD


_ID_PARTS = re.compile(r"claude-(?:(?P<fam>opus|sonnet|haiku)-(?P<maj>\d+)(?:-(?P<min>\d{1,2}))?"
                       r"|(?P<maj3>\d+)(?:[-.](?P<min3>\d{1,2}))?-(?P<fam3>opus|sonnet|haiku))(?![0-9])")


def model_key(model: str) -> str | None:
    """``family-major.minor`` of a Claude model id (``opus-4.5``), else None."""
    m = _ID_PARTS.search(model.lower())
    if m is None:
        return None
    if m["fam"]:
        return f"{m['fam']}-{int(m['maj'])}.{int(m['min'] or 0)}"
    return f"{m['fam3']}-{int(m['maj3'])}.{int(m['min3'] or 0)}"


_TABLE_KEY = re.compile(r"(opus|sonnet|haiku)-\d+\.\d+")


def _version(key: str) -> tuple[int, int]:
    major, minor = key.split("-", 1)[1].split(".")
    return int(major), int(minor)


_OPUS_OLD, _SONNET, _LONG = Rates.standard(15, 75), Rates.standard(3, 15), Rates.standard(6, 22.5)
BUILTIN: dict[str, ModelPrice] = {
    "opus-4.5": ModelPrice(Rates.standard(5, 25)),
    "opus-4.1": ModelPrice(_OPUS_OLD),
    "opus-4.0": ModelPrice(_OPUS_OLD),
    "opus-3.0": ModelPrice(_OPUS_OLD),
    "sonnet-4.5": ModelPrice(_SONNET, long_context=_LONG),
    "sonnet-4.0": ModelPrice(_SONNET, long_context=_LONG),
    "sonnet-3.7": ModelPrice(_SONNET),
    "sonnet-3.5": ModelPrice(_SONNET),
    "sonnet-3.0": ModelPrice(_SONNET),
    "haiku-4.5": ModelPrice(Rates.standard(1, 5)),
    "haiku-3.5": ModelPrice(Rates.standard(0.8, 4)),
    "haiku-3.0": ModelPrice(Rates(0.25, 1.25, 0.30, 0.50, 0.03)),
}


def _attr(usage: Any, name: str) -> Any:
    return getattr(usage, name, None)


@dataclass(frozen=True)
class PriceTable:
    version: str = PRICE_TABLE_VERSION
    models: Mapping[str, ModelPrice] = field(default_factory=lambda: dict(BUILTIN))
    exact: Mapping[str, ModelPrice] = field(default_factory=dict)  # other model ids, by prefix
    _found: dict[str, tuple[str, ModelPrice] | None] = field(default_factory=dict, init=False, repr=False,
                                                            compare=False)  # lookups by model id (a few ids)

    @classmethod
    def default(cls) -> PriceTable:
        return cls()

    def lookup(self, model: str | None) -> tuple[str, ModelPrice] | None:
        """(the table key used, its price) for a model id, or None when it has no price."""
        if not model or model.startswith("<"):
            return None
        if model in self._found:
            return self._found[model]
        found = self._lookup(model)
        if len(self._found) < 4096:  # model ids are few; a flood of odd ones is not kept
            self._found[model] = found
        return found

    def _lookup(self, model: str) -> tuple[str, ModelPrice] | None:
        lowered = model.lower()
        prefixes = [p for p in self.exact if lowered.startswith(p)]
        if prefixes:
            best = max(prefixes, key=len)
            return best, self.exact[best]
        key = model_key(model)
        if key is None:
            return None
        if key in self.models:
            return key, self.models[key]
        family, wanted = key.split("-", 1)[0], _version(key)
        same = sorted((_version(k), k) for k in self.models if k.startswith(family + "-"))
        if not same:
            return None
        below = [k for v, k in same if v <= wanted]
        chosen = below[-1] if below else same[0][1]
        return chosen, self.models[chosen]

    def cost_usd(self, usage: Any) -> float | None:
        """Cost of one API response (a UsageRecord, or a mapping of its fields)."""
        get: Callable[[str], Any] = usage.get if isinstance(usage, Mapping) else functools.partial(_attr, usage)
        found = self.lookup(get("model"))
        if found is None:
            return None
        price = found[1]
        inp = int(get("input_tokens") or 0)
        out = int(get("output_tokens") or 0)
        read = int(get("cache_read_input_tokens") or 0)
        written = int(get("cache_creation_input_tokens") or 0)
        w5, w1 = get("cache_creation_5m_tokens"), get("cache_creation_1h_tokens")
        if w5 is None and w1 is None:
            w5, w1 = written, 0
        else:
            w5, w1 = int(w5 or 0), int(w1 or 0)
            w5 += max(0, written - w5 - w1)  # an unsplit remainder is priced as a 5-minute write
        rates = price.rates
        if price.long_context is not None and inp + read + w5 + w1 > price.threshold:
            rates = price.long_context
        total = (inp * rates.input + out * rates.output + read * rates.cache_read
                 + w5 * rates.cache_write_5m + w1 * rates.cache_write_1h)
        return round(total / 1_000_000, 10)


def _price_from_json(obj: Mapping[str, Any]) -> ModelPrice:
    long = obj.get("long_context")
    return ModelPrice(Rates.from_json(obj), Rates.from_json(long) if long else None,
                      int(obj.get("threshold", LONG_CONTEXT_THRESHOLD)))


def load_prices(path: str | Path, base: PriceTable | None = None) -> PriceTable:
    """A table overridden by a JSON file::

        {"version": "my-2026-01", "replace": false,
         "models": {"opus-4.5": {"input": 5, "output": 25},
                    "claude-sonnet-4-5": {"input": 3, "output": 15, "cache_write_5m": 3.75,
                                          "cache_write_1h": 6, "cache_read": 0.3,
                                          "long_context": {"input": 6, "output": 22.5}},
                    "my-local-model": {"input": 0, "output": 0}}}

    Keys are Claude model ids or ``family-major.minor``; other keys match model ids by prefix. An
    entry with only input/output gets the standard caching multipliers. ``replace`` drops the
    built-in entries instead of updating them."""
    base = base or PriceTable.default()
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        models, exact = ({}, {}) if doc.get("replace") else (dict(base.models), dict(base.exact))
        for name, entry in doc.get("models", {}).items():
            key = name if _TABLE_KEY.fullmatch(name) else model_key(name)
            if key is None:
                exact[name.lower()] = _price_from_json(entry)
            else:
                models[key] = _price_from_json(entry)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"bad price file {path}: {exc}") from exc
    return replace(base, version=str(doc.get("version") or f"{base.version}+{Path(path).name}"),
                   models=models, exact=exact)


PRICES_ENV = "OUTLOOP_PRICES"  # listed with the other settings in streams.settings.SETTINGS_DOC


@functools.lru_cache(maxsize=4)
def _table_for(path: str | None) -> PriceTable:
    return load_prices(path) if path else PriceTable.default()


def active_table() -> PriceTable:
    """The built-in table, overridden by the file named in ``OUTLOOP_PRICES`` when set (loaded once
    per path)."""
    return _table_for(os.path.expanduser(os.environ.get(PRICES_ENV, "")) or None)


def cost_usd(usage: Any, table: PriceTable | None = None) -> float | None:
    """USD cost of a UsageRecord (or a mapping of its fields); None for unknown models."""
    return (table or active_table()).cost_usd(usage)
