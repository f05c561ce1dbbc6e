"""The runner's files: ``$OUTLOOP_HOME/runs/<run_id>.log`` (the whole interleaved output) and
``<run_id>.json`` (what ran and what was printed), and the retention that keeps the folder bounded by age
and total size. Stdlib only, and no ``json`` import: this is on the path of every run.
"""

from __future__ import annotations

import os
import time

DEFAULT_KEEP_DAYS = 7.0
DEFAULT_KEEP_MB = 512.0
PRUNE_EVERY = 60.0  # seconds between two retention passes (a stamp file's mtime says when the last ran)
STAMP = ".pruned"


class RunFiles:
    """A run's id and the paths of its log and metadata (a plain class: dataclasses cost start-up)."""

    __slots__ = ("run_id", "log", "meta")

    def __init__(self, run_id: str, log: str, meta: str) -> None:
        self.run_id, self.log, self.meta = run_id, log, meta


def runs_dir(env: dict[str, str] | os._Environ[str]) -> str:
    """``OUTLOOP_RUNS_DIR``, else ``$OUTLOOP_HOME/runs``, else ``~/.outloop/runs``."""
    d = env.get("OUTLOOP_RUNS_DIR")
    if not d:
        home = env.get("OUTLOOP_HOME") or os.path.join("~", ".outloop")
        d = os.path.join(home, "runs")
    return os.path.expanduser(d)


def new_run_id(t: float | None = None) -> str:
    """A run id that sorts by start time: UTC time to the millisecond, pid, random bits."""
    t = time.time() if t is None else t
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f"{int(t % 1 * 1000):03d}Z"
    return f"{stamp}-{os.getpid()}-{os.urandom(3).hex()}"


def new_run(env: dict[str, str] | os._Environ[str], run_id: str | None = None) -> RunFiles:
    """The files of a new run (the folder is created, private to the user, when missing)."""
    d = runs_dir(env)
    os.makedirs(d, mode=0o700, exist_ok=True)
    rid = run_id or new_run_id()
    if "/" in rid or rid.startswith("."):
        raise OSError(f"bad run id {rid!r}")
    return RunFiles(rid, os.path.join(d, rid + ".log"), os.path.join(d, rid + ".json"))


def json_value(v: object) -> str:
    """JSON text of None, bools, numbers, strings and lists of them (ASCII-only, so any string,
    surrogates included, round-trips)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(json_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_json_str(str(k))}: {json_value(x)}" for k, x in v.items()) + "}"
    return _json_str(str(v))


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_str(s: str) -> str:
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    out = []
    for ch in s:
        o = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif o > 0xFFFF:
            o -= 0x10000
            out.append(f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}")
        else:
            out.append(f"\\u{o:04x}")
    return '"' + "".join(out) + '"'


def write_meta(path: str, meta: dict[str, object]) -> None:
    """Write the run's metadata atomically (a temporary file renamed over the final name)."""
    text = "{\n" + ",\n".join(f"  {_json_str(k)}: {json_value(v)}" for k, v in meta.items()) + "\n}\n"
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        data = text.encode("ascii")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _float_env(env: dict[str, str] | os._Environ[str], name: str, default: float) -> float:
    try:
        v = float(env.get(name, ""))
    except ValueError:
        return default
    return v if v >= 0 else default


def prune_due(d: str, now: float, every: float = PRUNE_EVERY) -> bool:
    """Whether a retention pass is due (the stamp is older than ``every`` seconds, or missing): one
    ``stat`` per run, so retention stays cheap on the path of every command."""
    try:
        return now - os.stat(os.path.join(d, STAMP)).st_mtime >= every
    except OSError:
        return True


def prune(d: str, now: float, keep_days: float, keep_bytes: float, keep: frozenset[str] = frozenset()) -> int:
    """Delete runs older than ``keep_days``, then the oldest runs until all of them fit in ``keep_bytes``
    (never the runs named in ``keep``, e.g. the one that is finishing). Returns how many files went."""
    runs: dict[str, list[tuple[str, float, int]]] = {}
    with os.scandir(d) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            rid = e.name.split(".", 1)[0]
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            runs.setdefault(rid, []).append((e.path, st.st_mtime, st.st_size))
    order = sorted(runs, key=lambda r: max(m for _, m, _ in runs[r]))
    total = sum(s for files in runs.values() for _, _, s in files)
    removed = 0
    for rid in order:
        files = runs[rid]
        old = now - max(m for _, m, _ in files) > keep_days * 86400
        if rid in keep or not (old or total > keep_bytes):
            continue
        for path, _, size in files:
            try:
                os.unlink(path)
                removed += 1
                total -= size
            except OSError:
                pass
    return removed


def maybe_prune(env: dict[str, str] | os._Environ[str], keep: frozenset[str], now: float | None = None) -> int:
    """Run retention when due (``OUTLOOP_RUNS_KEEP_DAYS``, default 7; ``OUTLOOP_RUNS_KEEP_MB``, default
    512); the stamp is touched first, so parallel runs do not all prune at once."""
    d = runs_dir(env)
    now = time.time() if now is None else now
    if not prune_due(d, now):
        return 0
    stamp = os.path.join(d, STAMP)
    with open(stamp, "a"):
        pass
    os.utime(stamp, (now, now))
    days = _float_env(env, "OUTLOOP_RUNS_KEEP_DAYS", DEFAULT_KEEP_DAYS)
    mb = _float_env(env, "OUTLOOP_RUNS_KEEP_MB", DEFAULT_KEEP_MB)
    return prune(d, now, days, mb * 1024 * 1024, keep)
