"""``outloop savings``: the net saving of routing decisions (``cost_savings_log``) by rule, day and
session. Every row is one decision with its fidelity and saving; ``basis`` says whether it is an
estimate (shadow replay of a recorded output) or a measurement. What is counted: docs/routing-savings.md.
"""

from __future__ import annotations

from typing import Any

GROUPS = {"rule": "coalesce(rule, '(none)')", "day": "CAST(day AS VARCHAR)", "session": "session_id"}

SQL = """
SELECT {key} AS {name}, basis, count(*) AS decisions, sum(raw_tokens) AS raw_tokens,
       sum(compact_tokens) AS compact_tokens, sum(net_tokens) AS net_tokens, round(sum(net_usd), 6) AS net_usd,
       round(sum(fidelity * fidelity_used) / nullif(sum(CASE WHEN fidelity IS NOT NULL THEN fidelity_used END), 0), 4)
           AS fidelity,
       count(*) FILTER (WHERE fidelity < 1) AS lost
FROM cost_savings_log GROUP BY ALL ORDER BY net_tokens DESC, {name}
"""


def savings_sql(by: str) -> str:
    """The query of ``outloop savings --by BY``; a ValueError for an unknown grouping."""
    if by not in GROUPS:
        raise ValueError(f"--by is one of {', '.join(GROUPS)}, not {by!r}")
    return SQL.format(key=GROUPS[by], name=by)


def records(columns: list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, r, strict=True)) for r in rows]
