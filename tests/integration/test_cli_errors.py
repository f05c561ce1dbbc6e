"""``outloop up`` against a broker that does not answer: one error line, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from outloop.streams.broker import free_port
from tests.unit.test_cli_output import OUTLOOP, env_for

pytestmark = pytest.mark.integration


def test_up_with_an_unreachable_broker_says_so_without_a_traceback(tmp_path: Path) -> None:
    env = env_for(tmp_path / "home")
    env["OUTLOOP_BROKER"] = f"127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
    proc = subprocess.run([OUTLOOP, "up"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr == (f"error: broker at {env['OUTLOOP_BROKER']} did not answer within 30s: "
                           f"Unable to bootstrap from {env['OUTLOOP_BROKER']}\n"), proc.stderr
