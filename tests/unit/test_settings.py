"""The consumer-group timing settings: the session timeout defaults to 6 s whatever the rebalance
timeout, and travels to the worker's environment."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from outloop.replay import PRIVATE_BROKER_SESSION_TIMEOUT, replay_settings
from outloop.streams.settings import Settings


def test_session_timeout_defaults_to_6_seconds_whatever_the_rebalance_timeout() -> None:
    for rebalance in ("", "4", "30"):
        s = Settings.from_env({"OUTLOOP_REBALANCE_TIMEOUT": rebalance})
        assert (s.consumer_session_timeout, s.consumer_heartbeat_interval) == (6.0, 1.0)
    assert Settings.from_env({}).rebalance_timeout == 10.0


def test_session_timeout_set_travels_to_the_worker_and_sets_the_heartbeat() -> None:
    s = Settings.from_env({"OUTLOOP_SESSION_TIMEOUT": "1.5"})
    assert (s.consumer_session_timeout, s.consumer_heartbeat_interval) == (1.5, 0.5)
    assert Settings.from_env(s.to_env()) == s
    default = Settings.from_env({})
    assert Settings.from_env({"OUTLOOP_SESSION_TIMEOUT": "3", **default.to_env()}) == default


def test_session_timeout_below_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="OUTLOOP_SESSION_TIMEOUT"):
        Settings.from_env({"OUTLOOP_SESSION_TIMEOUT": "0.5"})


def test_a_replay_on_a_broker_of_its_own_joins_with_a_short_session_timeout(tmp_path: Path) -> None:
    own = Settings.from_env({})
    assert own.broker is None
    assert replay_settings(own, tmp_path).consumer_session_timeout == PRIVATE_BROKER_SESSION_TIMEOUT == 2.0
    assert replay_settings(own, tmp_path).consumer_heartbeat_interval == pytest.approx(2 / 3)
    # what the user set wins, and a shared broker keeps the default (Kafka refuses less than 6 s)
    eight = Settings.from_env({"OUTLOOP_SESSION_TIMEOUT": "8"})
    assert replay_settings(eight, tmp_path).consumer_session_timeout == 8.0
    external = Settings.from_env({"OUTLOOP_BROKER": "kafka.example:9092"})
    assert replay_settings(external, tmp_path) == replace(external, home=tmp_path, http_port=0)
    assert external.consumer_session_timeout == 6.0


def test_a_replay_runs_on_a_free_port_and_a_private_home_whatever_is_configured(tmp_path: Path) -> None:
    """The configured port and home may be those of a running `outloop up`: the replay's worker
    would die on the port, and the replay would then query the other worker."""
    configured = Settings.from_env({"OUTLOOP_HTTP_PORT": "6066", "OUTLOOP_HOME": str(tmp_path / "home")})
    s = replay_settings(configured, tmp_path / "private")
    assert (s.http_port, s.home) == (0, tmp_path / "private")
    assert (s.db, s.spool) == (configured.db, configured.spool)  # the database asked for is kept
