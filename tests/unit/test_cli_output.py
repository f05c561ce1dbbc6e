"""What the ``outloop`` command prints, run as users run it (the installed command, output piped):
human messages, CSV line ends, tables that keep every value, one error form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from outloop.hooks_install import HOOK_EVENTS
from outloop.projections import open_sink
from outloop.streams.broker import free_port
from tests.unit import sinkdata as d

OUTLOOP = str(Path(sys.executable).with_name("outloop"))


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OUTLOOP, *args], env=env_for(home), capture_output=True, text=True, timeout=60)


def env_for(home: Path) -> dict[str, str]:
    """No worker answers on the HTTP port: the CLI reads the file."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("OUTLOOP_") and k != "COLUMNS"}
    full.update(OUTLOOP_HOME=str(home), OUTLOOP_HTTP_PORT=str(free_port("127.0.0.1")))
    return full


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "t.duckdb"
    long_command = "pytest " + " ".join(f"tests/unit/test_module_number_{i}.py" for i in range(12))
    with open_sink(path, clock=d.clock) as sink:
        sink.write_batch(d.with_offsets([
            d.tool_msg(d.tool_view("toolu_1", command=long_command, tool_input={"command": long_command})),
            d.tool_msg(d.tool_view("toolu_2", command="ls", tool_input={"command": "ls"})),
        ]))
    return path


def test_hooks_install_and_uninstall_print_what_they_did(tmp_path: Path) -> None:
    settings = tmp_path / "claude" / "settings.json"
    n = len(HOOK_EVENTS)
    steps = [("install", f"installed the outloop hook in {settings} for {n} hook events (the file is new)"),
             ("install", f"the outloop hook is already installed in {settings} for every hook event; nothing changed"),
             ("uninstall", f"removed the outloop hook from {n} hook events in {settings} (previous file kept as "),
             ("uninstall", f"no outloop hook in {settings}; nothing changed")]
    for action, said in steps:
        proc = run("hooks", action, "--settings", str(settings), home=tmp_path / "home")
        assert proc.returncode == 0 and proc.stdout == ""
        assert proc.stderr.startswith(said), proc.stderr
        assert "InstallResult" not in proc.stderr and "PosixPath" not in proc.stderr
        assert proc.stderr.count("\n") == 1  # one line, whatever the path's length


def test_csv_lines_end_with_lf(db: Path, tmp_path: Path) -> None:
    proc = subprocess.run([OUTLOOP, "query", "--db", str(db), "--format", "csv",
                           "SELECT id, command FROM tool_calls ORDER BY id"],
                          env=env_for(tmp_path), capture_output=True, timeout=60)  # bytes: no newline translation
    assert proc.returncode == 0, proc.stderr
    raw = proc.stdout
    assert b"\r" not in raw and raw.count(b"\n") == 3 and raw.startswith(b"id,command\ntoolu_1,pytest ")


def test_tables_keep_every_column_and_value_when_piped(db: Path, tmp_path: Path) -> None:
    sql = ("SELECT id, session_id, tool_name, status, source, input_bytes, output_bytes, command, "
           "'right-most column' AS last_one FROM tool_calls ORDER BY id")
    proc = run("query", "--db", str(db), sql, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if "last_one" in line)
    assert all(c in header for c in ("id", "session_id", "tool_name", "status", "source", "command"))
    long_command = "pytest " + " ".join(f"tests/unit/test_module_number_{i}.py" for i in range(12))
    assert any(long_command in line and "right-most column" in line for line in lines)
    assert "…" not in proc.stdout


@pytest.mark.parametrize(("sql", "said"), [
    ("SELECT * FROM no_such_table", "error: Catalog Error: Table with name no_such_table does not exist"),
    ("DELETE FROM tool_calls", "error: "),
    ("SELEC 1", "error: does not parse: Parser Error: syntax error"),
])
def test_query_errors_have_one_form(db: Path, tmp_path: Path, sql: str, said: str) -> None:
    proc = run("query", "--db", str(db), sql, home=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(said), proc.stderr
    first = proc.stderr.split(":", 2)[1]
    assert not first.strip().endswith(("Error", "Rejected", "Exception")) or first.strip().count(" ") > 0
    for name in ("SinkQueryError", "QueryRejected", "CatalogException", "ParserException", "Traceback"):
        assert name not in proc.stderr


def test_usage_errors_have_the_same_form(tmp_path: Path) -> None:
    proc = run("replay", "--bogus", home=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "error: No such option: --bogus (see 'outloop replay --help')\n"
    proc = run("query", "--format", "xml", "SELECT 1", home=tmp_path)
    assert proc.returncode == 2 and proc.stderr == "error: --format must be table, csv or json\n"


def test_json_output_is_unchanged(db: Path, tmp_path: Path) -> None:
    proc = run("query", "--db", str(db), "--format", "json", "SELECT id FROM tool_calls ORDER BY id", home=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout) == [{"id": "toolu_1"}, {"id": "toolu_2"}]


def test_setting_and_worker_errors_have_the_same_form(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    env["OUTLOOP_PARTITIONS"] = "many"
    proc = subprocess.run([OUTLOOP, "query", "SELECT 1"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: bad OUTLOOP_* setting: "), proc.stderr
    proc = run("worker", home=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == "error: outloop worker needs OUTLOOP_BROKER (use 'outloop up' to start an embedded broker)\n"
