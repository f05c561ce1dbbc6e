"""Frozen settings, read once from ``OUTLOOP_*`` environment variables (one place for every name).

The README's settings table lists these with the same defaults (checked by tests/unit/test_docs.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_HOME = Path(os.path.expanduser("~")) / ".outloop"
# The consumer session timeout unless OUTLOOP_SESSION_TIMEOUT sets one: the least a Kafka broker
# accepts by default (group.min.session.timeout.ms). It is how long a killed worker keeps its
# partitions, and Tansu holds a new group's first join for half of it: 3 s of every start (10 s, the
# former default, held 5 s).
DEFAULT_SESSION_TIMEOUT = 6.0

# name -> (default as text, description). The default "" means "unset".
SETTINGS_DOC: dict[str, tuple[str, str]] = {
    "OUTLOOP_HOME": ("~/.outloop", "state folder: spool, database, broker log"),
    "OUTLOOP_BROKER": ("", "Kafka bootstrap servers; empty starts the embedded Tansu broker"),
    "OUTLOOP_DB": ("$OUTLOOP_HOME/outloop.duckdb", "DuckDB file owned by the worker"),
    "OUTLOOP_SPOOL": ("$OUTLOOP_HOME/spool", "hook spool folder"),
    "OUTLOOP_SPOOL_FSYNC": ("0", "1 makes the hook fsync each spooled event (+~0.7 ms per tool call)"),
    "OUTLOOP_TOPIC_PREFIX": ("outloop", "prefix of every topic name"),
    "OUTLOOP_PARTITIONS": ("4", "partition count of every session-scoped topic"),
    "OUTLOOP_APP_ID": ("outloop", "Faust application id (consumer group)"),
    "OUTLOOP_HTTP_HOST": ("127.0.0.1", "address of the worker's HTTP endpoint"),
    "OUTLOOP_HTTP_PORT": ("6066", "port of the worker's HTTP endpoint (0 picks a free one)"),
    "OUTLOOP_BATCH_SIZE": ("2000", "events an agent folds per batch"),
    "OUTLOOP_BATCH_WITHIN": ("0.1", "seconds an agent waits to fill a batch"),
    "OUTLOOP_SINK_BATCH": ("5000", "rows the DuckDB sink writes per transaction at most"),
    "OUTLOOP_DB_MEMORY": ("128MB", "DuckDB memory limit of the sink process (beyond it DuckDB spills to disk; a write "
                           "that still runs out doubles it, up to half the RAM, logged)"),
    "OUTLOOP_REBALANCE_TIMEOUT": ("10", "consumer rebalance timeout, seconds"),
    "OUTLOOP_SESSION_TIMEOUT": ("", "consumer session timeout, seconds: a worker that stops heartbeating (killed) "
                                "leaves its group after it, and Tansu holds a new group's first join for half of "
                                "it; empty: 6, the least a Kafka broker accepts by default"),
    "OUTLOOP_LEAVE_GROUP": ("0", "1 makes a stopping worker leave its consumer group at once (LeaveGroup); "
                            "0 lets the broker evict it after the session timeout, see README"),
    "OUTLOOP_PRICES": ("", "path of a JSON price table overriding the built-in one"),
    "OUTLOOP_CHARS_PER_TOKEN": ("4", "characters per token of tool output in the context-efficiency figures "
                                "(docs/context.md); 1-8, else 4"),
    "OUTLOOP_LOG_LEVEL": ("info", "worker log level"),
    "OUTLOOP_LOG_MAX_MB": ("20", "size (MB) past which `outloop up` rotates each log file of $OUTLOOP_HOME/logs "
                           "(copy to <name>.1, truncate); 0 never rotates"),
    "OUTLOOP_LOG_BACKUPS": ("3", "rotated copies kept of each log file (<name>.1 is the newest)"),
    "OUTLOOP_BROKER_MAX_RSS_MB": ("512", "embedded broker RSS (MB) above which `outloop up` recycles it once the "
                                  "pipeline is drained; 0 never recycles"),
    "OUTLOOP_BROKER_MAX_RESTARTS": ("10", "unexpected embedded-broker and worker exits within 10 minutes that "
                                    "`outloop up` restarts before giving up"),
    "OUTLOOP_STALL_RESTART": ("120", "seconds the worker may hold no partition while the embedded broker is up "
                              "before `outloop up` restarts the broker (a consumer group that never settles); "
                              "0 never"),
    "OUTLOOP_JOURNAL_MAX_AGE": ("86400", "seconds a forwarded hook event stays in the spool's sent journal at most"),
    "OUTLOOP_JOURNAL_MAX_MB": ("512", "size (MB) of the spool's sent journal at most, oldest pruned first; "
                                      "0 deletes forwarded events at once (no journal)"),
    "OUTLOOP_ROUTES": ("$OUTLOOP_HOME/routes.json", "the user routing rules file"),
    "OUTLOOP_ROUTER": ("1", "0 makes the hook shim skip the router (read by the shim itself)"),
    "OUTLOOP_ROUTE_BUDGET_MS": ("150", "the hook's hard budget for the router's answer, from its start (ms)"),
    "OUTLOOP_ROUTER_SOCKET": ("$OUTLOOP_HOME/router.sock", "the router's Unix socket"),
    "OUTLOOP_JOURNAL_CONFIRM": ("300", "seconds between checks that prune the journal entries proven in DuckDB "
                                      "(a flush marker); 0 never checks"),
    "OUTLOOP_PROJECTS": ("~/.claude/projects", "Claude Code projects folder whose transcripts `outloop up` follows "
                         "(with those hook payloads name); `off` follows only the ones hooks name"),
    "OUTLOOP_TAIL_POLL": ("0.5", "seconds between two looks of the transcript tailer at the files it follows"),
    "OUTLOOP_HTTP_ALLOWED_HOSTS": ("", "comma-separated Host names the worker's HTTP endpoint answers besides the "
                                   "loopback names and the address it binds (every other Host gets 403)"),
    "OUTLOOP_QUERY_TIMEOUT": ("30", "seconds a query may run in the sink before it is cancelled"),
    "OUTLOOP_DISCOVER_INTERVAL": ("604800", "seconds between two discovery runs of the worker (ROI-ranked "
                                  "recommendations, drafts in $OUTLOOP_HOME/drafts, docs/discovery.md); 0 never"),
    "OUTLOOP_DISCOVERY_CONFIG": ("$OUTLOOP_HOME/discovery.toml", "discovery thresholds and build costs overriding the "
                                 "defaults (used when the file exists)"),
    "OUTLOOP_QUERY_MAX_ROWS": ("100000", "rows a query through the worker returns at most (the reply says when it "
                               "cut)"),
    "OUTLOOP_DASHBOARD_HOST": ("127.0.0.1", "address the dashboard of `outloop up` binds (loopback by default)"),
    "OUTLOOP_DASHBOARD_PORT": ("6067", "port of the dashboard of `outloop up` (0 picks a free one, -1 serves none)"),
    "OUTLOOP_START_TIMEOUT": ("30", "seconds a command waits for the broker, the worker and the router to answer "
                              "when it starts them"),
}


@dataclass(frozen=True)
class Settings:
    home: Path
    broker: str | None
    db: Path
    spool: Path
    topic_prefix: str
    partitions: int
    app_id: str
    http_host: str
    http_port: int
    batch_size: int
    batch_within: float
    sink_batch: int
    db_memory: str
    rebalance_timeout: float
    prices: Path | None
    log_level: str
    broker_max_rss_mb: float = 512.0
    broker_max_restarts: int = 10
    stall_restart: float = 120.0
    journal_max_age: float = 86400.0
    journal_max_mb: float = 512.0
    journal_confirm: float = 300.0
    leave_group: bool = False
    session_timeout: float | None = None  # None: DEFAULT_SESSION_TIMEOUT, see consumer_session_timeout
    log_max_mb: float = 20.0
    log_backups: int = 3
    projects: Path | None = None  # None: the tailer follows only the transcripts hook payloads name
    tail_poll: float = 0.5
    http_allowed_hosts: tuple[str, ...] = ()
    query_timeout: float = 30.0
    query_max_rows: int = 100_000
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 6067  # 0: a free port; -1: no dashboard
    discover_interval: float = 604_800.0
    discovery_config: Path | None = None  # None: $OUTLOOP_HOME/discovery.toml when it exists
    start_timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            value = env.get(name, "")
            return value if value != "" else SETTINGS_DOC[name][0]

        def flag(value: str, name: str) -> bool:
            if value not in ("0", "1"):
                raise ValueError(f"{name} must be 0 or 1, not {value!r}")
            return value == "1"

        home = Path(os.path.expanduser(env.get("OUTLOOP_HOME") or str(DEFAULT_HOME)))
        db = env.get("OUTLOOP_DB") or str(home / "outloop.duckdb")
        spool = env.get("OUTLOOP_SPOOL") or str(home / "spool")
        prices = env.get("OUTLOOP_PRICES") or None
        session = env.get("OUTLOOP_SESSION_TIMEOUT") or None
        projects = get("OUTLOOP_PROJECTS")
        try:
            values: dict[str, object] = dict(
                home=home,
                broker=env.get("OUTLOOP_BROKER") or None,
                db=Path(os.path.expanduser(db)),
                spool=Path(os.path.expanduser(spool)),
                topic_prefix=get("OUTLOOP_TOPIC_PREFIX"),
                partitions=int(get("OUTLOOP_PARTITIONS")),
                app_id=get("OUTLOOP_APP_ID"),
                http_host=get("OUTLOOP_HTTP_HOST"),
                http_port=int(get("OUTLOOP_HTTP_PORT")),
                batch_size=int(get("OUTLOOP_BATCH_SIZE")),
                batch_within=float(get("OUTLOOP_BATCH_WITHIN")),
                sink_batch=int(get("OUTLOOP_SINK_BATCH")),
                db_memory=get("OUTLOOP_DB_MEMORY"),
                rebalance_timeout=float(get("OUTLOOP_REBALANCE_TIMEOUT")),
                session_timeout=float(session) if session else None,
                leave_group=flag(get("OUTLOOP_LEAVE_GROUP"), "OUTLOOP_LEAVE_GROUP"),
                prices=Path(prices) if prices else None,
                log_level=get("OUTLOOP_LOG_LEVEL"),
                broker_max_rss_mb=float(get("OUTLOOP_BROKER_MAX_RSS_MB")),
                broker_max_restarts=int(get("OUTLOOP_BROKER_MAX_RESTARTS")),
                stall_restart=float(get("OUTLOOP_STALL_RESTART")),
                journal_max_age=float(get("OUTLOOP_JOURNAL_MAX_AGE")),
                journal_max_mb=float(get("OUTLOOP_JOURNAL_MAX_MB")),
                journal_confirm=float(get("OUTLOOP_JOURNAL_CONFIRM")),
                log_max_mb=float(get("OUTLOOP_LOG_MAX_MB")),
                log_backups=int(get("OUTLOOP_LOG_BACKUPS")),
                projects=None if projects == "off" else Path(os.path.expanduser(projects)),
                tail_poll=float(get("OUTLOOP_TAIL_POLL")),
                http_allowed_hosts=tuple(h.strip() for h in get("OUTLOOP_HTTP_ALLOWED_HOSTS").split(",") if h.strip()),
                query_timeout=float(get("OUTLOOP_QUERY_TIMEOUT")),
                query_max_rows=int(get("OUTLOOP_QUERY_MAX_ROWS")),
                dashboard_host=get("OUTLOOP_DASHBOARD_HOST"),
                dashboard_port=int(get("OUTLOOP_DASHBOARD_PORT")),
                discover_interval=float(get("OUTLOOP_DISCOVER_INTERVAL")),
                discovery_config=Path(os.path.expanduser(env["OUTLOOP_DISCOVERY_CONFIG"]))
                if env.get("OUTLOOP_DISCOVERY_CONFIG") else None,
                start_timeout=float(get("OUTLOOP_START_TIMEOUT")),
            )
        except ValueError as exc:
            raise ValueError(f"bad OUTLOOP_* setting: {exc}") from exc
        values.update(overrides)
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.partitions < 1:
            raise ValueError("OUTLOOP_PARTITIONS must be at least 1")
        if min(settings.broker_max_rss_mb, settings.broker_max_restarts, settings.journal_max_age,
               settings.journal_max_mb, settings.journal_confirm, settings.stall_restart, settings.log_max_mb,
               settings.log_backups) < 0:
            raise ValueError("OUTLOOP_BROKER_*, OUTLOOP_STALL_RESTART, OUTLOOP_JOURNAL_* and OUTLOOP_LOG_* settings "
                             "must not be negative")
        if settings.tail_poll <= 0:
            raise ValueError("OUTLOOP_TAIL_POLL must be more than 0 seconds")
        if settings.query_timeout <= 0 or settings.query_max_rows < 1:
            raise ValueError("OUTLOOP_QUERY_TIMEOUT must be positive and OUTLOOP_QUERY_MAX_ROWS at least 1")
        if settings.start_timeout <= 0:
            raise ValueError("OUTLOOP_START_TIMEOUT must be more than 0 seconds")
        if settings.session_timeout is not None and settings.session_timeout < 1.0:
            raise ValueError("OUTLOOP_SESSION_TIMEOUT must be at least 1 second")
        return settings

    @property
    def discovery_config_path(self) -> Path | None:
        """The discovery configuration file in use: OUTLOOP_DISCOVERY_CONFIG, else $OUTLOOP_HOME/discovery.toml
        when it exists, else None (the defaults)."""
        if self.discovery_config is not None:
            return self.discovery_config
        own = self.home / "discovery.toml"
        return own if own.exists() else None

    @property
    def consumer_session_timeout(self) -> float:
        """Seconds: OUTLOOP_SESSION_TIMEOUT, else :data:`DEFAULT_SESSION_TIMEOUT`."""
        return self.session_timeout if self.session_timeout is not None else DEFAULT_SESSION_TIMEOUT

    @property
    def consumer_heartbeat_interval(self) -> float:
        """Seconds between heartbeats: 1, or a third of a session timeout shorter than 3 s."""
        return min(1.0, self.consumer_session_timeout / 3)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        out = {
            "OUTLOOP_HOME": str(self.home),
            "OUTLOOP_DB": str(self.db),
            "OUTLOOP_SPOOL": str(self.spool),
            "OUTLOOP_TOPIC_PREFIX": self.topic_prefix,
            "OUTLOOP_PARTITIONS": str(self.partitions),
            "OUTLOOP_APP_ID": self.app_id,
            "OUTLOOP_HTTP_HOST": self.http_host,
            "OUTLOOP_HTTP_PORT": str(self.http_port),
            "OUTLOOP_BATCH_SIZE": str(self.batch_size),
            "OUTLOOP_BATCH_WITHIN": str(self.batch_within),
            "OUTLOOP_SINK_BATCH": str(self.sink_batch),
            "OUTLOOP_DB_MEMORY": self.db_memory,
            "OUTLOOP_REBALANCE_TIMEOUT": str(self.rebalance_timeout),
            "OUTLOOP_SESSION_TIMEOUT": "" if self.session_timeout is None else str(self.session_timeout),
            "OUTLOOP_LEAVE_GROUP": "1" if self.leave_group else "0",
            "OUTLOOP_LOG_LEVEL": self.log_level,
            "OUTLOOP_BROKER_MAX_RSS_MB": str(self.broker_max_rss_mb),
            "OUTLOOP_BROKER_MAX_RESTARTS": str(self.broker_max_restarts),
            "OUTLOOP_STALL_RESTART": str(self.stall_restart),
            "OUTLOOP_JOURNAL_MAX_AGE": str(self.journal_max_age),
            "OUTLOOP_JOURNAL_MAX_MB": str(self.journal_max_mb),
            "OUTLOOP_JOURNAL_CONFIRM": str(self.journal_confirm),
            "OUTLOOP_LOG_MAX_MB": str(self.log_max_mb),
            "OUTLOOP_LOG_BACKUPS": str(self.log_backups),
            "OUTLOOP_PROJECTS": "off" if self.projects is None else str(self.projects),
            "OUTLOOP_TAIL_POLL": str(self.tail_poll),
            "OUTLOOP_HTTP_ALLOWED_HOSTS": ",".join(self.http_allowed_hosts),
            "OUTLOOP_QUERY_TIMEOUT": str(self.query_timeout),
            "OUTLOOP_QUERY_MAX_ROWS": str(self.query_max_rows),
            "OUTLOOP_DASHBOARD_HOST": self.dashboard_host,
            "OUTLOOP_DASHBOARD_PORT": str(self.dashboard_port),
            "OUTLOOP_DISCOVER_INTERVAL": str(self.discover_interval),
            "OUTLOOP_DISCOVERY_CONFIG": "" if self.discovery_config is None else str(self.discovery_config),
            "OUTLOOP_START_TIMEOUT": str(self.start_timeout),
        }
        if self.broker:
            out["OUTLOOP_BROKER"] = self.broker
        if self.prices:
            out["OUTLOOP_PRICES"] = str(self.prices)
        return out
