"""``outloop quota``: status, forecast and backtest of the quota windows, read from the database.

Rows come through the running worker's HTTP endpoint when one answers, else read-only from the file
(``outloop.client.query``). ``--at`` restricts every read to events up to that time, so a forecast can
be made as it would have been then (and backtested).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from outloop import clicommon
from outloop.agents.quota import UsageRow, WindowKind
from outloop.agents.quota_status import OFFICIAL_MAX_AGE_S, Official, official_from
from outloop.sinks.quotarows import USAGE_COLUMNS

out, err = clicommon.out, clicommon.err
quota_app = typer.Typer(help="Quota windows, burn rates, forecasts, throttling (docs/quota.md).",
                        invoke_without_command=True)

USAGE_SQL = f"""
SELECT {USAGE_COLUMNS}
WHERE u."timestamp" IS NOT NULL AND (? IS NULL OR u."timestamp" <= CAST(? AS TIMESTAMPTZ))
ORDER BY u."timestamp", u.id
"""
# the status-line figures that can still count at a time (params: that time twice): only the last
# OFFICIAL_MAX_AGE_S before it, so the statement reads a few status lines, not every one ever seen
OFFICIAL_SQL = f"""
SELECT received_at, CAST((payload->'rate_limits') AS VARCHAR) FROM hook_events
WHERE hook_event_name = 'Status' AND received_at <= CAST(? AS TIMESTAMPTZ)
  AND received_at >= CAST(? AS TIMESTAMPTZ) - INTERVAL {OFFICIAL_MAX_AGE_S} SECOND
  AND (payload->'rate_limits') IS NOT NULL
ORDER BY received_at DESC, id LIMIT 50
"""
STOPS_SQL = """
SELECT received_at, CAST(payload AS VARCHAR) FROM hook_events
WHERE hook_event_name = 'ApiError' AND payload->>'error' = 'rate_limit'
  AND received_at <= CAST(? AS TIMESTAMPTZ) AND received_at > CAST(? AS TIMESTAMPTZ) - INTERVAL 8 DAY
ORDER BY received_at DESC, id LIMIT 50
"""


_settings = clicommon.settings


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is taken as UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_fractions(text: str) -> tuple[float, ...]:
    """``0.1,0.5,0.9`` as fractions of a window, each strictly between 0 and 1 (ValueError otherwise)."""
    points = tuple(float(f) for f in text.split(","))
    if not all(0 < f < 1 for f in points):
        raise ValueError(text)
    return points


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        return parse_time(str(value))
    except ValueError:
        return None


def load_rows(db: Path | None, at: datetime | None) -> list[UsageRow]:
    from outloop.client import query

    s = _settings(db)
    stamp = at.isoformat() if at else None
    _cols, rows = query(s.db, s.http_host, s.http_port, USAGE_SQL, [stamp, stamp])
    return usage_rows(rows)


def usage_rows(rows: list[list[Any]]) -> list[UsageRow]:
    """The rows of ``USAGE_SQL`` as :class:`UsageRow` (rows without a readable time left out)."""
    out = []
    for ts, i, o, w, r, cost, model, turn in rows:
        when = _time(ts)
        if when is not None:
            out.append(UsageRow(when, int(i), int(o), int(w), int(r), cost, model, turn))
    return out


def load_official(db: Path | None, at: datetime) -> dict[str, Official]:
    """The latest official figure of each window seen up to ``at``: a status-line figure not older than
    15 minutes, or a rate-limit stop whose window has not reset (``agents.quota_signals``)."""
    import duckdb

    from outloop.agents.quota_signals import merge_official, rate_limit_stops
    from outloop.client import QueryError, query

    s = _settings(db)
    stamp = at.isoformat()
    try:
        _cols, rows = query(s.db, s.http_host, s.http_port, OFFICIAL_SQL, [stamp, stamp])
        _cols, stops = query(s.db, s.http_host, s.http_port, STOPS_SQL, [stamp, stamp])
    except (QueryError, duckdb.Error):  # no database yet: no official figures
        return {}
    return merge_official(official_from(rows, at), rate_limit_stops(stops, at))


def _emit(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")


_fail = clicommon.fail


def _config() -> Any:
    from outloop.agents.quota_risk import QuotaConfig

    try:
        return QuotaConfig.load()
    except ValueError as exc:
        raise _fail(str(exc), 2) from None


def _at(at: str | None) -> datetime:
    try:
        return parse_time(at) if at else datetime.now(UTC)
    except ValueError:
        raise _fail(f"--at {at!r} is not an ISO 8601 time", 2) from None


DbOpt = Annotated[Path | None, typer.Option(help="DuckDB file (default OUTLOOP_DB)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
AtOpt = Annotated[str | None, typer.Option(help="as of this ISO 8601 time (default now); only events up to it")]


@quota_app.callback()
def status(ctx: typer.Context, as_json: JsonOpt = False, db: DbOpt = None, at: AtOpt = None) -> None:
    """Every window's use (official or estimated), burn rates, forecast and the throttle decision."""
    if ctx.invoked_subcommand is not None:
        return
    from outloop.agents.quota_status import assess
    from outloop.client import QueryError

    when = _at(at)
    config = _config()
    try:
        rows = load_rows(db, when)
    except QueryError as exc:
        raise _fail(str(exc)) from None
    result = assess(rows, when, config, load_official(db, when))
    if at is None:
        write_status_cache(result.as_dict())
    if as_json:
        _emit(result.as_dict())
        return
    _print_status(result.as_dict())
    if at is None and rows and when - rows[-1].ts > timedelta(hours=5):  # old transcripts: say where the use is
        last = rows[-1].ts.isoformat()  # whole, so that --at it counts the last record too
        out.print(f"no usage in the five hours before now; the last at {last}: 'outloop quota --at {last}' "
                  "shows the windows then (the dashboard and 'outloop report' are assessed there)", soft_wrap=True)


def write_status_cache(status: dict[str, Any], path: str | None = None) -> None:
    """The compact view the status line shows between two runs (``$OUTLOOP_HOME/quota/status.json``),
    written atomically; a failure to write it is not an error of the command."""
    import os
    import tempfile
    import time

    from outloop.streams.statusline import status_cache_path

    windows = []
    for w in status["windows"]:
        fc = w["forecast"]
        limit = w["limit_tokens"]
        projected = fc.get("projected_percent")
        if projected is None and limit:
            projected = round(100 * fc["projected_tokens"] / limit, 1)
        windows.append({"window": w["window"], "percent": w["percent"], "basis": w["basis"],
                        "used": w["used"]["total"], "projected_percent": projected,
                        "time_to_limit_s": fc["time_to_limit_s"]})
    body = orjson.dumps({"written": time.time(), "at": status["at"], "level": status["decision"]["level"],
                         "windows": windows})
    target = path or status_cache_path()
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".status.", dir=os.path.dirname(target))
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.replace(tmp, target)
    except OSError:
        pass


def _short(n: float) -> str:
    """12.3M, 450k, 900: token counts that fit a narrow table."""
    if abs(n) >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.0f}k" if abs(n) >= 1e4 else f"{n:.0f}"


def _print_status(status: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"quota at {status['at'][:19]}Z")
    for name in ("window", "ends", "used", "of limit", "per hour", "projected", "p10-p90", "to limit"):
        table.add_column(name, no_wrap=True)
    for w in status["windows"]:
        fc = w["forecast"]
        pct = "-" if w["percent"] is None else f"{w['percent']:.0f}% {w['basis']}"
        ttl = fc["time_to_limit_s"]
        table.add_row(w["window"], w["end"][5:16].replace("T", " "), _short(w["used"]["total"]), pct,
                      _short(w["tokens_per_hour"]), _short(fc["projected_tokens"]),
                      f"{_short(fc['p10'])}-{_short(fc['p90'])}", "-" if ttl is None else f"{ttl / 3600:.1f} h")
    out.print(table)
    d = status["decision"]
    out.print(f"risk {d['level']}, action {d['action']}: {d['reason']} (forecasts are estimates)")


@quota_app.command("forecast")
def forecast_command(
    window: Annotated[str, typer.Option(help="five_hour | seven_day | month")] = "five_hour",
    at: AtOpt = None, db: DbOpt = None, as_json: JsonOpt = False,
) -> None:
    """The window holding --at: start, end, tokens used so far, projected_tokens at its end, p10, p90."""
    from outloop.agents.quota import WINDOW_KINDS
    from outloop.agents.quota_forecast import forecast
    from outloop.client import QueryError

    if window not in WINDOW_KINDS:
        raise _fail("--window must be five_hour, seven_day or month", 2)
    kind: WindowKind = window  # type: ignore[assignment]
    when = _at(at)
    config = _config()
    try:
        rows = load_rows(db, when)
    except QueryError as exc:
        raise _fail(str(exc)) from None
    fc = forecast(kind, rows, when, limit_tokens=config.limit_tokens(kind)).as_dict()
    if as_json:
        _emit(fc)
        return
    out.print(f"{window} window {fc['start']} -> {fc['end']}: used {fc['used_tokens']:,} tokens, projected "
              f"{fc['projected_tokens']:,} at its end (p10 {fc['p10']:,}, p90 {fc['p90']:,}; estimate)")


@quota_app.command("backtest")
def backtest_command(db: DbOpt = None, as_json: JsonOpt = False,
                     detail: Annotated[bool, typer.Option(help="with --json: every forecast point")] = False,
                     window: Annotated[str, typer.Option(help="five_hour | seven_day | month")] = "five_hour",
                     fractions: Annotated[str, typer.Option(help="forecast points, fractions of each window "
                                                            "(robustness: 0.1,0.2,...,0.9)")] = "0.25,0.5,0.75",
                     ) -> None:
    """Forecast every window (five-hour blocks by default) at 25/50/75% of it and compare with three
    baselines (MAPE, coverage); only the rows up to each forecast's time inform it."""
    from outloop.agents.quota import WINDOW_KINDS
    from outloop.agents.quota_backtest import METHODS, run_backtest
    from outloop.client import QueryError

    if window not in WINDOW_KINDS:
        raise _fail("--window must be five_hour, seven_day or month", 2)
    try:
        points = parse_fractions(fractions)
    except ValueError:
        raise _fail("--fractions must be numbers between 0 and 1, comma-separated", 2) from None
    try:
        rows = load_rows(db, None)
    except QueryError as exc:
        raise _fail(str(exc)) from None
    result = run_backtest(rows, kind=window, fractions=points).as_dict()  # type: ignore[arg-type]
    if not detail:
        result.pop("detail")
    if not result["points"]:  # nothing forecast: no error to average, rather than a MAPE of 0% and a ratio of inf
        result.update(mape=None, mape_by_fraction=None, best_baseline=None, ratio_to_best_baseline=None)
        if not as_json:
            out.print(f"no {window} window to backtest ({len(rows)} usage records; a window needs at least 2): "
                      "no MAPE to report")
            return
    if as_json:
        _emit(result)
        return
    at_pct = "/".join(f"{100 * f:g}" for f in points)
    out.print(f"{result['blocks']} {window} windows, {result['points']} forecast points ({at_pct}% of each)")
    mape: Any = result["mape"]
    for m in METHODS:
        out.print(f"  MAPE {m:<16} {100 * mape[m]:8.1f}%")
    out.print(f"  model / best baseline ({result['best_baseline']}): {result['ratio_to_best_baseline']}")
    out.print(f"  p10-p90 coverage {100 * float(str(result['coverage'])):.0f}% (nominal 80%), median width "
              f"{result['median_width_over_final']}x the final total")
    out.print(f"  stated p10-p90 probability {100 * float(str(result['stated_coverage'])):.0f}% on average "
              "(the paths that stop sit on p10)")
    out.print(f"  randomized-PIT coverage of the central 80%: {100 * float(str(result['pit_coverage'])):.0f}%")


@quota_app.command("statusline")
def statusline_command() -> None:
    """Claude Code's status line: reads its JSON on stdin, spools it, prints one line, never fails.
    `outloop hooks install --statusline` installs the fast form (the stdlib-only file run directly)."""
    from outloop.streams.statusline import main

    main()
