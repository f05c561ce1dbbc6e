"""The README's DuckDB table list names every table and view the sink creates."""

from __future__ import annotations

import re
from pathlib import Path

from outloop.projections import open_sink

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_every_table_and_view(tmp_path: Path) -> None:
    with open_sink(tmp_path / "t.duckdb") as sink:
        _, rows = sink.query("SELECT table_name, table_type FROM information_schema.tables "
                             "WHERE table_schema = 'main' ORDER BY table_name")
    tables = {name for name, kind in rows if kind == "BASE TABLE"}
    views = {name for name, kind in rows if kind == "VIEW"}
    assert "pattern_state" in tables and "v_session_summary" in views
    text = README.read_text(encoding="utf-8")
    section = text.split("## DuckDB tables", 1)[1].split("\n## ", 1)[0]
    body = section.strip().split("\n\n", 1)  # the table is one block: a blank line ends it
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", body[0], re.M))
    assert listed == tables, f"missing: {sorted(tables - listed)}; not tables: {sorted(listed - tables)}"
    for view in views:
        assert f"`{view}`" in section, view
