"""Shared fixtures. Broker tests use a real Kafka-protocol broker: a testcontainers Kafka when a Docker
engine answers and OUTLOOP_TEST_DOCKER=1, else the embedded Tansu broker (always available)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRACES = (REPO.parent / "shared" / "data" / "traces-dev").resolve()


def traces_dir() -> Path:
    if not TRACES.is_dir():
        pytest.skip(f"real traces not present at {TRACES} (../shared beside the checkout)")
    return TRACES


@pytest.fixture(scope="session")
def traces() -> Path:
    return traces_dir()


@pytest.fixture(scope="session")
def traces_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real traces through importers, sessions fold and DuckDB sink (in process, no broker), every derived
    table refreshed: built once per test run and shared. Read it read-only, or copy it before writing."""
    from outloop.projections import open_sink
    from tests.unit.contextdata import load

    db = tmp_path_factory.mktemp("traces-db") / "traces.duckdb"
    with open_sink(db) as sink:
        load(sink, [traces_dir()])
    return db


def _docker_kafka() -> Iterator[str] | None:
    if os.environ.get("OUTLOOP_TEST_DOCKER") != "1":
        return None
    try:
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]
    except ImportError:
        return None
    container = KafkaContainer().with_kraft()
    container.start()

    def gen() -> Iterator[str]:
        try:
            yield container.get_bootstrap_server()
        finally:
            container.stop()

    return gen()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker shared by the session's tests. Tests isolate themselves by
    topic prefix and consumer group (see ``unique_settings``)."""
    docker = _docker_kafka()
    if docker is not None:
        yield from docker
        return
    from outloop.streams.broker import EmbeddedBroker

    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log, die_with_parent=True) as b:
        yield b.bootstrap


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[object]:
    """A broker of the test's own, for tests that kill or restart it."""
    from outloop.streams.broker import EmbeddedBroker

    b = EmbeddedBroker(tmp_path / "tansu.log", die_with_parent=True)
    b.start()
    try:
        yield b
    finally:
        b.stop()
