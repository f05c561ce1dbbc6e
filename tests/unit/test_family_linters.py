"""Fidelity of the ruff, mypy, tsc and eslint families: ruff and mypy run for real from this virtualenv on
files in a temporary folder; tsc and eslint use recorded real runs (their command and version beside
each output)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from outloop.runner.families import eslint, mypy, ruff, tsc
from outloop.runner.families.base import Limits
from outloop.runner.families.diag import stated_errors
from tests.unit.familykit import Output, compact, keeps, recorded, run, smaller, summarise

BIN = Path(sys.executable).parent
A_PY = '''import os
import sys


def f(x: int) -> int:
    return x + "a"


y: str = f(1)
print(undefined_name)
'''


@pytest.fixture
def pyproj(tmp_path: Path) -> Path:
    (tmp_path / "a.py").write_text(A_PY)
    (tmp_path / "ok.py").write_text("x: int = 1\n")
    (tmp_path / "bad.py").write_text("def f(:\n    pass\n")
    (tmp_path / "ugly.py").write_text("x=1\ny = {  'a':1}\n")
    return tmp_path


def test_detect() -> None:
    assert ruff.detect(["ruff", "check", "."]) and ruff.detect(["ruff", "format", "--check"])
    assert ruff.detect(["ruff", "src/"]) and ruff.detect(["ruff"]) and not ruff.detect(["ruff", "rule", "F401"])
    assert mypy.detect(["mypy", "src"]) and mypy.detect(["dmypy", "run", "--", "src"])
    assert not mypy.detect(["dmypy", "stop"])
    assert tsc.detect(["tsc", "--noEmit"]) and tsc.detect(["vue-tsc", "-b"]) and not tsc.detect(["node", "tsc"])
    assert eslint.detect(["eslint", "."]) and not eslint.detect(["prettier", "."])


def test_ruff_full_and_concise_formats_keep_each_violation(pyproj: Path) -> None:
    full = run(f"{BIN}/ruff check --no-cache a.py", pyproj)
    assert full.exit_code == 1
    result = compact(ruff, full)
    keeps(result, "a.py:1:8: F401 [*] `os` imported but unused", "a.py:10:7: F821 Undefined name `undefined_name`",
          "[*] 2 fixable with `--fix`.")
    assert result.failures == ["a.py:1", "a.py:2", "a.py:10"] and result.summary_line == "Found 3 errors."
    assert "help:" not in result.text and "import sys\n" not in result.text
    concise = compact(ruff, run(f"{BIN}/ruff check --no-cache --output-format=concise a.py", pyproj))
    assert concise.failures == result.failures
    coloured = run(f"{BIN}/ruff check --no-cache --color=always a.py", pyproj)
    assert b"\x1b[" in coloured.raw and compact(ruff, coloured).text == result.text


def test_ruff_syntax_errors_format_check_passing_and_missing_file(pyproj: Path) -> None:
    syntax = compact(ruff, run(f"{BIN}/ruff check --no-cache bad.py", pyproj))
    keeps(syntax, "bad.py:1:7: invalid-syntax: Expected a parameter or the end of the parameter list")
    fmt = compact(ruff, run(f"{BIN}/ruff format --check ugly.py ok.py", pyproj))
    keeps(fmt, "ugly.py:1:2: unformatted: File would be reformatted")
    assert fmt.summary_line == "1 file would be reformatted, 1 file already formatted" and fmt.failures == ["ugly.py:1"]
    ok = compact(ruff, run(f"{BIN}/ruff check --no-cache ok.py", pyproj))
    assert ok.summary_line == "All checks passed!" and ok.failures == []
    missing = compact(ruff, run(f"{BIN}/ruff check --no-cache nosuch.py", pyproj))
    keeps(missing, "nosuch.py:1:1: E902 No such file or directory")
    assert summarise(ruff, Output("ruff check", b"", 2)) is None


def test_ruff_huge(pyproj: Path) -> None:
    (pyproj / "huge.py").write_text("".join(f"import m{i}\n" for i in range(1200)))
    out = run(f"{BIN}/ruff check --no-cache --select F401 huge.py", pyproj)
    result = compact(ruff, out)
    assert len(result.failures) == 1000 and result.summary_line == "Found 1200 errors."
    keeps(result, "huge.py:1:8: F401 [*] `m0` imported but unused", "... and 200 more")
    smaller(result, out, 5)


def test_mypy_errors_pretty_and_colour(pyproj: Path) -> None:
    plain = run(f"{BIN}/python -m mypy --no-incremental a.py", pyproj)
    assert plain.exit_code == 1
    result = compact(mypy, plain)
    keeps(result, 'a.py:6: error: Unsupported operand types for + ("int" and "str")  [operator]',
          'a.py:10: error: Name "undefined_name" is not defined  [name-defined]')
    assert result.failures == ["a.py:6", "a.py:9", "a.py:10"]
    assert result.summary_line == "Found 3 errors in 1 file (checked 1 source file)"
    pretty = compact(mypy, run(f"{BIN}/python -m mypy --no-incremental --pretty a.py", pyproj))
    assert pretty.failures == result.failures and "^~~" not in pretty.text
    keeps(pretty, 'Incompatible types in assignment (expression has type "int", variable has type "str")')
    colour = run(f"{BIN}/python -m mypy --no-incremental --color-output a.py", pyproj, {"MYPY_FORCE_COLOR": "1"})
    assert b"\x1b[" in colour.raw and compact(mypy, colour).text == result.text


def test_a_summary_counting_more_errors_than_read_says_so(pyproj: Path) -> None:
    """An error line in a form the family does not know (here mypy's first error line with its severity
    word altered) is not lost silently: the summary's count is compared with what was read."""
    out = run(f"{BIN}/python -m mypy --no-incremental a.py", pyproj)
    altered = Output(out.command, out.raw.replace(b"a.py:6: error:", b"a.py:6: eror:", 1), out.exit_code)
    result = compact(mypy, altered)
    assert len(result.failures) == 2
    keeps(result, "note: the summary counts 3 errors and 2 were read here: the log has every line")
    assert "note: the summary" not in compact(mypy, out).text
    summaries = ("Found 3 errors (2 fixed, 1 remaining).", "✖ 7 problems (5 errors, 2 warnings)",
                 "error: could not compile `demo` (bin \"demo\") due to 2 previous errors", "All checks passed!")
    assert [stated_errors(s) for s in summaries] == [1, 5, 2, None]


def test_mypy_passing_missing_file_and_huge(pyproj: Path) -> None:
    ok = compact(mypy, run(f"{BIN}/python -m mypy --no-incremental ok.py", pyproj))
    assert ok.summary_line == "Success: no issues found in 1 source file" and ok.failures == []
    missing = compact(mypy, run(f"{BIN}/python -m mypy --no-incremental nosuch.py", pyproj))
    keeps(missing, "nosuch.py: error: Cannot read file")
    bad_arg = compact(mypy, run(f"{BIN}/python -m mypy --no-such-flag a.py", pyproj))
    keeps(bad_arg, "mypy: error: unrecognized arguments: --no-such-flag")
    (pyproj / "huge.py").write_text("".join(f'v{i}: int = "s"\n' for i in range(1100)))
    out = run(f"{BIN}/python -m mypy --no-incremental huge.py", pyproj)
    result = compact(mypy, out)
    assert len(result.failures) == 1000 and result.summary_line == "Found 1100 errors in 1 file (checked 1 source file)"
    keeps(result, "... and 100 more")


def test_tsc_recorded_plain_and_pretty() -> None:
    plain = compact(tsc, recorded("tsc", "failing"))
    keeps(plain, "a.ts:1:7: error TS2322: Type 'string' is not assignable to type 'number'.",
          "a.ts:5:6: error TS2554: Expected 1 arguments, but got 2.",
          "d.ts:1:7: error TS2322: Type '(a: string) => number' is not assignable to type '(a: number) => string'.\n"
          "  Types of parameters 'a' and 'a' are incompatible.\n    Type 'number' is not assignable to type 'string'.")
    assert len(plain.failures) == 9 and plain.failures[0] == "a.ts:1"
    pretty_out = recorded("tsc", "pretty")
    assert b"\x1b[" in pretty_out.raw
    pretty = compact(tsc, pretty_out)
    assert pretty.failures == plain.failures and pretty.summary_line == "Found 9 errors in 4 files."
    assert "was also declared here" not in pretty.text and "Errors  Files" not in pretty.text
    keeps(pretty, "Types of parameters 'a' and 'a' are incompatible.")


def test_tsc_recorded_passing_missing_file_and_huge() -> None:
    passing = compact(tsc, recorded("tsc", "passing"))
    assert passing.failures == [] and "0 errors" in passing.text
    nofile = compact(tsc, recorded("tsc", "nofile"))
    keeps(nofile, "error TS6053: File 'nonexist.ts' not found.")
    huge_out = recorded("tsc", "huge")
    huge = compact(tsc, huge_out, Limits(max_failures=100))
    assert len(huge.failures) == 100 and huge.failures[-1] == "huge.ts:100"
    keeps(huge, "300 errors", "... and 200 more")
    smaller(huge, huge_out, 2)


def test_eslint_recorded_stylish_and_coloured() -> None:
    result = compact(eslint, recorded("eslint", "failing"))
    keeps(result, "errors (5):\n/tmp/demo-app/a.js\n  1:7 'x' is assigned a value but never used [no-unused-vars]\n"
                  "  1:12 Missing semicolon [semi]\n",
          "  3:23 'y' is not defined [no-undef]\n/tmp/demo-app/c.js\n  1:7 Parsing error: Unexpected token =",
          "warnings (2):\n/tmp/demo-app/a.js\n  2:1 Unexpected console statement [no-console]\n"
          "/tmp/demo-app/b.js\n  2:1 Unexpected console statement",
          "1 error and 0 warnings potentially fixable with the `--fix` option.")
    assert result.summary_line == "✖ 7 problems (5 errors, 2 warnings)"
    assert result.failures == ["/tmp/demo-app/a.js:1", "/tmp/demo-app/a.js:1", "/tmp/demo-app/a.js:3",
                               "/tmp/demo-app/a.js:3", "/tmp/demo-app/c.js:1"]
    coloured = recorded("eslint", "coloured")
    assert b"\x1b[" in coloured.raw and compact(eslint, coloured).text == result.text


def test_eslint_recorded_passing_crash_max_warnings_and_huge() -> None:
    passing = compact(eslint, recorded("eslint", "passing"))
    assert passing.failures == [] and passing.summary_line == "✖ 1 problem (0 errors, 1 warning)"
    crash = compact(eslint, recorded("eslint", "crash"))
    keeps(crash, "Oops! Something went wrong!", 'No files matching the pattern "nonexist.js" were found.')
    maxwarn = compact(eslint, recorded("eslint", "maxwarn"))
    keeps(maxwarn, "ESLint found too many warnings (maximum: 0).")
    huge_out = recorded("eslint", "huge")
    huge = compact(eslint, huge_out)
    assert len(huge.failures) == 600 and huge.summary_line is not None and "600 problems" in huge.summary_line
    smaller(huge, huge_out, 1.3)  # nearly all of this output is errors, and errors are kept
    assert summarise(eslint, Output("eslint .", b"", 2)) is None
