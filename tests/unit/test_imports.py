"""What each process of the worker loads: the agents process never needs DuckDB nor Arrow (the sink
child owns the database), and importing them costs ~55 MB of RSS per process."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


@pytest.mark.parametrize("heavy", ["duckdb", "pyarrow"])
def test_the_agents_process_does_not_load_the_database_libraries(heavy: str) -> None:
    loaded = _modules_after("import outloop.worker")
    assert heavy not in loaded
    assert "outloop.sinks.service" in loaded  # the worker does start the sink child from this process


def test_the_sinks_package_names_load_on_first_use() -> None:
    loaded = _modules_after("import outloop.sinks\nfrom outloop.sinks import DuckSink, QueryRejected\n"
                            "import outloop.sinks.query\nassert outloop.sinks.query.QueryRejected is QueryRejected")
    assert {"duckdb", "outloop.sinks.writer"} <= loaded


def test_an_unknown_name_of_the_sinks_package_is_an_attribute_error() -> None:
    import outloop.sinks

    with pytest.raises(AttributeError):
        outloop.sinks.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
