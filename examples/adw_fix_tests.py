"""An example ADW (AI developer workflow) that fixes a failing test, using outloop as an ADW does.

Run it beside a running ``outloop up`` (same ``OUTLOOP_*`` variables)::

    outloop up &                      # broker, worker, router, ...
    python examples/adw_fix_tests.py  # a small project with a failing test in a temporary folder

It goes through a whole run and prints each step: a budget check, ``workflow.started``, the phases
``test`` / ``fix`` / ``verify``, each test command first asked of the router (``route``) and then run
through outloop's runner (``run``: the compact result, the full log kept), every tool result published,
``workflow.ended`` with its totals, the reservation released; then (up to ``--wait`` seconds, 30 by default;
``--wait 0`` skips it) it waits until the run,
its tool calls and the router's decisions are in outloop's database and prints them, with the routing
decisions its subscription received. The "fix" is a deterministic edit, not a model call, so the run's
token totals are zero (an ADW that calls a model adds each call's usage with ``run.add_usage``).

Exit status 0 when the tests pass at the end (and, unless ``--wait 0``, the run was found in the database)."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from outloop import OutloopClient, QueryError
from outloop.client_events import WorkflowRun
from outloop.client_watch import Decision

BUGGY = "def add(a, b):\n    return a - b\n"
TEST = ("import unittest\n\nfrom calc import add\n\n\nclass AddTest(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n\n"
        "if __name__ == '__main__':\n    unittest.main()\n")


def make_project(where: Path) -> Path:
    """A tiny project whose one test fails (``add`` subtracts)."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "calc.py").write_text(BUGGY, encoding="utf-8")
    (where / "test_calc.py").write_text(TEST, encoding="utf-8")
    return where


def say(what: str) -> None:
    print(f"adw: {what}", flush=True)


def run_tests(client: OutloopClient, run: WorkflowRun, project: Path, step: str) -> int:
    """Ask the router about the test command, run it through outloop's runner, publish the result."""
    command = f"{shlex.quote(sys.executable)} -m unittest -q test_calc"
    tool_use_id = f"{run.run_id}:{step}"
    decision = client.route(command, cwd=str(project), session_id=run.session_id or run.run_id,
                            tool_use_id=tool_use_id)
    applied = "applied" if decision.command != command else "not applied: the command runs as it is"
    say(f"route: {decision.action} by rule {decision.rule} in mode {decision.mode} ({applied}): "
        f"{decision.reason or '-'}")
    if decision.action == "deny":  # the router's loop guard: do what it says instead of running again
        say(f"denied, not run: {decision.reason}")
        return 1
    started = datetime.now(UTC)
    result = client.run(command, cwd=str(project))
    ended = datetime.now(UTC)
    say(f"run: exit {result.exit_code}, {result.raw_bytes} bytes of output, {result.printed_bytes} printed "
        f"({result.kind or 'unchanged'}), failures {result.failures}, log {result.log_path}")
    published = run.tool_result("Bash", {"command": command}, output=result.summary,
                                is_error=result.exit_code != 0, started_at=started, ended_at=ended,
                                tool_use_id=tool_use_id)
    say(f"tool result published: {published}")
    return result.exit_code


def fix(run: WorkflowRun, project: Path) -> None:
    """The deterministic fix, published as the Edit tool result it is."""
    path = project / "calc.py"
    old, new = "return a - b", "return a + b"
    started = datetime.now(UTC)
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    published = run.tool_result("Edit", {"file_path": str(path), "old_string": old, "new_string": new},
                                output=f"The file {path} has been updated.", started_at=started,
                                ended_at=datetime.now(UTC), tool_use_id=f"{run.run_id}:fix")
    say(f"edited {path.name}: {old!r} -> {new!r}; tool result published: {published}")


def wait_for_run(client: OutloopClient, run_id: str, timeout: float) -> dict[str, Any] | None:
    """Poll the database until the ended run is there (the pipeline takes about a second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rows = client.query("SELECT * FROM workflow_runs WHERE run_id = ? AND ended_at IS NOT NULL", [run_id])
            if rows:
                return rows[0]
        except QueryError as exc:
            say(f"query not answered yet: {exc}")
        time.sleep(0.5)
    return None


def report(client: OutloopClient, run_id: str, session: str, seen: list[Decision]) -> None:
    calls = client.query("SELECT tool_name, status, command, file_path, output_bytes, signature FROM tool_calls "
                         "WHERE session_id = ? ORDER BY started_at", [session])
    for c in calls:
        say(f"  tool call: {c['tool_name']} {c['status']} {c['signature']} ({c['output_bytes']} bytes)")
    events = client.query('SELECT type, "at" FROM workflow_events WHERE run_id = ? ORDER BY "at"', [run_id])
    say(f"  workflow events: {[e['type'] for e in events]}")
    decided = client.query("SELECT rule, mode, action FROM routing_decisions WHERE session_id = ?", [session])
    say(f"  routing decisions stored: {len(decided)}; received by the subscription: "
        f"{sum(1 for d in seen if d.row.get('session_id') == session)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, help="where to create the example project (default: a temporary folder)")
    ap.add_argument("--run-id", help="the run's id (default: a fresh UUIDv7)")
    ap.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the run in the database (0: don't)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="adw-") as tmp, OutloopClient.from_settings() as client:
        project = make_project(args.project or Path(tmp) / "calc")
        seen: list[Decision] = []
        sub = client.subscribe(("routing",), seen.append)  # the router's decisions, as they are stored
        budget = client.check_budget("fix-tests", 20_000, on_error="allow")
        say(f"budget: {budget['decision']} ({'; '.join(budget.get('reasons') or [])})")
        if budget["decision"] == "deny":
            return 2
        run = client.start_workflow("fix-tests", run_id=args.run_id, attributes={"project": project.name})
        say(f"workflow started: run {run.run_id} (published: {run.started})")
        with run:
            run.phase("test")
            before = run_tests(client, run, project, "test")
            run.phase("fix")
            if before != 0:
                fix(run, project)
            run.phase("verify")
            after = run_tests(client, run, project, "verify")
            run.end("succeeded" if after == 0 else "failed")
        say(f"workflow ended: {run.ended}, totals {run.totals} (no model was called); "
            f"events sent {client.events.sent}, dropped {client.events.dropped}")
        if budget.get("id"):
            say(f"budget released: {client.release_budget(budget['id'])}")
        client.events.close()  # everything acknowledged before looking for it
        if args.wait <= 0:
            sub.close()
            return 0 if after == 0 else 1
        stored = wait_for_run(client, run.run_id, args.wait)
        if stored is None:
            say(f"the run did not reach the database within {args.wait:g} s")
            sub.close()
            return 1
        say(f"in the database: run {stored['run_id']} {stored['status']}, phase {stored['phase']}, "
            f"{stored['events']} events")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len([d for d in seen if d.row.get("session_id") == run.run_id]) < 2:
            time.sleep(0.2)
        sub.close()
        report(client, run.run_id, run.run_id, seen)
        return 0 if after == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
