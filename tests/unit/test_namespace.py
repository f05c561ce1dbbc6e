"""outloop installs its layers as ``outloop.*`` subpackages: a library with a top-level ``agents``
(``schemas``, ``streams``, ``sinks``) module imports beside it, in one process."""

import subprocess
import sys
import textwrap
from pathlib import Path

OTHERS = ("agents", "schemas", "streams", "sinks")


def test_a_top_level_agents_package_imports_beside_outloop(tmp_path: Path) -> None:
    for name in OTHERS:  # another library's top-level packages of the same names
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"OWNER = 'other library: {name}'\n")
    code = textwrap.dedent("""
        import sys
        import outloop.agents.sessions, outloop.sinks.writer, outloop.streams.publisher, outloop.cli
        import agents, schemas, streams, sinks
        for m in (agents, schemas, streams, sinks):
            assert m.OWNER.startswith("other library"), m
        ours = [n for n in sys.modules if n.split(".")[0] in {"agents", "schemas", "streams", "sinks"}]
        assert sorted(ours) == ["agents", "schemas", "sinks", "streams"], ours
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
