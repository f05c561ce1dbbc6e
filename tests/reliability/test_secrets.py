"""Scenario 10, secrets: tokens, keys and passwords in tool inputs and outputs never reach the
output topics, DuckDB or ``outloop query``; the HTTP endpoint listens on loopback and refuses writes.

One broker + worker (``outloop.runtime.Stack``) for the module; the last test stops the worker to
read the database file itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psutil
import pytest

from outloop.replay import publish_markers, wait_for_marker
from outloop.runtime import Stack
from outloop.schemas.events import ToolCall, ToolResultRecord, ToolUseRecord, UsageRecord
from outloop.schemas.topics import TopicCatalogue
from outloop.streams.publisher import Publisher
from outloop.streams.settings import Settings
from tests import SESSION_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PEM_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
S = {  # realistic shapes, each string unique to this test
    "anthropic": "sk-ant-api03-Qx7vLm9PzR2tKw8YbN4cJh6Ds1Fg5Ae7Ui0Oo3Tr-_ZxCvBnMaSd",
    "openai": "sk-proj-4fJk9QmZx2Lr8Tb6Vn1Wc3Hy5Pd7Gs0KeTq2Wr",
    "github": "ghp_Zx9Qm2Lk7Rt4Vb8Nc1Hd5Jf3Gs6Pw0Ya2Ue4Io",
    "aws_id": "AKIAQ3EGRT7XW2LPMV5N",
    "aws_secret": "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",
    "slack": "xoxb-2048751305-2075437290-Zx9Qm2Lk7Rt4Vb8Nc1Hd5Jf3",
    "google": "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZXYtNzcifQ.qT4nE8vX2mK9pL1rS6wY3zA7bC0dF5gH",
    "bearer": "7f3c9a1e5b2d8f4a6c0e9d8c",
    "basic": "YWxpY2U6d29uZGVybGFuZC00Mg==",
    "pem": PEM_BODY,
    "url_pw": "pg-Pa55w0rd-9xq",
    "password": "Hunter2-horse-battery",
    "env_token": "tok-8c2e4a6f0b1d3e5f",
}
KEEP = ["pytest -q tests/unit", "120 passed in 1.20s", "https://api.example.com/v1/run",
        "/home/dev/proj/deploy/id_ed25519", "select 1", "nightly build", "python run.py", "this is not json"]
SESSION = "sess-secrets"
T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)


def _settings(tmp: Path, broker: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings.from_env({}, home=tmp / "home", broker=broker, db=tmp / "out.duckdb",
                             topic_prefix=f"s{tag}", app_id=f"outloop-{tag}", http_port=0,
                             session_timeout=SESSION_TIMEOUT)


def _hook(event: str, tool: str, tool_input: dict[str, Any], tool_use_id: str | None, **extra: Any) -> dict[str, Any]:
    payload = {"session_id": SESSION, "transcript_path": f"/home/dev/.claude/projects/p/{SESSION}.jsonl",
               "cwd": "/home/dev/proj", "hook_event_name": event, "tool_name": tool, "tool_input": tool_input, **extra}
    if tool_use_id:
        payload["tool_use_id"] = tool_use_id
    return payload


BASH_INPUT = {"command": f"export GITHUB_TOKEN={S['github']} && curl -H 'Authorization: Bearer {S['bearer']}' "
                         "https://api.example.com/v1/run && pytest -q tests/unit", "description": "run"}
STDOUT = (f"DATABASE_URL=postgres://app:{S['url_pw']}@db:5432/prod\nAWS_ACCESS_KEY_ID={S['aws_id']}\n"
          f"AWS_SECRET_ACCESS_KEY={S['aws_secret']}\nSLACK_BOT_TOKEN={S['slack']}\n120 passed in 1.20s\n")
PEM = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}\n-----END OPENSSH PRIVATE KEY-----\n"


def publish_everything(pub: Publisher, cat: TopicCatalogue) -> None:
    hooks = [
        _hook("PreToolUse", "Bash", BASH_INPUT, "toolu_sec_1"),
        _hook("PostToolUse", "Bash", BASH_INPUT, "toolu_sec_1",
              tool_response={"stdout": STDOUT, "stderr": "", "interrupted": False}),
        _hook("PreToolUse", "Write", {"file_path": "/home/dev/proj/deploy/id_ed25519", "content": PEM}, None),
        _hook("PostToolUse", "Write", {"file_path": "/home/dev/proj/deploy/id_ed25519", "content": PEM}, None,
              tool_response={"type": "create", "filePath": "/home/dev/proj/deploy/id_ed25519", "content": PEM}),
        _hook("PreToolUse", "WebFetch", {"url": f"https://maps.googleapis.com/maps/api/geocode?key={S['google']}",
                                         "prompt": "geocode", "headers": {"Authorization": f"Basic {S['basic']}",
                                                                           "password": S["password"]}}, "toolu_sec_2"),
    ]
    for i, payload in enumerate(hooks):
        pub.hook_event(payload, received_at=T0 + timedelta(seconds=i), id=f"hook-sec-{i}")
    pub.tool_use(ToolUseRecord(session_id=SESSION, tool_use_id="toolu_sec_3", tool_name="Bash", call_key="k3",
                               tool_input={"command": f"mysql -u root -p{S['password']} shop -e 'select 1'"},
                               timestamp=T0))
    pub.tool_use(ToolUseRecord(session_id=SESSION, tool_use_id="toolu_sec_4", tool_name="Bash", call_key="k4",
                               tool_input={"command": f"OPENAI_API_KEY={S['openai']} python run.py"}, timestamp=T0))
    pub.tool_result(ToolResultRecord(session_id=SESSION, tool_use_id="toolu_sec_4",
                                     output_text=f"using key {S['openai']}", timestamp=T0 + timedelta(seconds=2)))
    cmd = f"psql postgresql://u:{S['url_pw']}@h/db -c 'select 1' # jwt {S['jwt']}"
    pub.tool_call(ToolCall(id="traj-sec-1", tool_use_id=None, call_key="traj-sec-1", session_id=SESSION,
                           tool_name="bash", tool_input={"command": cmd, "env": {"API_TOKEN": S["env_token"]}},
                           command=cmd, status="ok", started_at=T0, ended_at=T0 + timedelta(seconds=1),
                           input_bytes=len(cmd), output_bytes=10, output_tokens_est=3, source="trajectory"))
    pub.usage(UsageRecord(id="msg_sec:req_sec", session_id=SESSION, model="claude-sonnet-4-5", timestamp=T0,
                          input_tokens=10, output_tokens=5))
    pub.workflow_started("run-sec", "nightly", started_at=T0,
                         attributes={"api_key": S["anthropic"], "note": "nightly build"})
    good = orjson.loads(orjson.dumps({"id": "x", "type": "hook.event", "source": "test", "subject": SESSION,
                                      "data": {"session_id": SESSION, "hook_event_name": "Stop"}}))
    bad = [
        f"this is not json: password={S['password']} and {S['aws_id']}".encode(),
        b"\xff\xfe not utf-8 \xc3\x28 Authorization: Bearer " + S["bearer"].encode() + b" \xff",
        orjson.dumps({**good, "id": "bad-data", "data": {"session_id": 7, "hook_event_name": "X",
                                                        "tool_input": {"token": S["jwt"]}}}),
        orjson.dumps({**good, "id": "bad-type", "type": "mystery.event", "data": {"GITHUB_TOKEN": S["github"]}}),
        orjson.dumps({**good, "id": "bad-topic", "type": "workflow.started", "subject": "run-x",
                      "data": {"run_id": "run-x", "workflow": "w", "started_at": "2026-03-01T10:00:00Z",
                               "attributes": {"slack": S["slack"]}}}),
        orjson.dumps([f"Bearer {S['bearer']}", S["anthropic"]]),
    ]
    for value in bad:
        pub.raw(cat.events.name, SESSION.encode(), value)
    pub.raw(cat.events.name, f"key-with-token={S['env_token']}".encode(), b"{broken")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, broker: str) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("secrets")
    s = _settings(tmp, broker)
    cat = TopicCatalogue(prefix=s.topic_prefix)
    with Stack(s) as st:
        assert st.settings.broker is not None
        with Publisher(st.settings.broker, catalogue=cat, partitions=s.partitions) as pub:
            publish_everything(pub, cat)
            pub.flush()
            expected = publish_markers(pub, cat, "sec-m1", s.partitions)
        wait_for_marker(st.client, "sec-m1", expected, timeout=120)
        yield st


def _leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return [name for name, secret in S.items() if secret.encode() in data]


def _post(st: Stack, sql: str) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://{st.settings.http_host}:{st.settings.http_port}/query",
                                 data=orjson.dumps({"sql": sql}), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def _snapshot(st: Stack) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table in ("hook_events", "tool_calls", "usage", "dead_letters", "workflow_events", "consumer_offsets"):
        out[table] = st.client.query(f"SELECT * FROM {table} ORDER BY ALL")[1]
    out["tables"] = st.client.query("SELECT table_name, table_type FROM information_schema.tables ORDER BY ALL")[1]
    out["databases"] = st.client.query("SELECT database_name FROM duckdb_databases() ORDER BY ALL")[1]
    out["settings"] = st.client.query("SELECT name, value FROM duckdb_settings() WHERE name IN "
                                      "('threads', 'TimeZone', 'enable_profiling') ORDER BY ALL")[1]
    return out


def test_query_endpoint_refuses_every_write(stack: Stack, tmp_path: Path) -> None:
    before = _snapshot(stack)
    assert before["hook_events"] and before["tool_calls"]
    attempts = [
        "INSERT INTO hook_events (id) VALUES ('evil')", "UPDATE tool_calls SET command = 'evil'",
        "DELETE FROM dead_letters", "DROP TABLE usage", "CREATE TABLE evil AS SELECT 1",
        "CREATE VIEW evil_v AS SELECT 1", "CREATE MACRO evil_m(x) AS x", "ALTER TABLE usage ADD COLUMN evil INT",
        "TRUNCATE hook_events", f"ATTACH '{tmp_path / 'evil.duckdb'}' AS evil",
        f"COPY hook_events TO '{tmp_path / 'leak.csv'}'",
        f"COPY (SELECT * FROM tool_calls) TO '{tmp_path / 'leak.parquet'}' (FORMAT parquet)",
        f"EXPORT DATABASE '{tmp_path / 'exported'}'", "INSTALL httpfs", "LOAD httpfs", "FORCE INSTALL json",
        "PRAGMA enable_profiling", "SET threads = 1", "SET GLOBAL TimeZone = 'America/New_York'", "RESET threads",
        "SELECT 1; DELETE FROM hook_events", "FROM hook_events; DROP TABLE tool_calls",
        "EXPLAIN ANALYZE DELETE FROM hook_events", "CHECKPOINT", "VACUUM", "BEGIN TRANSACTION",
        "CREATE SEQUENCE evil_seq", "DETACH DATABASE memory", "CALL pragma_version()",
    ]
    refused = {sql: _post(stack, sql) for sql in attempts}
    wrong = {sql: r for sql, r in refused.items() if r[0] != 403}
    assert not wrong, wrong
    assert _snapshot(stack) == before
    assert not any(p.exists() for p in (tmp_path / "evil.duckdb", tmp_path / "leak.csv", tmp_path / "leak.parquet",
                                        tmp_path / "exported"))
    status, body = _post(stack, "SELECT count(*) FROM hook_events")  # and reads still work
    assert status == 200 and body["rows"][0][0] == len(before["hook_events"])


def test_http_endpoint_listens_on_loopback_only(stack: Stack) -> None:
    assert Settings.from_env({}).http_host == "127.0.0.1"
    assert stack.worker is not None
    listening = [c.laddr for c in psutil.Process(stack.worker.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == stack.settings.http_port]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening


def test_no_secret_in_query_results_or_cli(stack: Stack) -> None:
    env = {**os.environ, **stack.settings.to_env()}
    seen: list[str] = []
    for table in ("hook_events", "tool_calls", "dead_letters", "workflow_events", "pattern_occurrences",
                  "operation_patterns"):
        _, rows = stack.client.query(f"SELECT * FROM {table}")
        text = orjson.dumps(rows, default=str).decode()
        assert not _leaks(text), (table, _leaks(text))
        cli = subprocess.run([sys.executable, "-m", "outloop.cli", "query", "--format", "json",
                              f"SELECT * FROM {table}"], env=env, capture_output=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert not _leaks(cli.stdout + cli.stderr), (table, _leaks(cli.stdout))
        seen.append(cli.stdout.decode("utf-8", "replace"))
    patterns = subprocess.run([sys.executable, "-m", "outloop.cli", "patterns", "--json"], env=env,
                              capture_output=True, timeout=60)
    assert patterns.returncode == 0 and not _leaks(patterns.stdout), patterns.stderr
    everything = "\n".join(seen)
    for text in KEEP:  # what is not a secret survives
        assert text in everything, text
    assert "[REDACTED:" in everything


def test_query_endpoint_reads_nothing_but_the_database(stack: Stack, tmp_path: Path) -> None:
    secret_file = tmp_path / "credentials"
    secret_file.write_text(f"aws_secret_access_key = {S['aws_secret']}\n")
    for sql in (f"SELECT * FROM read_text('{secret_file}')", f"SELECT * FROM glob('{tmp_path}/*')"):
        status, body = _post(stack, sql)
        assert status in (400, 403) and "rows" not in body and not _leaks(orjson.dumps(body)), body


def test_reasons_sizes_and_no_secret_in_the_database_file(stack: Stack) -> None:
    _, rows = stack.client.query("SELECT reason, count(*) FROM dead_letters GROUP BY ALL ORDER BY ALL")
    assert {r: int(n) for r, n in rows} == {"data": 1, "not_json": 3, "not_object": 1, "unknown_type": 1,
                                           "wrong_topic": 1}
    _, rows = stack.client.query("SELECT id, input_bytes, output_bytes, command FROM tool_calls ORDER BY id")
    by_id = {r[0]: r for r in rows}
    assert by_id["toolu_sec_1"][1] == len(orjson.dumps(BASH_INPUT))  # sizes of the original content
    assert by_id["toolu_sec_1"][2] == len(STDOUT.encode())
    assert by_id["toolu_sec_1"][3].endswith("https://api.example.com/v1/run && pytest -q tests/unit")
    db = stack.settings.db
    stack.stop_worker()
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        assert {"hook_events", "tool_calls", "dead_letters", "workflow_events"} <= set(tables)
        found: dict[str, list[str]] = {}
        for table in tables:
            cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
            for row in con.execute(f"SELECT * FROM {table}").fetchall():
                for col, value in zip(cols, row, strict=True):
                    leaks = _leaks(value if isinstance(value, bytes) else str(value))
                    if leaks:
                        found.setdefault(f"{table}.{col}", []).extend(leaks)
        assert not found, found
        raws = [r[0] for r in con.execute("SELECT raw FROM dead_letters").fetchall()]
        assert any(r.startswith(b"\xff\xfe not utf-8 \xc3\x28") and r.endswith(b" \xff") for r in raws)  # bytes kept
        assert any(b"this is not json" in r for r in raws)
    finally:
        con.close()
    for path in (db, db.with_name(db.name + ".wal")):  # nor anywhere in the file's bytes
        if path.exists():
            assert not _leaks(path.read_bytes()), path
    env = {**os.environ, **stack.settings.to_env()}  # no worker now: `outloop query` reads the file itself
    cli = subprocess.run([sys.executable, "-m", "outloop.cli", "query", "--db", str(db), "--format", "csv",
                          "SELECT * FROM hook_events"], env=env, capture_output=True, timeout=60)
    assert cli.returncode == 0 and b"120 passed in 1.20s" in cli.stdout and not _leaks(cli.stdout), cli.stderr
