"""The CLI on the files a new user points it at: a database of an older schema, a file that is not an
outloop database, a report folder that is a file. Real DuckDB files; the installed command where the
message is the CLI's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from outloop.client import QueryError, query_file
from outloop.contextreport import SESSIONS_SQL
from outloop.sinks.schema import SCHEMA_VERSION, migrate

OUTLOOP = str(Path(sys.executable).with_name("outloop"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUTLOOP_HTTP_PORT": "1", "COLUMNS": "300"}  # no worker answers: the file is read
    return subprocess.run([OUTLOOP, *args], capture_output=True, text=True, timeout=120, env=env)


def make_db(path: Path, upto: int | None = None) -> Path:
    con = duckdb.connect(str(path))
    migrate(con, upto=upto)
    con.close()
    return path


def test_a_database_of_an_older_schema_is_named_as_such(tmp_path: Path) -> None:
    """A file an older outloop wrote lacks the newer tables and columns: the error says so and how to
    migrate it, not DuckDB's "Table with name context_efficiency does not exist! Did you mean ...?"."""
    old = make_db(tmp_path / "old.duckdb", upto=10)  # before run times and the context tables
    for sql in (SESSIONS_SQL, "SELECT * FROM v_recommendations", "SELECT run_ms FROM tool_calls"):
        with pytest.raises(QueryError, match=f"has schema v10, older than this outloop's v{SCHEMA_VERSION}"):
            query_file(old, sql, [20] if "?" in sql else None)
    proc = run("context", "--db", str(old))
    assert proc.returncode == 1, proc.stdout
    assert "has schema v10, older" in proc.stderr and "outloop up" in proc.stderr, proc.stderr
    assert "Did you mean" not in proc.stderr
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    with pytest.raises(QueryError, match="is not an outloop database"):
        query_file(other, "SELECT * FROM operation_patterns")


def test_a_current_database_keeps_duckdbs_reason(tmp_path: Path) -> None:
    """On a file of this outloop's schema a query of a table that does not exist keeps DuckDB's own reason."""
    path = make_db(tmp_path / "new.duckdb")
    assert query_file(path, "SELECT count(*) FROM context_efficiency") == (["count_star()"], [[0]])
    with pytest.raises(QueryError, match="Table with name no_such_table does not exist"):
        query_file(path, "SELECT * FROM no_such_table")


def test_report_into_a_file_says_it_is_not_a_folder(tmp_path: Path) -> None:
    path = make_db(tmp_path / "new.duckdb")
    target = tmp_path / "report.html"
    target.write_text("mine")
    proc = run("report", "--db", str(path), "--out", str(target))
    assert proc.returncode == 1
    assert "is a file, not a folder" in proc.stderr and "Errno" not in proc.stderr, proc.stderr
    assert target.read_text() == "mine"


def test_routes_reads_the_decisions_of_the_database_it_is_given(tmp_path: Path) -> None:
    """After `outloop replay PATH --db FILE --route-mode shadow`, `outloop routes --db FILE` shows that
    replay's decisions (it had no --db: it read OUTLOOP_DB only, and showed 0 decisions)."""
    path = make_db(tmp_path / "replayed.duckdb")
    con = duckdb.connect(str(path))
    for n, fidelity in ((1, 1.0), (2, 0.5), (3, None)):
        con.execute("INSERT INTO routing_decisions (decision_id, session_id, rule, mode, action, answered, fidelity) "
                    "VALUES (?, 's', 'pytest', 'shadow', 'rewrite', false, ?)", [f"rd:{n}", fidelity])
    con.close()
    env = {**os.environ, "OUTLOOP_HTTP_PORT": "1", "OUTLOOP_HOME": str(tmp_path / "home")}
    env.pop("OUTLOOP_DB", None)
    env.pop("OUTLOOP_ROUTES", None)
    proc = subprocess.run([OUTLOOP, "routes", "list", "--db", str(path), "--json"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    rules = {r["name"]: r for r in json.loads(proc.stdout)["rules"]}
    assert (rules["pytest"]["decisions"], rules["pytest"]["rewrites"]) == (3, 3)
    assert (rules["pytest"]["fidelity"], rules["pytest"]["fidelity_decisions"]) == (0.75, 2)


def test_wait_says_which_argument_is_wrong() -> None:
    """`outloop wait` printed its usage and nothing else for --every 0, a negative --timeout or a bad regex."""
    for args, reason in ((["--every", "0"], "--every must be above 0"), (["--timeout", "-5"], "--timeout at least 0"),
                         (["--until", "["], "--until '[' is not a regular expression")):
        proc = run("wait", *args, "--", "true")
        assert proc.returncode == 2 and reason in proc.stderr, (args, proc.stderr)


def test_recommendations_table_says_which_figures_are_estimates(tmp_path: Path) -> None:
    path = make_db(tmp_path / "new.duckdb")
    proc = run("recommendations", "list", "--db", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "per 30d: measured occurrences" in proc.stdout and "ROI: estimates" in proc.stdout, proc.stdout


def test_context_detail_and_profiles_say_which_figures_are_estimates() -> None:
    """`outloop context SESSION` and `outloop context profiles` printed token figures without saying they are
    estimates (the list of sessions did)."""
    from rich.console import Console

    from outloop.contextreport import print_profiles, print_session

    console = Console(record=True, width=300)
    print_session(console, {"session_id": "s1", "loaded_tokens": 10, "total_tokens": 90, "overhead": None,
                            "file_reads": [], "cache_breaks": [], "unused_outputs": []})
    print_profiles(console, [])
    text = " ".join(console.export_text().split())  # captions wrap to the width of their table
    assert "(loaded, used, carry, waste, re-read, oversized) are estimated from output sizes" in text
    assert "cache-break tokens come from the usage records (measured)" in text
    assert "context profiles (tokens estimated from output sizes;" in text
