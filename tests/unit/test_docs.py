"""The README stays true to the code: every OUTLOOP_* variable the shipped code (or the compose file)
reads is in the settings table with the default the code uses, no row names a variable nothing reads,
and the table of DuckDB views is the one generated from the schema."""

from __future__ import annotations

import re
from pathlib import Path

from outloop.agents.quota_risk import _KEYS as QUOTA_KEYS
from outloop.doctables import BEGIN, END, README, main, views_table
from outloop.streams.settings import SETTINGS_DOC

ROOT = Path(__file__).resolve().parents[2]
CODE = ("schemas", "streams", "agents", "sinks", "outloop")
NAME = re.compile(r"\bOUTLOOP_[A-Z0-9_]*[A-Z0-9]\b")
ROW = re.compile(r"^\| `(OUTLOOP_[A-Z0-9_]+)` \|([^|]*)\|", re.M)


def used_variables() -> set[str]:
    """Every OUTLOOP_* name in the shipped code, the compose file and the Dockerfile; the quota limits
    are read by a loop over their keys (``OUTLOOP_QUOTA_<KEY>``), so their names come from the keys."""
    files = [p for d in CODE for p in (ROOT / d).rglob("*.py")]
    files += [ROOT / "docker-compose.yml", ROOT / "Dockerfile"]
    names = {m for f in files if f.exists() for m in NAME.findall(f.read_text(encoding="utf-8"))}
    return names | {f"OUTLOOP_QUOTA_{k.upper()}" for k in QUOTA_KEYS}


def documented() -> dict[str, str]:
    """variable -> its default cell, from the README's settings table."""
    return {name: default.strip() for name, default in ROW.findall(README.read_text(encoding="utf-8"))}


def test_every_variable_the_code_reads_is_in_the_settings_table() -> None:
    missing = used_variables() - set(documented())
    assert not missing, f"add these to the README's settings table (with their defaults): {sorted(missing)}"


def test_the_settings_table_names_no_variable_nothing_reads() -> None:
    stale = set(documented()) - used_variables()
    assert not stale, f"the README documents variables no code reads: {sorted(stale)}"


def test_defaults_in_the_table_are_the_ones_the_settings_use() -> None:
    table = documented()
    for name, (default, _) in SETTINGS_DOC.items():
        shown = table[name].strip("`")
        if default == "":
            assert shown in ("(unset)", ""), f"{name}: the README shows {shown!r}, the code has no default"
        else:
            assert shown == default, f"{name}: the README shows {shown!r}, the code uses {default!r}"


def test_views_table_matches_the_schema() -> None:
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    assert views_table() in text, "the README's views table drifted from the schema: python -m outloop.doctables"
    assert main(["--check"]) == 0


def test_views_table_check_fails_on_drift(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text(encoding="utf-8").replace("| `v_daily_usage` |", "| `v_daily_usage_old` |"),
                      encoding="utf-8")
    assert main(["--check", "--readme", str(readme)]) == 1
    assert main(["--readme", str(readme)]) == 0 and main(["--check", "--readme", str(readme)]) == 0
