"""Fidelity of the cc and make families on real gcc, make and cmake runs in a temporary folder: every error
keeps its file:line and message, the failing target is kept, the noise is left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from outloop.runner.families import cc, make
from outloop.runner.families.base import Limits
from tests.unit.familykit import Output, compact, keeps, need, run, smaller, summarise

BAD_C = """#include <stdio.h>
int f(int a) { return a; }
int main(void) {
    int unused;
    x = 1;
    printf("%d\\n", f("s"));
    return y;
}
"""
GOOD_C = "int main(void) { return 0; }\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    need("gcc")
    (tmp_path / "bad.c").write_text(BAD_C)
    (tmp_path / "good.c").write_text(GOOD_C)
    (tmp_path / "link.c").write_text("int g(void);\nint main(void) { return g(); }\n")
    return tmp_path


def test_detect() -> None:
    assert cc.detect(["gcc", "-c", "a.c"]) and cc.detect(["clang++-17", "a.cc"])
    assert cc.detect(["x86_64-linux-gnu-gcc-12", "a.c"]) and cc.detect(["cc", "a.c"])
    assert not cc.detect(["gcc-ar", "x"]) and not cc.detect(["ccache-stats"]) and not cc.detect([])
    assert make.detect(["make", "-j4"]) and make.detect(["cmake", "--build", "build"])
    assert make.detect(["cmake", "-S", ".", "-B", "b"]) and make.detect(["ninja"])
    assert not make.detect(["cmake", "-E", "copy", "a", "b"]) and not make.detect(["ctest"])


def test_cc_failing_keeps_every_error_and_warning(project: Path) -> None:
    out = run("gcc -Wall -c bad.c", project)
    assert out.exit_code == 1
    result = compact(cc, out)
    keeps(result, "bad.c:5:5: error: ‘x’ undeclared (first use in this function)",
          "bad.c:7:12: error: ‘y’ undeclared", "bad.c:4:9: warning: unused variable ‘unused’",
          "bad.c:6:22: warning: passing argument 1 of ‘f’")
    assert result.failures == ["bad.c:5", "bad.c:7"]
    assert "note:" not in result.text and "    5 |" not in result.text  # notes and code frames left out
    assert "2 errors, 2 warnings" in result.text
    assert result.omitted_lines > 10


def test_cc_linker_and_missing_file(project: Path) -> None:
    result = compact(cc, run("gcc -g link.c -o link", project))
    keeps(result, "undefined reference to `g'", "collect2: error: ld returned 1 exit status")
    assert any(f.endswith("link.c:2") for f in result.failures)
    crash = compact(cc, run("gcc nosuch.c", project))
    keeps(crash, "fatal error: nosuch.c: No such file or directory")


def test_cc_passing_and_empty(project: Path) -> None:
    out = run("gcc -Wall -c good.c", project)
    assert out.exit_code == 0 and out.raw == b""
    result = compact(cc, out)
    assert result.failures == [] and "0 errors, 0 warnings" in result.text
    # a failure with nothing to show for it goes to the generic summariser
    assert summarise(cc, Output("gcc x.c", b"", 1)) is None


def test_cc_ansi_coloured_same_as_plain(project: Path) -> None:
    plain = compact(cc, run("gcc -Wall -fdiagnostics-color=never -c bad.c", project))
    colour = run("gcc -Wall -fdiagnostics-color=always -c bad.c", project)
    assert b"\x1b[" in colour.raw
    coloured = compact(cc, colour)
    assert coloured.failures == plain.failures and coloured.text == plain.text


def test_cc_huge_output_counts_what_it_cannot_list(project: Path) -> None:
    body = "".join(f"    v{i} = {i};\n" for i in range(1500))
    (project / "huge.c").write_text(f"int main(void) {{\n{body}    return 0;\n}}\n")
    out = run("gcc -c huge.c", project)
    assert out.exit_code == 1 and out.raw.count(b"error:") == 1500
    result = compact(cc, out, Limits(max_failures=1000))
    assert len(result.failures) == 1000 and result.failures[0] == "huge.c:2"
    keeps(result, "1500 errors", "... and 500 more (not listed here; grep the log for 'error')")
    smaller(result, out, 2)  # the errors themselves are kept, one line each
    cut = compact(cc, run("gcc -fmax-errors=5 -c huge.c", project))
    assert len(cut.failures) == 5 and cut.summary_line == "compilation terminated due to -fmax-errors=5."


MAKEFILE = """all: good.o bad.o
%.o: %.c
\tgcc -Wall -c $< -o $@
missing:
\tnosuchcommand --flag
"""


def test_make_keeps_failing_target_and_compiler_errors(project: Path) -> None:
    need("make")
    (project / "Makefile").write_text(MAKEFILE)
    out = run("make -k", project)
    assert out.exit_code == 2
    result = compact(make, out)
    keeps(result, "bad.c:5:5: error: ‘x’ undeclared", "bad.c:7:12: error: ‘y’ undeclared",
          "make: *** [Makefile:3: bad.o] Error 1")
    assert result.failures[:2] == ["bad.c:5", "bad.c:7"] and "Makefile:3" in result.failures
    assert "gcc -Wall -c good.c" not in result.text  # echoed commands left out
    missing = compact(make, run("make missing", project))
    keeps(missing, "make: nosuchcommand: No such file or directory", "make: *** [Makefile:5: missing] Error 127")
    nothing = compact(make, run("make good.o && make good.o", project))
    assert nothing.summary_line == "make: 'good.o' is up to date." and nothing.failures == []


def test_make_nested_directory_and_no_rule(project: Path) -> None:
    need("make")
    (project / "sub").mkdir()
    (project / "sub" / "Makefile").write_text("all: nofile.o\n")
    result = compact(make, run("make -C sub", project), Limits(tail_lines=0))
    keeps(result, "make: *** No rule to make target 'nofile.o', needed by 'all'.  Stop.")
    assert "Entering directory" not in result.text


def test_make_keeps_the_last_lines_a_recipe_printed(project: Path) -> None:
    """``make run``: the program's own output is not a diagnostic, but its last lines are what the agent
    ran it for."""
    need("make")
    (project / "Makefile").write_text("run:\n\t@for i in $$(seq 1 500); do echo result $$i; done\n")
    out = run("make run", project)
    result = compact(make, out)
    keeps(result, "--- last 15 lines ---\nresult 486", "result 500")
    assert "result 485\n" not in result.text and "500 lines of output, 485 left out" in result.text


CMAKELISTS = """cmake_minimum_required(VERSION 3.10)
project(demo C)
add_executable(app {src})
"""


def test_cmake_configure_error_and_build_error(project: Path) -> None:
    need("cmake")
    need("make")
    (project / "CMakeLists.txt").write_text(CMAKELISTS.format(src="nope.c"))
    conf = run("cmake -S . -B build", project)
    assert conf.exit_code == 1
    result = compact(make, conf)
    keeps(result, "CMake Error at CMakeLists.txt:3 (add_executable):", "Cannot find source file:", "nope.c",
          "No SOURCES given to target: app")
    assert result.summary_line == "CMake Generate step failed.  Build files cannot be regenerated correctly."
    assert "CMakeLists.txt:3" in result.failures and "-- Detecting C compiler" not in result.text
    (project / "CMakeLists.txt").write_text(CMAKELISTS.format(src="bad.c"))
    assert run("rm -rf build && cmake -S . -B build", project).exit_code == 0
    build = run("cmake --build build", project)
    assert build.exit_code != 0
    result = compact(make, build)
    keeps(result, "bad.c:5:5: error: ‘x’ undeclared", "[CMakeFiles/app.dir/build.make:")
    assert "Building C object" not in result.text
    (project / "CMakeLists.txt").write_text(CMAKELISTS.format(src="good.c"))
    ok = compact(make, run("cmake -S . -B build >/dev/null && cmake --build build", project))
    assert ok.summary_line == "[100%] Built target app" and ok.failures == []


def test_make_huge_keep_going_and_coloured_compiler(project: Path) -> None:
    need("make")
    rules = "".join(f"t{i}:\n\t@echo building t{i}; false\n" for i in range(300))
    (project / "Makefile").write_text("all: " + " ".join(f"t{i}" for i in range(300)) + "\n" + rules
                                      + "bad.o: bad.c\n\tgcc -fdiagnostics-color=always -Wall -c bad.c -o bad.o\n")
    out = run("make -k", project)
    assert out.exit_code == 2
    result = compact(make, out, Limits(max_failures=200))
    keeps(result, "make: *** [Makefile:3: t0] Error 1", "... and 100 more",
          "make: Target 'all' not remade because of errors.")
    assert len(result.failures) == 200 and "building t1" not in result.text
    coloured = run("make bad.o", project)
    assert b"\x1b[" in coloured.raw
    keeps(compact(make, coloured), "bad.c:5:5: error: ‘x’ undeclared", "make: *** [Makefile:")
