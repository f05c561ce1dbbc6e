"""The ``outloop`` command line."""

from __future__ import annotations

import csv
import io
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table
from rich.text import Text

from outloop import clicommon
from outloop.dashdata import PATTERNS_SQL  # the query of `outloop patterns`, the dashboard's too
from outloop.discover_cli import discover, recommendations_app
from outloop.quota_cli import quota_app
from outloop.router.cli import mount as mount_routes
from outloop.streams.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="outloop: watch coding agents, move deterministic work out of the LLM loop.")
hooks_app = typer.Typer(no_args_is_help=True, help="Claude Code hook integration.")
app.add_typer(hooks_app, name="hooks")


def _query_db(sql: str, db: Path | None = None) -> tuple[list[str], list[list[Any]]]:
    from outloop.client import query as run

    s = Settings.from_env()
    return run(db.expanduser().resolve() if db is not None else s.db, s.http_host, s.http_port, sql)


app.add_typer(mount_routes(_query_db), name="routes")
app.add_typer(quota_app, name="quota")
app.command()(discover)
app.add_typer(recommendations_app, name="recommendations")
out, err = clicommon.out, clicommon.err
_settings, _fail = clicommon.settings, clicommon.fail


def _reason(exc: BaseException) -> str:
    """An expected error's message without Python class names in front of it (``outloop.client.reason``)."""
    from outloop.client import reason

    return reason(exc)


@app.command()
def up() -> None:
    """Run broker (embedded unless OUTLOOP_BROKER is set), worker, forwarder and transcript tailer until Ctrl-C.

    An embedded broker that exits is restarted with a fresh worker (the forwarder sends its sent
    journal again); one whose memory passed OUTLOOP_BROKER_MAX_RSS_MB is recycled once drained.
    One instance per OUTLOOP_HOME: a second one exits at once, naming the first one's pid."""
    import logging

    from outloop.dashboard import serve as serve_dashboard
    from outloop.lifetime import AlreadyRunning, InstanceLock
    from outloop.runtime import Stack, StackError
    from outloop.streams.broker import BrokerError
    from outloop.streams.publisher import PublishError

    s = _settings()
    try:
        lock = InstanceLock(s.home).acquire()  # held until this process ends, however it ends
    except AlreadyRunning as exc:
        raise _fail(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: stop.set())  # its terminal closed
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("outloop.supervisor").propagate = False  # printed through on_event below
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # a broker that is down: outloop says so once
    try:
        with Stack(s, forwarder=True, supervise=True, router=True, tailer=True,
                   on_event=lambda m: err.print(m, markup=False)) as stack:
            st = stack.settings
            err.print(f"broker   {st.broker}{' (embedded)' if stack.broker else ''}")
            err.print(f"worker   http://{st.http_host}:{st.http_port}  (log {stack.worker_log})")
            err.print(f"database {st.db}")
            err.print(f"spool    {st.spool}")
            if stack.router is not None:
                err.print(f"router   {stack.router.socket_path}  (log {stack.router.log_path})")
            err.print(f"tailing  {st.projects or 'off'} (and the transcripts hooks name)")
            try:
                board = serve_dashboard(stack)
            except OSError as exc:  # its port is taken: the stack runs on, without a dashboard
                board = None
                err.print(f"dashboard off: {st.dashboard_host}:{st.dashboard_port}: {exc} (OUTLOOP_DASHBOARD_PORT)")
            if board is not None:
                err.print(f"dashboard {board.url}")
            err.print("outloop is up; Ctrl-C stops it")
            try:
                while not stop.wait(0.5):
                    if stack.failed.is_set():
                        raise _fail(stack.failure or "the stack stopped")
            except KeyboardInterrupt:
                pass
            finally:
                if board is not None:
                    board.stop()
            err.print("stopping...")
    except (StackError, BrokerError, PublishError) as exc:
        raise _fail(_reason(exc)) from None
    finally:
        lock.release()


@app.command()
def worker() -> None:
    """Run only the worker (agents + DuckDB sink + HTTP); needs OUTLOOP_BROKER."""
    from outloop.worker import run

    run(_settings())


@app.command()
def forward(once: Annotated[bool, typer.Option(help="drain the spool once and exit")] = False) -> None:
    """Ship the hook spool to Kafka (OUTLOOP_BROKER); deletes only what the broker acknowledged."""
    from outloop.streams.forwarder import Forwarder

    s = _settings()
    if not s.broker:
        raise _fail("OUTLOOP_BROKER is not set ('outloop up' runs a forwarder against its own broker)")
    from outloop.streams.publisher import PublishError

    fwd = Forwarder.from_settings(s)
    if once:
        try:
            n = fwd.run_once()
        except PublishError as exc:
            raise _fail(f"broker {s.broker}: {exc} (nothing unacknowledged was deleted)") from None
        finally:
            fwd.close()
        err.print(f"forwarded {n} events")
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        fwd.run_forever(stop)
    except KeyboardInterrupt:
        stop.set()


@app.command()
def replay(
    paths: Annotated[list[Path], typer.Argument(help="files or folders; default: ~/.claude/projects")] = None,  # type: ignore[assignment]
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default OUTLOOP_DB)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for materialization")] = 600.0,
    route_mode: Annotated[str, typer.Option(
        "--route-mode", help="'shadow': decide every recorded tool call and price what routing would save")] = "off",
) -> None:
    """Import transcripts, hook logs and trajectories, materialize them, print a summary."""
    from outloop.lifetime import Stopped, stopped_by_signals
    from outloop.replay import NothingToImport
    from outloop.replay import replay as run_replay
    from outloop.runtime import StackError
    from outloop.streams.broker import BrokerError
    from outloop.streams.importers.detect import default_claude_projects
    from outloop.streams.publisher import PublishError

    if not paths:
        paths = [default_claude_projects()]
    s = _settings(db)
    try:
        with stopped_by_signals():  # whatever stops it stops the broker and worker it started first
            if route_mode not in ("off", "shadow"):
                raise _fail(f"--route-mode is 'off' or 'shadow', not {route_mode!r}")
            summary = run_replay(paths, s, console=err, show_progress=err.is_terminal and not as_json,
                                 timeout=timeout, route_mode=None if route_mode == "off" else route_mode)
    except (FileNotFoundError, NothingToImport, StackError, TimeoutError, BrokerError, PublishError) as exc:
        raise _fail(_reason(exc)) from None
    except Stopped as exc:
        raise _fail(str(exc), exc.exit_code) from None
    if as_json:
        sys.stdout.write(orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from outloop.report import print_summary

        print_summary(out, summary, s.db)


def _render(columns: list[str], rows: list[list[Any]], fmt: str) -> None:
    if fmt == "json":
        data = [dict(zip(columns, r, strict=True)) for r in rows]
        sys.stdout.write(orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        from outloop.report import print_table

        table = Table(*columns)
        for r in rows:
            table.add_row(*(Text("" if v is None else str(v)) for v in r))
        print_table(out, table)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="a read-only SQL statement")],
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default OUTLOOP_DB)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """Query the database: through the running worker, or read-only from the file."""
    from outloop.client import query as run_query

    if fmt not in ("table", "csv", "json"):
        raise _fail("--format must be table, csv or json", 2)
    s = _settings(db)
    try:
        columns, rows = run_query(s.db, s.http_host, s.http_port, sql)
    except Exception as exc:  # QueryError, and duckdb's errors on the read-only path
        raise _fail(_reason(exc)) from None
    _render(columns, rows, fmt)


@app.command()
def patterns(
    top: Annotated[int, typer.Option(help="how many patterns")] = 20,
    category: Annotated[str | None, typer.Option(help="only this category (test, build, vcs, read, ...)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="full rows: samples and the numbers behind confidence")]
    = False,
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default OUTLOOP_DB)")] = None,
) -> None:
    """Repeated operations by signature, with counts, token cost and confidence."""
    from outloop.client import query as run_query

    if top < 1:
        raise _fail("--top must be at least 1", 2)
    s = _settings(db)
    try:
        columns, rows = run_query(s.db, s.http_host, s.http_port, PATTERNS_SQL, [category, category, top])
    except Exception as exc:  # QueryError, and duckdb's errors on the read-only path
        raise _fail(_reason(exc)) from None
    records = [dict(zip(columns, r, strict=True)) for r in rows]
    for rec in records:
        for key in ("samples", "confidence_breakdown", "side_effects"):
            if isinstance(rec[key], str):
                rec[key] = orjson.loads(rec[key])
    if as_json:
        sys.stdout.write(orjson.dumps(records, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(title="operation patterns")
    table.add_column("signature", overflow="fold", min_width=28)
    for name in ("status", "conf", "calls", "sessions", "24h", "tokens", "ok %", "side effects"):
        table.add_column(name)
    for rec in records:
        rate = rec["success_rate"]
        effects = ", ".join(f"{k} {v}" for k, v in (rec["side_effects"] or {}).items()) or rec["side_effect"]
        table.add_row(Text(rec["signature"]), rec["status"], str(rec["confidence_score"]),
                      str(rec["occurrence_count"]), str(rec["session_count"]), str(rec["count_24h"]),
                      f"{rec['tokens_total']:,}", "" if rate is None else f"{100 * rate:.0f}", effects)
    from outloop.report import print_table

    print_table(out, table)


@app.command()
def savings(
    by: Annotated[str, typer.Option(help="group by rule, day or session")] = "rule",
    as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False,
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default OUTLOOP_DB)")] = None,
) -> None:
    """Net tokens and dollars routing saved (or would save, in shadow), with fidelity."""
    from outloop.client import query as run_query
    from outloop.savings import records, savings_sql

    try:
        sql = savings_sql(by)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    s = _settings(db)
    try:
        columns, rows = run_query(s.db, s.http_host, s.http_port, sql)
    except Exception as exc:  # QueryError, and duckdb's errors on the read-only path
        raise _fail(_reason(exc)) from None
    if as_json:
        sys.stdout.write(orjson.dumps(records(columns, rows), default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    _render(columns, rows, "table")


@app.command()
def context(
    session: Annotated[str | None, typer.Argument(help="a session id for its detail, or 'profiles'")] = None,
    top: Annotated[int, typer.Option(help="how many sessions or profiles")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="rows as JSON")] = False,
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default OUTLOOP_DB)")] = None,
) -> None:
    """Context efficiency: what entered the agents' context, what they used, what it cost (docs/context.md).
    No argument: every session; SESSION: one in detail; 'profiles': the context profiles of the top patterns."""
    from outloop import contextreport as cr
    from outloop.client import QueryError
    from outloop.client import query as run_query

    if top < 1:
        raise _fail("--top must be at least 1", 2)
    s = _settings(db)

    def ask(sql: str, params: list[Any] | None) -> tuple[list[str], list[list[Any]]]:
        return run_query(s.db, s.http_host, s.http_port, sql, params)

    try:
        data: Any = (cr.profiles(ask, top) if session == "profiles" else
                     cr.sessions(ask, top) if session is None else cr.session(ask, session))
    except QueryError as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:
        raise _fail(f"{type(exc).__name__}: {exc}") from None
    if data is None:
        raise _fail(f"no context figures for session {session}")
    if as_json:
        sys.stdout.write(cr.dump(data))
    elif session == "profiles":
        cr.print_profiles(out, data)
    elif session is None:
        cr.print_sessions(out, data)
    else:
        cr.print_session(out, data)


@app.command()
def report(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for index.html and the PNG charts")],
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default OUTLOOP_DB)")] = None,
) -> None:
    """The dashboard's content as a static page: index.html and PNG charts, for sharing and CI artifacts."""
    from datetime import UTC, datetime

    from outloop.agents.quota_risk import QuotaConfig
    from outloop.client import query as run_query
    from outloop.htmlreport import write_report

    s = _settings(db)
    if not s.db.exists():
        raise _fail(f"no database at {s.db} (run 'outloop replay' or 'outloop up' first)")
    if out_dir.exists() and not out_dir.is_dir():
        raise _fail(f"--out {out_dir} is a file, not a folder")
    try:
        config = QuotaConfig.load()
        made = write_report(lambda sql, params: run_query(s.db, s.http_host, s.http_port, sql, params), out_dir,
                            datetime.now(UTC), config, str(s.db))
    except (ValueError, OSError) as exc:
        raise _fail(_reason(exc)) from None
    err.print(f"wrote {out_dir / 'index.html'} and {len(made)} charts: {', '.join(p.name for p in made.values())}")


@hooks_app.command("install")
def hooks_install(
    settings_path: Annotated[Path, typer.Option("--settings", help="Claude Code settings.json")] = Path(
        "~/.claude/settings.json"),
    statusline: Annotated[bool, typer.Option(help="also set Claude Code's status line to outloop's quota line")]
    = False,
) -> None:
    """Add the outloop hook to every Claude Code hook event, with OUTLOOP_SPOOL and OUTLOOP_HOME
    recorded in its command (idempotent; keeps a backup)."""
    from outloop.hooks_install import describe, install_hooks, install_statusline, installed_command
    from outloop.streams.statusline import statusline_command

    s = _settings()
    try:
        result = install_hooks(settings_path.expanduser(), installed_command(s.spool, s.home))
        err.print(describe(result, installing=True), markup=False, soft_wrap=True)
        if statusline:
            line = install_statusline(settings_path.expanduser(), statusline_command())
            err.print(f"set Claude Code's statusLine in {line.path} to the outloop quota line" if line.changed
                      else "the outloop quota status line is already set; nothing changed", markup=False)
    except ValueError as exc:
        raise _fail(str(exc)) from None


@hooks_app.command("uninstall")
def hooks_uninstall(
    settings_path: Annotated[Path, typer.Option("--settings", help="Claude Code settings.json")] = Path(
        "~/.claude/settings.json"),
) -> None:
    """Remove the outloop hook entries (keeps a backup)."""
    from outloop.hooks_install import describe, uninstall_hooks
    from outloop.streams.shim import hook_command

    try:
        result = uninstall_hooks(settings_path.expanduser(), hook_command())
    except ValueError as exc:
        raise _fail(str(exc)) from None
    err.print(describe(result, installing=False), markup=False, soft_wrap=True)


@hooks_app.command("command")
def hooks_command() -> None:
    """Print the hook command line outloop installs."""
    from outloop.hooks_install import installed_command

    s = _settings()
    out.print(installed_command(s.spool, s.home), soft_wrap=True, highlight=False)


@app.command()
def schema(dest: Annotated[Path, typer.Argument(help="folder to write one JSON Schema per event type")]) -> None:
    """Export the JSON Schema of every event type."""
    from outloop.schemas.export import export_json_schemas

    for path in export_json_schemas(dest):
        err.print(str(path))


@app.command()
def demo(
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default: a fresh file in the temporary folder)")] = None,
    sessions: Annotated[int, typer.Option(help="sessions in the generated sample")] = 6,
) -> None:
    """The main job on the embedded default: generate a realistic sample, replay it, print a report.

    The sample and everything the replay keeps lives in a temporary folder removed at the end, however
    the demo ends; without --db the database is a fresh file in the temporary folder, kept for querying."""
    import secrets
    import shutil
    import tempfile

    from outloop.lifetime import Stopped, stopped_by_signals
    from outloop.replay import replay as run_replay
    from outloop.report import print_demo
    from outloop.runtime import StackError
    from outloop.sample import write_sample
    from outloop.streams.broker import BrokerError
    from outloop.streams.publisher import PublishError

    own_db = db is None
    if db is None:
        db = Path(tempfile.gettempdir()) / f"outloop-demo-{secrets.token_hex(6)}.duckdb"
    work = Path(tempfile.mkdtemp(prefix="outloop-demo-"))
    try:
        with stopped_by_signals():
            sample = work / "sample"
            files = write_sample(sample, sessions=sessions)
            err.print(f"generated a sample of {len(files)} files")
            s = _settings(db, home=work / "home", broker=None, http_port=0)
            summary = run_replay([sample], s, console=err, show_progress=err.is_terminal)
    except (StackError, BrokerError, PublishError, TimeoutError) as exc:
        raise _fail(_reason(exc)) from None
    except Stopped as exc:
        raise _fail(str(exc), exc.exit_code) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if own_db:  # the router's snapshot the sink wrote beside it: no router reads a demo's database
            from outloop.sinks.snapshot import snapshot_path

            snapshot_path(db).unlink(missing_ok=True)
    print_demo(out, summary, s.db)


_COMMAND_ARGS = {"ignore_unknown_options": True}


@app.command("run", context_settings=_COMMAND_ARGS)
def run_command(
    command: Annotated[list[str], typer.Argument(help="the command (after --): one word is run as is by bash -c")],
    family: Annotated[str | None, typer.Option(help="summariser family (default: detected)")] = None,
    rule: Annotated[str | None, typer.Option(help="routing rule recorded with the run")] = None,
) -> None:
    """Run a command as the agent would have, keep its whole output in a log, print it unchanged when short
    or a compact result when long. Exit code: the command's own. See docs/runner.md."""
    from outloop.runner.run import main as run_main

    argv = ["--outloop-run", *(["--family", family] if family else []), *(["--rule", rule] if rule else [])]
    raise typer.Exit(run_main([*argv, "--", *command]))


@app.command("wait", context_settings=_COMMAND_ARGS)
def wait_command(
    command: Annotated[list[str], typer.Argument(help="the check command (after --)")],
    every: Annotated[float, typer.Option(help="seconds between checks")] = 5.0,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 600.0,
    until: Annotated[str | None, typer.Option(help="stop when the output matches this regex")] = None,
    until_change: Annotated[bool, typer.Option(help="stop when the output changes (the default)")] = False,
) -> None:
    """Run a check every N seconds until its output changes or matches, or the time-out passes; print only
    the final state and how long it took. Exit 0: changed or matched; 1: timed out; 2: bad arguments."""
    from outloop.runner.wait import main as wait_main

    argv = ["--every", str(every), "--timeout", str(timeout)]
    if until is not None and until_change:
        raise _fail("--until and --until-change exclude each other", 2)
    if not every > 0 or not timeout >= 0:  # the runner's own check answers with its usage only: say which
        raise _fail(f"--every must be above 0 and --timeout at least 0 (got {every:g} and {timeout:g})", 2)
    try:
        re.compile(until or "")
    except re.error as exc:
        raise _fail(f"--until {until!r} is not a regular expression: {exc}", 2) from None
    argv += ["--until", until] if until is not None else ["--until-change"]
    raise typer.Exit(wait_main([*argv, "--", *command]))


def main() -> None:
    """The console script: typer's app, with usage errors in the CLI's one error form."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print(Text.assemble(("error:", "red"), " aborted"), soft_wrap=True)
        sys.exit(130)
    except typer.TyperException as exc:  # typer's click: usage errors and the like
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            sys.stderr.write(ctx.get_help() + "\n")
            sys.exit(2)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        err.print(Text.assemble(("error:", "red"), f" {message}{hint}"), soft_wrap=True)
        sys.exit(int(getattr(exc, "exit_code", 2)))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
