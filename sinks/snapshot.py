"""The routing snapshot: what the router component needs from the database, published by the one
writer after each pattern refresh as a JSON file replaced by atomic rename (beside the database),
so that the router never reads DuckDB and never waits on the writer.

Content: ``{"patterns": {signature: confidence_score}, "sizes": {signature: avg_output_tokens},
"rules": {rule: {"decisions": n, "fidelity": mean}}, "quota": the latest throttle decision or null}`` (the
fidelity of decisions whose fidelity was measured; the quota decision is the one the router adds to its
PreToolUse answers).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import duckdb
import orjson

log = logging.getLogger("outloop.sink")


def snapshot_path(db: Path) -> Path:
    return db.with_name(db.name + ".routing.json")


def snapshot(con: duckdb.DuckDBPyConnection) -> bytes:
    patterns = dict(con.execute("SELECT signature, confidence_score FROM operation_patterns "
                                "ORDER BY signature").fetchall())
    sizes = dict(con.execute("SELECT signature, avg_output_tokens FROM operation_patterns "
                             "WHERE avg_output_tokens IS NOT NULL ORDER BY signature").fetchall())
    rules = {rule: {"decisions": int(n), "fidelity": fidelity} for rule, n, fidelity in con.execute(
        "SELECT rule, count(fidelity), avg(fidelity) FROM routing_decisions WHERE rule IS NOT NULL "
        "GROUP BY rule ORDER BY rule").fetchall()}
    quota = con.execute('SELECT "at", level, action, "window", reason FROM throttle_decisions '
                        'ORDER BY "at" DESC, id LIMIT 1').fetchone()
    latest = None if quota is None else {"at": quota[0].isoformat(), "level": quota[1], "action": quota[2],
                                         "window": quota[3], "reason": quota[4]}
    return orjson.dumps({"patterns": patterns, "sizes": sizes, "rules": rules, "quota": latest})


class Publisher:
    """Writes the snapshot when its content changed since the last write."""

    def __init__(self, db: Path) -> None:
        self.path = snapshot_path(db)
        self._digest: bytes | None = None

    def publish(self, con: duckdb.DuckDBPyConnection) -> bool:
        try:
            body = snapshot(con)
            digest = hashlib.blake2b(body, digest_size=16).digest()
            if digest == self._digest and self.path.exists():
                return False
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(body)
            os.replace(tmp, self.path)
            self._digest = digest
            return True
        except (OSError, duckdb.Error) as exc:  # the router keeps the last snapshot: never stop the sink
            log.warning("sink: routing snapshot not written: %r", exc)
            return False
