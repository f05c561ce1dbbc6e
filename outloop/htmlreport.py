"""``outloop report --db FILE --out DIR``: the dashboard's content as a static page with PNG charts, for
sharing and for CI artifacts.

The figures are the dashboard's (:mod:`outloop.dashdata`); the charts are drawn with matplotlib
(its Agg backend: no display needed) at :data:`CHART_PX` pixels each, and ``index.html`` names every
chart it shows and gives the tables beside them. Component health is not part of it: a file has none.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from outloop import dashdata

CHART_PX = (960, 360)  # width, height of every chart
DPI = 120


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(CHART_PX[0] / DPI, CHART_PX[1] / DPI), dpi=DPI)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=DPI)  # no bbox_inches="tight": every chart keeps CHART_PX
    plt.close(fig)
    return path


def _short(n: float | None) -> str:
    if n is None:
        return ""
    if abs(n) >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.0f}k" if abs(n) >= 1e4 else f"{n:,.0f}"


def quota_chart(w: dict[str, Any], path: Path) -> Path:
    """One window: cumulative use, the projection to its end with the p10-p90 interval, the limit."""
    fc = w["forecast"]
    fig, ax = _figure()
    times = [datetime.fromisoformat(t) for t, _ in w["series"]]
    ax.step(times, [v for _, v in w["series"]], where="post", color="#1d2330", label="used (measured)")
    last = (times[-1], w["series"][-1][1]) if times else (datetime.fromisoformat(w["at"]), fc["used_tokens"])
    end = datetime.fromisoformat(w["end"])
    ax.plot([last[0], end], [last[1], fc["projected_tokens"]], "--", color="#3b6fd8", label="projected (estimate)")
    ax.fill_between([last[0], end], [last[1], fc["p10"]], [last[1], fc["p90"]], color="#3b6fd8", alpha=0.2,
                    label="p10-p90")
    if w["limit_tokens"]:
        ax.axhline(w["limit_tokens"], color="#b00", linestyle=":", label=f"limit {_short(w['limit_tokens'])}")
    ax.set_xlim(datetime.fromisoformat(w["start"]), end)
    ax.set_ylim(bottom=0)
    ax.set_title(f"{w['window']}: used {_short(w['used']['total'])}, {_short(w['tokens_per_hour'])}/h, "
                 f"projected {_short(fc['projected_tokens'])}")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, path)


def bar_chart(labels: list[str], values: Sequence[float], title: str, path: Path, color: str) -> Path:
    fig, ax = _figure()
    short = [label if len(label) <= 40 else label[:39] + "…" for label in labels]
    ax.barh(range(len(values)), values, color=color)
    ax.set_yticks(range(len(values)), short, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title)
    return _save(fig, path)


def routing_chart(hours: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = _figure()
    times = [datetime.fromisoformat(str(h["hour"])) for h in hours]
    ax.step(times, [h["cumulative_net_tokens"] for h in hours], where="post", color="#087f23", marker="o")
    ax.set_title("routing: net tokens saved, cumulative by hour (basis in the table)")
    ax.axhline(0, color="#999", linewidth=0.5)
    fig.autofmt_xdate()
    return _save(fig, path)


def charts(figures: dict[str, Any], out: Path) -> dict[str, Path]:
    """The PNGs of the panels that have figures, by name (the page shows them in this order)."""
    made: dict[str, Path] = {}
    q = figures.get("quota") or {}
    for w in q.get("windows", []):
        made[f"quota_{w['window']}"] = quota_chart(w, out / f"quota_{w['window']}.png")
    pats = figures.get("patterns") or []
    if pats:
        made["patterns"] = bar_chart([p["signature"] for p in pats], [p["occurrence_count"] for p in pats],
                                     "top patterns: occurrences", out / "patterns.png", "#3b6fd8")
    sessions = (figures.get("context") or {}).get("sessions") or []
    if sessions:
        efficiency = [100 * (s["efficiency"] or 0) for s in sessions]
        made["context"] = bar_chart([s["session_id"] for s in sessions], efficiency,
                                    "context efficiency per session (% of loaded tokens used; estimate)",
                                    out / "context.png", "#087f23")
    hours = (figures.get("routing") or {}).get("hours") or []
    if hours:
        made["routing"] = routing_chart(hours, out / "routing.png")
    dead = (figures.get("dead_letters") or {}).get("by_reason") or []
    if dead:
        made["dead_letters"] = bar_chart([d["reason"] for d in dead], [d["letters"] for d in dead],
                                         "dead letters by reason", out / "dead_letters.png", "#b00")
    return made


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p class=note>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if r.get(c) is None else str(r.get(c)))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


SECTIONS = [  # (panel, title, chart names prefix, rows of the table, its columns)
    ("quota", "Quota: burn rate and forecast (estimate)", "quota_", lambda d: d["windows"],
     ["window", "start", "end", "percent", "basis", "tokens_per_hour", "limit_tokens"]),
    ("patterns", "Top patterns", "patterns", lambda d: d,
     ["signature", "category", "occurrence_count", "session_count", "tokens_total", "confidence_score", "status"]),
    ("context", "Context efficiency (estimate)", "context", lambda d: d["sessions"] + d["offenders"],
     ["session_id", "loaded_tokens", "carry_tokens", "efficiency", "waste_tokens", "tool_name", "target", "tokens"]),
    ("routing", "Routing: decisions, fidelity, savings", "routing", lambda d: d["by_rule"],
     ["rule", "basis", "decisions", "raw_tokens", "compact_tokens", "net_tokens", "net_usd", "fidelity"]),
    ("recommendations", "Recommendations", "recommendations", lambda d: d["rows"],
     None),
    ("dead_letters", "Dead letters", "dead_letters", lambda d: d["by_reason"], ["reason", "letters", "last"]),
]


def page(figures: dict[str, Any], made: dict[str, Path], now: datetime, db: str) -> str:
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>outloop report</title>"
             f"<style>body{{font:14px system-ui,sans-serif;max-width:1000px;margin:auto}}"
             f"td,th{{text-align:left;padding:2px 6px;border-bottom:1px solid #ddd;font-size:12px}}"
             f".note{{color:#666}}</style></head><body><h1>outloop report</h1>"
             f"<p class=note>{html.escape(db)}, written {html.escape(now.isoformat()[:19])}Z</p>"]
    for name, title, prefix, rows, columns in SECTIONS:
        parts.append(f"<h2 id={name}>{html.escape(title)}</h2>")
        answer = figures.get(name)
        if answer is None:
            parts.append(f"<p class=note>not available: {html.escape(str(figures.get(name + '_error')))}</p>")
            continue
        for chart, path in made.items():
            if chart.startswith(prefix):
                parts.append(f'<figure><img src="{path.name}" alt="{chart}" width={CHART_PX[0]} '
                             f'height={CHART_PX[1]}><figcaption>{path.name}</figcaption></figure>')
        data = rows(answer)
        if name == "quota":  # the dashboard's note: when the windows are assessed, on how many records
            parts.append(f"<p class=note>assessed {html.escape(str(answer.get('as_of')))}; "
                         f"{answer.get('usage_records')} usage records; forecasts are estimates</p>")
        if name == "recommendations" and not data:
            parts.append(f"<p class=note>{html.escape(answer['note'])}</p>")
            continue
        parts.append(_table(data, columns or (list(data[0]) if data else [])))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(query: dashdata.Query, out: Path, now: datetime, config: Any, db: str = "") -> dict[str, Path]:
    """Write ``out/index.html`` and the charts; returns the charts by name (the page names each)."""
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    for name in ("quota", *dashdata.PANELS):
        answer = dashdata.panel(name, query, now, config)
        figures[name] = answer.get("data")
        figures[name + "_error"] = answer.get("error")
    made = charts(figures, out)
    (out / "index.html").write_text(page(figures, made, now, db), encoding="utf-8")
    return made
