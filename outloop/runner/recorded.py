"""What the runner would have printed for a recorded output: the same pump, thresholds, families and
footer as a live run, fed the recorded text instead of a child's pipe. Shadow replay prices routing
decisions with it, so the compact text it measures is exactly the runner's.
"""

from __future__ import annotations

import os
import tempfile

from outloop.runner import core, runlog
from outloop.runner.run import Options, finish

# The log path a live run would print has this shape; the recorded run prints one of the same length.
_EXAMPLE_RUN_ID = "20260101T000000000Z-12345-abcdef"


def printed_for(command: str, output: str, exit_code: int, family: str | None = None, rule: str | None = None,
                env: dict[str, str] | None = None) -> str:
    """The text the runner prints for ``command`` whose output was ``output`` and exit code ``exit_code``
    (thresholds from ``env``'s ``OUTLOOP_RUN_MAX_LINES``/``OUTLOOP_RUN_MAX_TOKENS``, else the defaults)."""
    env = dict(os.environ if env is None else env)
    max_lines = core.env_int(env, "OUTLOOP_RUN_MAX_LINES", core.DEFAULT_MAX_LINES)
    max_tokens = core.env_int(env, "OUTLOOP_RUN_MAX_TOKENS", core.DEFAULT_MAX_TOKENS)
    live_log = os.path.join(runlog.runs_dir(env), _EXAMPLE_RUN_ID + ".log")
    printed: list[bytes] = []
    opts = Options()
    opts.command, opts.family, opts.rule = command, family, rule
    with tempfile.TemporaryDirectory(prefix="outloop-recorded-") as d:
        files = runlog.new_run({"OUTLOOP_RUNS_DIR": d}, _EXAMPLE_RUN_ID)
        fd = os.open(files.log, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            pump = core.Pump(printed.append, fd, max_lines, max_tokens * 4)
            data = output.encode("utf-8", "surrogatepass")
            for start in range(0, len(data), 1 << 16):
                pump.feed(data[start:start + (1 << 16)])
            finish(opts, pump, files, exit_code, max_lines, max_tokens, env, live_log)
        finally:
            os.close(fd)
        text = b"".join(printed).decode("utf-8", "replace")
        return text.replace(files.log, live_log)  # a summary may name the log too
