"""The Host allow-list of the worker's HTTP endpoint, as pure functions (the endpoint itself is
tested in tests/integration/test_query_endpoint.py)."""

from __future__ import annotations

import pytest

from outloop.streams.httpguard import allowed_hosts, host_name, refusal
from outloop.streams.settings import Settings


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:6066", "127.0.0.1"), ("LocalHost.:80", "localhost"), ("[::1]:6066", "::1"), ("[::1]", "::1"),
    ("::1", "::1"), ("evil.example", "evil.example"), (" Worker ", "worker"), ("", ""),
])
def test_host_name_drops_port_brackets_case_and_the_trailing_dot(header: str, name: str) -> None:
    assert host_name(header) == name


def test_the_default_list_is_loopback_plus_the_bound_address_plus_the_setting() -> None:
    assert allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert allowed_hosts("0.0.0.0", ("Worker", " ")) == {"127.0.0.1", "localhost", "::1", "0.0.0.0", "worker"}
    settings = Settings.from_env({"OUTLOOP_HTTP_ALLOWED_HOSTS": "worker, outloop.lan"})
    assert settings.http_allowed_hosts == ("worker", "outloop.lan")
    assert Settings.from_env(settings.to_env()) == settings


def test_refusal_checks_the_host_first_then_the_path() -> None:
    allowed = allowed_hosts("127.0.0.1")
    assert refusal("127.0.0.1:6066", "/health", allowed) is None
    assert refusal("localhost", "/query", allowed) is None
    assert refusal("evil.example:6066", "/health", allowed)[0] == 403  # type: ignore[index]
    assert refusal(None, "/health", allowed)[0] == 403  # type: ignore[index]
    assert refusal("evil.example", "/router/key/", allowed)[0] == 403  # type: ignore[index]
    assert refusal("127.0.0.1", "/router/key/", allowed)[0] == 404  # type: ignore[index]


def test_query_limits_are_settings_and_must_be_positive() -> None:
    s = Settings.from_env({"OUTLOOP_QUERY_TIMEOUT": "2.5", "OUTLOOP_QUERY_MAX_ROWS": "10"})
    assert (s.query_timeout, s.query_max_rows) == (2.5, 10)
    assert (Settings.from_env({}).query_timeout, Settings.from_env({}).query_max_rows) == (30.0, 100_000)
    for env in ({"OUTLOOP_QUERY_TIMEOUT": "0"}, {"OUTLOOP_QUERY_MAX_ROWS": "0"}):
        with pytest.raises(ValueError, match="OUTLOOP_QUERY"):
            Settings.from_env(env)
