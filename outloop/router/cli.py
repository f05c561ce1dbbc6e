"""``outloop routes``: list and show the routing rules, change a rule's mode, exclude a signature.

Changes go to the user rules file (``$OUTLOOP_HOME/routes.json``); a running router reloads it
within about a second and records the new rules (tables ``routing_rules`` and ``adw_tools``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from outloop.router.rules import (
    GUARD,
    MODES,
    REREAD,
    Rule,
    RulesError,
    add_exclusion,
    load,
    set_mode,
    suggestion,
    user_path,
)

routes_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                         help="Routing rules: list, show RULE, mode RULE shadow|advise|enforce, exclude SIGNATURE.")
Query = Callable[[str, Path | None], tuple[list[str], list[list[Any]]]]  # (sql, --db or None: OUTLOOP_DB)
_query: list[Query] = []  # how to read the database: given by the CLI that mounts this app


def mount(query: Query) -> typer.Typer:
    """The ``routes`` app, reading decision figures with ``query`` (through a running worker, or the file)."""
    _query[:] = [query]
    return routes_app
out = Console(emoji=False, highlight=False)
err = Console(stderr=True, emoji=False, highlight=False)
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
DbOpt = Annotated[Path | None, typer.Option(help="DuckDB file the decision figures come from (default OUTLOOP_DB)")]


def _stats(db: Path | None = None) -> dict[str, dict[str, Any]]:
    """Per rule: decisions, answered, rewrites, measured fidelity (from DuckDB when there is one)."""
    try:
        _, rows = _query[0]("SELECT rule, count(*), count(*) FILTER (WHERE answered), "
                        "count(*) FILTER (WHERE action = 'rewrite'), count(fidelity), avg(fidelity) "
                        "FROM routing_decisions WHERE rule IS NOT NULL GROUP BY rule", db)
    except Exception:  # noqa: BLE001 - no database yet, or one without the table: no figures
        return {}
    return {r[0]: {"decisions": r[1], "answered": r[2], "rewrites": r[3], "measured": r[4], "fidelity": r[5]}
            for r in rows}


def _row(rule: Rule, stats: dict[str, Any]) -> dict[str, Any]:
    measured, fidelity = stats.get("measured", 0), stats.get("fidelity")
    return {**rule.as_dict(), "decisions": stats.get("decisions", 0), "answered": stats.get("answered", 0),
            "rewrites": stats.get("rewrites", 0), "fidelity": fidelity, "fidelity_decisions": measured,
            "suggestion": suggestion(rule, measured, fidelity)}


def _load() -> Any:
    try:
        return load(user_path())
    except RulesError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


@routes_app.callback()
def routes(ctx: typer.Context, as_json: JsonOpt = False, db: DbOpt = None) -> None:
    if ctx.invoked_subcommand is None:
        list_rules(as_json, db)


@routes_app.command("list")
def list_rules(as_json: JsonOpt = False, db: DbOpt = None) -> None:
    """Every rule in priority order with its mode, decisions and measured fidelity."""
    rules = _load()
    stats = _stats(db)
    rows = [_row(r, stats.get(r.name, {})) for r in rules.rules]
    if as_json:
        body = {"rules": rows, "exclude": list(rules.exclude), "loop_guard": rules.loop_guard,
                "guard_mode": rules.guard_mode, "rewrite_permission": rules.rewrite_permission,
                "file": str(user_path())}
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    t = Table(box=None, pad_edge=False)
    for col in ("rule", "family", "kind", "mode", "threshold", "decisions", "rewrites", "fidelity", "suggestion"):
        t.add_column(col)
    for r in rows:
        fid = "-" if r["fidelity"] is None else f"{r['fidelity']:.2f} ({r['fidelity_decisions']})"
        t.add_row(r["name"], r["family"], r["kind"], r["mode"], str(r["threshold"]), str(r["decisions"]),
                  str(r["rewrites"]), fid, r["suggestion"] or "")
    out.print(t)
    out.print(f"loop guard: the run {rules.loop_guard} in a row with an identical result is denied "
              f"({rules.guard_mode}); excluded: {', '.join(rules.exclude) or 'none'}; file {user_path()}")


@routes_app.command("show")
def show(rule: Annotated[str, typer.Argument(help="rule name")], as_json: JsonOpt = False,
         db: DbOpt = None) -> None:
    """One rule in full, with its examples and figures."""
    rules = _load()
    found = rules.by_name.get(rule)
    if found is None:
        err.print(f"[red]error:[/] no rule {rule!r} (outloop routes list)")
        raise typer.Exit(1)
    row = _row(found, _stats(db).get(rule, {}))
    if as_json:
        print(orjson.dumps(row, option=orjson.OPT_INDENT_2).decode())
        return
    for key, value in row.items():
        text = ", ".join(value) if isinstance(value, list | tuple) else ("-" if value is None else str(value))
        out.print(f"{key:>18}  {text}")


@routes_app.command("mode")
def mode(rule: Annotated[str, typer.Argument(help="rule name")],
         new: Annotated[str, typer.Argument(help="shadow | advise | enforce")], as_json: JsonOpt = False) -> None:
    """Set a rule's mode (written to the user rules file; the router applies it within seconds).
    ``loop-guard`` sets the mode of the loop guard and the wait advice, ``unchanged-reread`` that of the
    unchanged re-read rule."""
    if new not in MODES:
        err.print(f"[red]error:[/] mode must be one of {', '.join(MODES)}")
        raise typer.Exit(2)
    if rule not in _load().by_name and rule not in (GUARD, REREAD):
        err.print(f"[red]error:[/] no rule {rule!r} (outloop routes list)")
        raise typer.Exit(1)
    try:
        set_mode(user_path(), rule, new)
    except RulesError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    _done({"rule": rule, "mode": new, "file": str(user_path())}, as_json, f"{rule}: {new}")


@routes_app.command("exclude")
def exclude(signature: Annotated[str, typer.Argument(help="a signature or glob, e.g. test:pytest:tests/slow")],
            as_json: JsonOpt = False) -> None:
    """Never route this signature (glob patterns allowed)."""
    try:
        data = add_exclusion(user_path(), signature)
    except RulesError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    _done({"exclude": data.get("exclude", []), "file": str(user_path())}, as_json, f"excluded {signature}")


def _done(body: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        print(orjson.dumps(body).decode())
    else:
        out.print(f"{text} (in {body['file']}; a running router applies it within seconds)")
