"""``outloop replay``: import files, publish every event, run the topology until all of it is
materialized in DuckDB, then report what the database holds for the replayed sessions.

"Materialized" is decided by flush markers, not by guessing: after the last event, one marker is
published to every partition of both input topics; the agents forward it behind everything that
partition produced, and the sink records it. When every output partition has shown the marker,
every event published before it is in DuckDB.

A replay runs a stack of its own beside whatever else runs (``outloop up`` included): its worker
listens on a free HTTP port and keeps its logs and Faust's data folder in a private temporary home,
removed when the replay ends (kept, and named, when it fails); the broker and the worker it starts
die with it, whatever stops it (see ``outloop.lifetime``). Only the database is shared, and a
database a running worker owns is refused at once: it is that worker's to write.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from outloop.client import WorkerClient, owns
from outloop.runtime import Stack, StackError
from outloop.schemas.events import Envelope, EventType, Flush
from outloop.schemas.topics import TopicCatalogue
from outloop.streams.importers import ImportStats
from outloop.streams.importers.detect import first_usable, iter_paths
from outloop.streams.settings import Settings

# The consumer session timeout of a replay on a broker of its own, unless OUTLOOP_SESSION_TIMEOUT
# sets one: nobody else is in its group, so the timeout guards against nothing, but the embedded
# broker holds a new group's first join for half of it (1 s instead of 3 s at the default 6 s). The
# tests run every worker with it. An external broker keeps the default: Kafka refuses a session
# timeout under 6 s unless configured to accept one.
PRIVATE_BROKER_SESSION_TIMEOUT = 2.0

SESSION_OUTPUTS = ("hook_events", "tool_calls", "usage", "dead_letters", "routing_decisions", "routing_rules",
                   "adw_tools", "api_messages", "routing_savings",
                   "context_windows")
WORKFLOW_OUTPUTS = ("workflow_runs", "dead_letters")


@dataclass
class ReplaySummary:
    files: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # files skipped, by reason
    damaged_lines: int = 0
    damaged_by_file: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # records dropped on purpose (duplicates...)
    sessions: int = 0
    tool_calls: int = 0
    tool_calls_by_source: dict[str, int] = field(default_factory=dict)
    orphan_results: int = 0  # tool results whose tool_use is not in the input: kept, not counted as tool calls
    api_messages: int = 0
    usage_records: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    unpriced_by_model: dict[str, int] = field(default_factory=dict)  # usage records without a price
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    routing: dict[str, Any] | None = None  # --route-mode shadow: docs/routing-savings.md
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _flush_envelopes(marker: str, partitions: int) -> list[Envelope]:
    return [
        Envelope(id=f"flush:{marker}:{p}", type=EventType.FLUSH, source="replay", subject=f"flush-{p}",
                 data=Flush(marker=marker, partitions=partitions).model_dump())
        for p in range(partitions)
    ]


def publish_markers(pub: Any, cat: TopicCatalogue, marker: str, partitions: int) -> int:
    """Send a flush marker to every partition of both input topics; returns how many output
    partitions must show it."""
    for topic, suffix in ((cat.events.name, ""), (cat.workflows.name, ":wf")):
        for env in _flush_envelopes(marker + suffix, partitions):
            p = int(env.subject.rsplit("-", 1)[1])
            pub.raw(topic, env.subject.encode(), env.model_dump_json().encode(), partition=p)
    pub.flush()
    return partitions * (len(SESSION_OUTPUTS) + len(WORKFLOW_OUTPUTS))


def wait_for_marker(client: WorkerClient, marker: str, expected: int, timeout: float,
                    on_progress: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        _, rows = client.query("SELECT count(*) FROM flush_markers WHERE marker = ? OR marker = ?",
                               [marker, marker + ":wf"])
        seen = int(rows[0][0])
        if on_progress:
            on_progress(seen)
        if seen >= expected:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {seen}/{expected} output partitions confirmed after {timeout:.0f}s")
        time.sleep(0.1)


class Queryable(Protocol):
    def query(self, sql: str, params: Any = None) -> tuple[list[str], list[list[Any]]]: ...


def summarize(client: Queryable, sessions: list[str], summary: ReplaySummary) -> None:
    """Fill ``summary`` from what the database holds for ``sessions`` (through the worker, or any
    reader with the same ``query``)."""
    ids = [sessions]
    _, rows = client.query(
        "SELECT source, count(*) FROM tool_calls WHERE tool_name IS NOT NULL AND session_id IN "
        "(SELECT unnest(?::VARCHAR[])) GROUP BY source ORDER BY source", ids)
    summary.tool_calls_by_source = {r[0]: int(r[1]) for r in rows}
    summary.tool_calls = sum(summary.tool_calls_by_source.values())
    _, rows = client.query(
        "SELECT count(*) FROM tool_calls WHERE tool_name IS NULL AND session_id IN (SELECT unnest(?::VARCHAR[]))", ids)
    summary.orphan_results = int(rows[0][0])
    _, rows = client.query("SELECT count(*) FROM api_messages WHERE session_id IN (SELECT unnest(?::VARCHAR[]))", ids)
    summary.api_messages = int(rows[0][0])
    _, rows = client.query(
        "SELECT count(*), coalesce(sum(input_tokens),0), coalesce(sum(output_tokens),0), "
        "coalesce(sum(cache_read_input_tokens),0), coalesce(sum(cache_creation_input_tokens),0), sum(cost_usd) "
        "FROM usage WHERE session_id IN (SELECT unnest(?::VARCHAR[]))", ids)
    n, inp, out, cread, cwrite, cost = rows[0]
    summary.usage_records = int(n)
    summary.tokens = {"input": int(inp), "output": int(out), "cache_read": int(cread),
                      "cache_creation": int(cwrite), "total": int(inp) + int(out) + int(cread) + int(cwrite)}
    summary.cost_usd = round(float(cost), 6) if cost is not None else None
    _, rows = client.query(
        "SELECT coalesce(model, '(none)'), count(*) FROM usage WHERE cost_usd IS NULL "
        "AND session_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1 ORDER BY 2 DESC, 1", ids)
    summary.unpriced_by_model = {r[0]: int(r[1]) for r in rows}
    _, rows = client.query("SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason")
    summary.dead_letters_by_reason = {r[0]: int(r[1]) for r in rows}


class NothingToImport(ValueError):
    """No file under the given paths is a transcript, hook-log capture or trajectory."""


def check_inputs(paths: list[Path]) -> None:
    """Raise :class:`NothingToImport` (saying what was found instead) unless at least one file under
    ``paths`` can be imported: a replay with nothing to read starts nothing and creates no database."""
    stats = ImportStats()
    if first_usable(paths, stats) is not None:
        return
    where = ", ".join(map(str, paths))
    skipped = stats.skipped_files
    if not skipped:
        raise NothingToImport(f"nothing to import: no files in {where}")
    reasons = Counter(skipped.values())
    why = "; ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    files = "the file" if len(skipped) == 1 else f"all {len(skipped)} files"
    raise NothingToImport(f"nothing to import in {where}: {files} skipped ({why}); outloop reads Claude Code "
                          f"transcripts (.jsonl), hook-log captures and chat.json (.json), and mini-swe-agent "
                          f"trajectories (.traj.json)")


def replay_settings(settings: Settings, home: Path) -> Settings:
    """The settings a replay runs its stack with: ``settings`` with the private ``home`` (logs, Faust's
    data folder), a free HTTP port (the configured one may be a running worker's), and the short
    session timeout when the replay starts a broker of its own and no session timeout was set."""
    settings = replace(settings, home=home, http_port=0)
    if settings.broker is None and settings.session_timeout is None:
        return replace(settings, session_timeout=PRIVATE_BROKER_SESSION_TIMEOUT)
    return settings


def refuse_a_running_workers_db(settings: Settings) -> None:
    """A StackError when the worker on the configured HTTP port owns ``settings.db`` (its sink holds
    the file: the replay's own worker could not open it)."""
    if not settings.http_port:
        return
    health = WorkerClient(settings.http_host, settings.http_port).health()
    if health is not None and owns(health, settings.db):
        raise StackError(f"{settings.db} is the database of the running worker (pid {health.get('pid')}); "
                         "replay into another file with --db FILE, or stop 'outloop up' first")


@contextlib.contextmanager
def private_home() -> Iterator[Path]:
    """A temporary home for a replay's stack (its logs, Faust's data folder), removed on the way
    out, unless the stack failed (a StackError or TimeoutError, whose message then names it)."""
    home = Path(tempfile.mkdtemp(prefix="outloop-replay-"))
    keep = False
    try:
        yield home
    except TimeoutError as exc:
        keep = True
        raise TimeoutError(f"{exc}; the replay's logs are kept in {home / 'logs'}") from None
    except StackError:  # its message names the worker log, in this folder
        keep = True
        raise
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def measured_runs(paths: list[Path]) -> list[Envelope]:
    """The live savings of the enforced runs the transcripts hold (``outloop.router.measure``)."""
    from outloop.router.measure import measure_paths

    return measure_paths(paths)


def replay(paths: list[Path], settings: Settings, *, console: Console | None = None,
           show_progress: bool = False, timeout: float = 600.0, route_mode: str | None = None) -> ReplaySummary:
    from outloop.streams.publisher import Publisher

    started = time.monotonic()
    console = console or Console(stderr=True)
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(map(str, missing))}")
    check_inputs(paths)
    refuse_a_running_workers_db(settings)
    stats = ImportStats()
    summary = ReplaySummary()
    sessions: set[str] = set()
    by_type: Counter[str] = Counter()
    cat = TopicCatalogue(prefix=settings.topic_prefix)
    with private_home() as home, Stack(replay_settings(settings, home), die_with_parent=True) as stack, Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not show_progress, transient=True,
    ) as progress:
        s = stack.settings
        assert s.broker is not None
        publishing = progress.add_task("publishing events", total=None)
        with Publisher(s.broker, catalogue=cat, partitions=s.partitions) as pub:
            for env in iter_paths(paths, stats, messages=True):
                pub.envelope(env)
                by_type[env.type.value] += 1
                if not env.type.value.startswith("workflow."):
                    sessions.add(env.subject)
                progress.advance(publishing)
            for env in measured_runs(paths):  # runs through the runner, measured from their logs
                pub.envelope(env)
                by_type[env.type.value] += 1
            pub.flush()
            marker = uuid.uuid4().hex
            expected = publish_markers(pub, cat, marker, s.partitions)
        progress.update(publishing, total=progress.tasks[publishing].completed)
        waiting = progress.add_task("materializing", total=expected)
        wait_for_marker(stack.client, marker, expected, timeout,
                        on_progress=lambda seen: progress.update(waiting, completed=seen))
        summarize(stack.client, sorted(sessions), summary)
        if route_mode == "shadow":
            progress.update(waiting, visible=False)
            routing = progress.add_task("deciding and pricing every tool call (shadow)", total=None)
            summary.routing = shadow_routing(paths, stack, cat, timeout, sorted(sessions))
            progress.update(routing, total=1, completed=1)
    summary.files = dict(stats.files_by_format)
    summary.events = dict(sorted(by_type.items()))
    summary.rejected = dict(Counter(stats.skipped_files.values()))
    summary.damaged_lines = stats.damaged_total
    summary.damaged_by_file = dict(stats.damaged_by_file)
    summary.dropped = dict(stats.notes)
    summary.sessions = len(sessions)
    summary.elapsed_s = round(time.monotonic() - started, 2)
    return summary


def shadow_routing(paths: list[Path], stack: Stack, cat: TopicCatalogue, timeout: float,
                   sessions: list[str]) -> dict[str, Any]:
    """Decide every recorded tool call with the rules in force and the pattern confidences the replay
    just materialized, price what enforcing the decisions would have saved, and store each decision
    (with its fidelity and saving) in ``routing_decisions`` and ``cost_savings_log`` through the pipeline:
    ids are stable, so a second replay of the same files changes no row."""
    from outloop.agents.pricing import active_table
    from outloop.router.rules import load
    from outloop.shadow_replay import decision_records, operations_decided, saving_records, shadow_section
    from outloop.streams.publisher import Publisher

    _, rows = stack.client.query("SELECT signature, confidence_score, avg_output_tokens FROM operation_patterns")
    patterns = {str(r[0]): int(round(float(r[1] or 0))) for r in rows}
    sizes = {str(r[0]): float(r[2]) for r in rows if r[2] is not None}
    rules = load()
    section, routed = shadow_section(paths, rules, patterns, active_table(), sizes)
    _, calls = stack.client.query(
        "SELECT command, category FROM tool_calls WHERE category IN ('test', 'build') AND command IS NOT NULL "
        "AND session_id IN (SELECT unnest(?::VARCHAR[]))", [sessions])
    section["test_build_operations"] = operations_decided([(r[0], r[1]) for r in calls], rules, patterns, sizes)
    s = stack.settings
    assert s.broker is not None
    with Publisher(s.broker, catalogue=cat, partitions=s.partitions) as pub:
        for env in [*decision_records(routed), *saving_records(routed)]:
            pub.envelope(env)
        pub.flush()
        marker = uuid.uuid4().hex
        expected = publish_markers(pub, cat, marker, s.partitions)
    wait_for_marker(stack.client, marker, expected, timeout)
    section["stored_decisions"] = len(routed)
    return section
