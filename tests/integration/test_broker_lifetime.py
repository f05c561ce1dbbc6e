"""The test fixtures' embedded broker dies with the process that started it, even a SIGKILLed one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.polling import wait

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux only")]

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from outloop.streams.broker import EmbeddedBroker
    b = EmbeddedBroker(Path(sys.argv[1]), die_with_parent=sys.argv[2] == "1").start()
    print(b.pid, flush=True)
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("die_with_parent", [True, False])
def test_a_sigkilled_starter_takes_its_broker_along(tmp_path: Path, die_with_parent: bool) -> None:
    starter = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "tansu.log"), str(int(die_with_parent))],
                               stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    try:
        assert starter.stdout is not None
        broker = int(starter.stdout.readline())
        assert alive(broker)
        starter.send_signal(signal.SIGKILL)
        starter.wait(10)
        if die_with_parent:
            wait(lambda: not alive(broker), 10, "the broker outlived the process that started it")
        else:  # the control: without it the broker is orphaned (and stopped here)
            time.sleep(1.0)
            assert alive(broker)
    finally:
        starter.kill()
        if "broker" in locals() and alive(broker):
            os.kill(broker, signal.SIGKILL)
