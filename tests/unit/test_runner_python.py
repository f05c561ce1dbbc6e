"""pytest and unittest run for real through the runner on small projects made in tmp_path: passing,
failing, crashing (collection error, segfault), empty, huge and ANSI-coloured runs. The compact result
keeps every failing id, its file:line and message, and the summary line; the exit code is the tool's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.unit.runnerkit import bare, only_run, run, runner_env

PY = sys.executable
PYTEST = f"{PY} -m pytest -p no:cacheprovider"
# compact even small outputs; no third-party pytest plugins (they only slow the runs down)
SMALL = {"OUTLOOP_RUN_MAX_LINES": "5", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

FAILING = '''
import pytest

def test_ok():
    assert 1

def test_two():
    x = 1
    assert x == 2, "x should be two"

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n == 1

class TestBox:
    def test_method(self):
        raise ValueError("bad value")

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

def test_fixture(broken):
    pass
'''


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "proj"
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def compact_run(cmd: str, root: Path, tmp_path: Path, **extra: str) -> tuple[int, str, dict[str, object]]:
    p = run(cmd, tmp_path / "runs", cwd=root, **{**SMALL, **extra})
    meta, _ = only_run(tmp_path / "runs")
    return p.returncode, p.stdout.decode(), meta


@pytest.mark.parametrize("flags", ["-q", "-v --tb=short --color=yes -rA"])
def test_pytest_failing_run(tmp_path: Path, flags: str) -> None:
    root = project(tmp_path, {"test_a.py": FAILING})
    cmd = f"{PYTEST} {flags} test_a.py"
    code, out, meta = compact_run(cmd, root, tmp_path)
    assert code == 1 == bare(cmd, cwd=root, env=runner_env(tmp_path, **SMALL)).returncode
    assert meta["family"] == "pytest" and meta["compact"] is True
    for s in ["test_a.py::test_two", "x should be two", "test_a.py:9", "test_a.py::test_param[2]",
              "assert 2 == 1", "test_a.py::TestBox::test_method", "ValueError: bad value",
              "test_a.py::test_fixture", "RuntimeError: fixture broke", "3 failed, 2 passed, 1 error in"]:
        assert s in out, f"{s!r} missing:\n{out}"
    assert sorted(meta["failures"]) == ["test_a.py::TestBox::test_method", "test_a.py::test_fixture",  # type: ignore[call-overload]
                                        "test_a.py::test_param[2]", "test_a.py::test_two"]
    assert "\x1b[" not in out


def test_pytest_verbose_run_without_a_summary_keeps_every_failing_id(tmp_path: Path) -> None:
    """With -rN --tb=no pytest prints no failure section and no short summary: the -v lines alone
    name the failing tests, and none may be dropped."""
    root = project(tmp_path, {"test_a.py": FAILING})
    code, out, meta = compact_run(f"{PYTEST} -v -rN --tb=no test_a.py", root, tmp_path)
    assert code == 1 and meta["compact"] is True
    for s in ["test_a.py::test_two", "test_a.py::test_param[2]", "test_a.py::TestBox::test_method",
              "test_a.py::test_fixture", "3 failed, 2 passed, 1 error in"]:
        assert s in out, f"{s!r} missing:\n{out}"
    assert "test_a.py::test_ok" not in out


def test_pytest_collection_error_and_empty(tmp_path: Path) -> None:
    root = project(tmp_path, {"test_b.py": "import no_such_module_xyz\n\ndef test_x():\n    pass\n"})
    code, out, meta = compact_run(f"{PYTEST}", root, tmp_path)
    assert code == 2
    assert "ERROR test_b.py" in out and "No module named 'no_such_module_xyz'" in out
    assert "Interrupted: 1 error during collection" in out and "1 error in" in out
    empty = project(tmp_path / "e", {"conftest.py": ""})
    p = run(f"{PYTEST} -q", tmp_path / "runs2", cwd=empty, **SMALL)
    assert p.returncode == 5 and b"no tests ran in" in p.stdout


def test_pytest_segfault_keeps_the_crash(tmp_path: Path) -> None:
    crash = "import ctypes\n\ndef test_ok():\n    pass\n\ndef test_crash():\n    ctypes.string_at(0)\n"
    root = project(tmp_path, {"test_c.py": crash})
    code, out, meta = compact_run(f"{PYTEST} -v test_c.py", root, tmp_path)
    assert code == 128 + 11 or code == 139
    assert "Fatal Python error: Segmentation fault" in out
    assert 'test_c.py", line 7 in test_crash' in out
    assert meta["exit_code"] == code


def test_pytest_huge_run(tmp_path: Path) -> None:
    huge = ("import pytest\n\n@pytest.mark.parametrize('i', range(400))\n"
            "def test_many(i):\n    assert i not in (17, 345), f'bad {i}'\n")
    root = project(tmp_path, {"test_h.py": huge})
    code, out, meta = compact_run(f"{PYTEST} -v test_h.py", root, tmp_path, OUTLOOP_RUN_MAX_LINES="100")
    assert code == 1 and meta["raw_lines"] > 400
    assert meta["failures"] == ["test_h.py::test_many[17]", "test_h.py::test_many[345]"]
    assert "AssertionError: bad 345" in out and "2 failed, 398 passed" in out
    assert len(out.splitlines()) < 30


def test_pytest_passing_run_prints_unchanged_when_short(tmp_path: Path) -> None:
    root = project(tmp_path, {"test_p.py": "def test_ok():\n    assert True\n"})
    p = run(f"{PYTEST} -q test_p.py", tmp_path / "runs", cwd=root, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    assert p.returncode == 0 and b"1 passed" in p.stdout and not p.stdout.startswith(b"[outloop]")


UNITTEST = '''
import unittest

class T(unittest.TestCase):
    def test_ok(self):
        self.assertTrue(True)

    def test_fail(self):
        self.assertEqual(1, 2, "one is not two")

    def test_error(self):
        raise ValueError("boom")

    def test_sub(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertLess(i, 2)
'''


@pytest.mark.parametrize("flags", ["", "-v"])
def test_unittest_failing_run(tmp_path: Path, flags: str) -> None:
    root = project(tmp_path, {"test_m.py": UNITTEST, "test_imp.py": "import no_such_mod_xyz\n"})
    code, out, meta = compact_run(f"{PY} -m unittest {flags}", root, tmp_path)
    assert code == 1 and meta["family"] == "unittest"
    for s in ["FAIL: test_fail (test_m.T.test_fail)", "AssertionError: 1 != 2 : one is not two", "test_m.py:9",
              "ERROR: test_error (test_m.T.test_error)", "ValueError: boom", "(i=2)", "2 not less than 2",
              "test_imp", "No module named 'no_such_mod_xyz'", "FAILED (failures=2, errors=2)"]:
        assert s in out, f"{s!r} missing:\n{out}"
    assert meta["summary_line"].startswith("Ran 5 tests in ")


def test_unittest_segfault(tmp_path: Path) -> None:
    crash = "import ctypes, faulthandler, unittest\nfaulthandler.enable()\n\nclass T(unittest.TestCase):\n" \
            "    def test_crash(self):\n        ctypes.string_at(0)\n"
    root = project(tmp_path, {"test_s.py": crash})
    code, out, _ = compact_run(f"{PY} -m unittest -v", root, tmp_path)
    assert code == 139 and "Fatal Python error: Segmentation fault" in out
