"""Workflow budgets: the pre-flight answer (allow / warn / deny, with reasons) for one workflow run, as
a pure function of the estimate, the window's use, the reservations held and the limit.

The estimate is the caller's, else the p90 of the totals of the same workflow's past finished runs
(``estimate_from_history``). An allowed or warned check *reserves* its estimate until the run ends or
the reservation expires; the headroom of the next check is ``limit - used - reserved``. The caller
(the sink, the one writer) runs the checks one at a time in a transaction, so two concurrent checks
cannot both pass on the same headroom.

Rules, with ``L`` the five-hour limit and ``high`` the high-risk threshold (85% by default):

============================================  ========  ====================================
condition                                     decision  reserved
============================================  ========  ====================================
no limit configured                           allow     the estimate (tracked, never denies)
estimate > L - used - reserved                deny      nothing
used + reserved + estimate > high% of L       warn      the estimate
otherwise                                     allow     the estimate
no estimate and no past run                   warn      nothing ("no estimate")
============================================  ========  ====================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetAnswer:
    decision: str  # allow | warn | deny
    reasons: tuple[str, ...]
    estimated_tokens: int | None
    estimate_basis: str  # given | p90 of N past runs | none
    reserve_tokens: int
    headroom_tokens: int | None  # before this check

    def as_dict(self) -> dict[str, object]:
        return {"decision": self.decision, "reasons": list(self.reasons), "estimated_tokens": self.estimated_tokens,
                "estimate_basis": self.estimate_basis, "reserved_tokens": self.reserve_tokens,
                "headroom_tokens": self.headroom_tokens}


def p90(values: Sequence[float]) -> float | None:
    """The 90th percentile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]


def estimate_from_history(estimated: int | None, past_totals: Sequence[int]) -> tuple[int | None, str]:
    if estimated is not None:
        return estimated, "given"
    value = p90(past_totals)
    if value is None:
        return None, "none"
    return round(value), f"p90 of {len(past_totals)} past runs"


def answer(estimated: int | None, basis: str, used: int, reserved: int, limit: int | None,
           high_percent: float = 85.0) -> BudgetAnswer:
    """The decision for one check (see the module's table)."""
    if estimated is None:
        return BudgetAnswer("warn", ("no estimate given and no past run of this workflow",), None, basis, 0,
                            None if limit is None else limit - used - reserved)
    if limit is None:
        return BudgetAnswer("allow", ("no five-hour limit configured (OUTLOOP_QUOTA_FIVE_HOUR_TOKENS)",),
                            estimated, basis, estimated, None)
    headroom = limit - used - reserved
    detail = f"estimate {estimated:,} tokens ({basis}); used {used:,} + reserved {reserved:,} of {limit:,}"
    if estimated > headroom:
        return BudgetAnswer("deny", (f"{detail}: headroom {max(headroom, 0):,} is too small",), estimated, basis, 0,
                            headroom)
    after = 100.0 * (used + reserved + estimated) / limit
    if after > high_percent:
        return BudgetAnswer("warn", (f"{detail}: the window would be at {after:.0f}%",), estimated, basis,
                            estimated, headroom)
    return BudgetAnswer("allow", (f"{detail}: the window would be at {after:.0f}%",), estimated, basis, estimated,
                        headroom)
