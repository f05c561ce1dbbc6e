"""``outloop discover`` and ``outloop recommendations``: ROI-ranked opportunities, their issue drafts, filing
through ``gh``, and feedback (docs/discovery.md).

Writes go to the one owner of the database: the running worker when it owns the file (its sink runs the
analysis), else this process opens the file itself (no worker holds it, so nobody else writes).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table
from rich.text import Text

from outloop import clicommon

out, err = clicommon.out, clicommon.err
recommendations_app = typer.Typer(help="List, show, accept or reject recommendations (docs/discovery.md).",
                                  no_args_is_help=True)


_fail, _settings = clicommon.fail, clicommon.settings


def _owner(s: Any, op: str, body: dict[str, Any], local: Callable[[Any], Any]) -> Any:
    """Through the worker that owns ``s.db`` (POST ``op``), else ``local(con)`` in a write transaction on the
    file opened here."""
    import duckdb

    from outloop.client import QueryError, WorkerClient, owns

    client = WorkerClient(s.http_host, s.http_port, timeout=600.0)
    if owns(client.health(), s.db):
        try:
            return client._request(op, body)
        except (QueryError, OSError) as exc:
            from outloop.client import reason  # the CLI's one form: no class names in front of the worker's reason

            raise _fail(reason(exc)) from None
    if not s.db.exists():
        raise _fail(f"no database at {s.db} (run 'outloop replay' or 'outloop up' first)")
    from outloop.sinks.query import use_utc
    from outloop.sinks.schema import migrate

    try:
        con = duckdb.connect(str(s.db))
    except duckdb.IOException as exc:
        raise _fail(f"{s.db} is held by another process: {exc}") from None
    try:
        use_utc(con)
        migrate(con)
        con.execute("BEGIN TRANSACTION")
        try:
            result = local(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return result
    except ValueError as exc:
        raise _fail(str(exc)) from None
    finally:
        con.close()


def _dump(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")


def _table(recs: list[dict[str, Any]], title: str) -> None:
    from outloop.report import print_table

    table = Table(title=title, caption="per 30d: measured occurrences (event time); $/month with its interval, "
                  "build $, payback and ROI: estimates (docs/discovery.md)")
    table.add_column("id")
    table.add_column("kind")
    table.add_column("opportunity", overflow="fold", min_width=30)
    for name in ("priority", "per 30d", "$/month (95% interval)", "build $", "payback mo", "ROI %", "status"):
        table.add_column(name)
    for r in recs:
        pay = "-" if r["payback_months"] is None else f"{r['payback_months']:.1f}"
        roi = "-" if r["roi_pct"] is None else f"{r['roi_pct']:.0f}"
        table.add_row(r["id"], r["kind"], Text(r["key"]), r["priority"], f"{r['occurrences_30d']:.1f}",
                      f"{r['monthly_savings_usd']:.2f} ({r['monthly_low_usd']:.2f}-{r['monthly_high_usd']:.2f})",
                      f"{r['build_cost_usd']:.0f}", pay, roi, r.get("status", "open"))
    print_table(out, table)


def discover(
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default OUTLOOP_DB)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the recommendations as JSON")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="drafts folder (default $OUTLOOP_HOME/drafts)")] = None,
    config: Annotated[Path | None, typer.Option(help="thresholds and build costs (TOML, see docs/discovery.md)")]
    = None,
    file: Annotated[bool, typer.Option("--file", help="file the drafts as GitHub issues with gh")] = False,
    repo: Annotated[str | None, typer.Option(help="OWNER/NAME to file in (default: gh's current repository)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run/--no-dry-run", help="with --file: show the gh commands only")]
    = True,
) -> None:
    """Rank what to automate or change next by measured ROI, write one issue draft per opportunity, and
    (with --file --no-dry-run) file them on GitHub, never twice."""
    from outloop.agents.discovery import load_config
    from outloop.drafts import write_drafts

    s = _settings(db)
    cfg_path = config or s.discovery_config_path
    try:
        cfg = load_config(cfg_path)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None

    def local(con: Any) -> Any:
        from outloop.agents.pricing import active_table
        from outloop.projections.recommendations import refresh_recommendations

        return refresh_recommendations(con, cfg, active_table())

    recs = _owner(s, "/discover", {"config": str(cfg_path) if cfg_path else None}, local)
    folder = (out_dir or s.home / "drafts").expanduser()
    drafts = write_drafts(recs, folder)
    filed = _file(s, recs, folder, repo, dry_run) if file else []
    if as_json:
        _dump({"recommendations": recs, "drafts": drafts.as_dict(), "filing": filed})
        return
    _table(recs, f"recommendations ({len(recs)})")
    err.print(f"drafts in {folder}: {len(drafts.created)} new, {len(drafts.updated)} updated, "
              f"{len(drafts.unchanged)} unchanged")
    for f in filed:
        err.print(f"{f['action']}: {shlex.join(f['command'])}" + (f"  ({f['url']})" if f["url"] else ""),
                  markup=False, soft_wrap=True)


def _file(s: Any, recs: list[dict[str, Any]], folder: Path, repo: str | None, dry_run: bool) -> list[dict[str, Any]]:
    from outloop.filing import FilingError, file_issues, gh_ready

    known = {r["id"]: r["filed_url"] for r in recs if r.get("filed_url")}
    if not dry_run:
        why = gh_ready()
        if why:
            raise _fail(why)
    try:
        results = file_issues(recs, folder, repo=repo, dry_run=dry_run, filed=known)
    except FilingError as exc:
        raise _fail(str(exc)) from None
    for f in results:
        if f.action == "create" and f.url:
            _record(s, f.id, "filed", url=f.url)
    return [f.as_dict() for f in results]


def _record(s: Any, rec: str, action: str, rule: str | None = None, url: str | None = None,
            note: str | None = None) -> Any:
    from outloop.projections.recommendations import add_feedback

    body = {"id": rec, "action": action, "rule": rule, "url": url, "note": note}
    return _owner(s, "/recommendations/feedback", body,
                  lambda con: add_feedback(con, rec, action, datetime.now(UTC), rule=rule, url=url, note=note))


def _load(db: Path | None, rec: str | None = None, current_only: bool = False) -> list[dict[str, Any]]:
    from outloop.client import query

    s = _settings(db)
    try:
        columns, rows = query(s.db, s.http_host, s.http_port,
                              "SELECT * FROM v_recommendations WHERE (NOT ? OR current) AND (? IS NULL OR id LIKE ? "
                              "|| '%') ORDER BY current DESC, rank NULLS LAST, id", [current_only, rec, rec])
    except Exception as exc:
        raise _fail(str(exc)) from None
    recs = [dict(zip(columns, r, strict=True)) for r in rows]
    for r in recs:
        for key in ("criteria", "evidence", "config"):
            if isinstance(r[key], str):
                r[key] = orjson.loads(r[key])
    return recs


@recommendations_app.command("list")
def list_cmd(db: Annotated[Path | None, typer.Option(help="DuckDB file")] = None,
             every: Annotated[bool, typer.Option("--all", help="also those below the thresholds now")] = False,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The stored recommendations, best first, with their status."""
    recs = _load(db, current_only=not every)
    _dump(recs) if as_json else _table(recs, f"recommendations ({len(recs)})")


@recommendations_app.command("show")
def show_cmd(rec: Annotated[str, typer.Argument(help="a recommendation id (or a unique prefix)")],
             db: Annotated[Path | None, typer.Option(help="DuckDB file")] = None,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One recommendation: its draft text (or its row with --json)."""
    from outloop.drafts import render

    found = _load(db, rec)
    if len(found) != 1:
        raise _fail(f"no recommendation {rec!r}" if not found else f"{rec!r} matches {len(found)} recommendations")
    _dump(found[0]) if as_json else sys.stdout.write(render(found[0]))


@recommendations_app.command("accept")
def accept_cmd(rec: Annotated[str, typer.Argument(help="a recommendation id")],
               rule: Annotated[str | None, typer.Option(help="the routing rule that implements it")] = None,
               note: Annotated[str | None, typer.Option()] = None,
               db: Annotated[Path | None, typer.Option(help="DuckDB file")] = None) -> None:
    """Accept it; with --rule, the rule's realised savings are compared with today's projection from now on."""
    _dump(_record(_settings(db), rec, "accept", rule=rule, note=note))


@recommendations_app.command("reject")
def reject_cmd(rec: Annotated[str, typer.Argument(help="a recommendation id")],
               note: Annotated[str | None, typer.Option()] = None,
               db: Annotated[Path | None, typer.Option(help="DuckDB file")] = None) -> None:
    """Reject it (it stays listed with its status)."""
    _dump(_record(_settings(db), rec, "reject", note=note))
