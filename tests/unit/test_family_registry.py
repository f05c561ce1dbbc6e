"""The build, compiler, linter, installer and git families in the registry: the command lines agents type
reach the right family through the runner's own choice, and the runner process prints the family's compact
result (with the log's path and the command's exit code) when the output is long."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from outloop.runner.api import run
from outloop.runner.compact import choose
from outloop.runner.families import by_name
from outloop.runner.families.base import Limits
from tests.unit.familykit import need

CASES = [
    ("swift build -c release", "swift-build"), ("cargo build --release 2>&1 | tail -40", "cargo-build"),
    ("cargo clippy --all-targets -- -D warnings", "cargo-build"), ("cd svc && go build ./...", "go-build"),
    ("go vet ./...", "go-build"), ("npx tsc --noEmit", "tsc"), ("npm exec tsc -- -p .", "tsc"),
    ("gcc -Wall -O2 -c main.c -o main.o", "cc"), ("clang++ -std=c++20 a.cc", "cc"),
    ("make -j4", "make"), ("cmake --build build --parallel", "make"), ("cmake -S . -B build", "make"),
    ("ruff check . --fix", "ruff"), ("uv run ruff format --check", "ruff"), ("npx eslint src --ext .ts", "eslint"),
    ("python -m mypy src", "mypy"), ("uv run mypy .", "mypy"), ("pip install -r requirements.txt", "pip"),
    ("python3 -m pip install -e '.[dev]'", "pip"), ("uv pip install -e .", "pip"), ("uv sync --frozen", "pip"),
    ("npm ci", "npm-install"), ("pnpm install --frozen-lockfile", "npm-install"), ("yarn", "npm-install"),
    ("sudo apt-get install -y libssl-dev", "apt"), ("DEBIAN_FRONTEND=noninteractive apt-get update", "apt"),
    ("git status --short", "git-status"), ("git -C repo diff HEAD~1", "git-diff"), ("git show --stat HEAD", "git-diff"),
    ("git --no-pager log -10", "git-log"),
    # not ours: the test runners keep theirs, the rest is generic
    ("cargo test", "cargo-test"), ("go test ./...", "go-test"), ("npm test", "js-test"), ("ls -la", "generic"),
    ("git commit -m x", "generic"), ("apt-cache search ssl", "generic"),
]


@pytest.mark.parametrize(("command", "family"), CASES)
def test_runner_chooses_the_family(command: str, family: str) -> None:
    assert family == choose(command, None).NAME


def test_every_family_is_registered_by_its_router_name() -> None:
    names = ["swift-build", "cargo-build", "go-build", "tsc", "cc", "make", "ruff", "eslint", "mypy", "pip",
             "npm-install", "apt", "git-status", "git-diff", "git-log"]
    for name in names:
        fam = by_name(name)
        assert fam is not None and name == fam.NAME and fam.KIND == "structured", name


BAD_C = "int main(void) {\n" + "".join(f"    v{i} = {i};\n" for i in range(300)) + "    return 0;\n}\n"


def test_runner_process_prints_the_cc_summary(tmp_path: Path) -> None:
    """gcc with 300 errors through the real runner (its own process, started as a file): the exit code is
    gcc's, every error is listed with its file:line, and the full log is on disk."""
    need("gcc")
    (tmp_path / "big.c").write_text(BAD_C)
    env = {**os.environ, "OUTLOOP_HOME": str(tmp_path / "home")}
    result = run("gcc -c big.c", cwd=tmp_path, env=env, timeout=120)
    assert result.exit_code == 1 and result.family == "cc" and result.kind == "structured"
    assert "[outloop] cc: exit 1; 300 errors" in result.summary
    assert "big.c:2:5: error: ‘v0’ undeclared" in result.summary and "big.c:301:5" in result.summary
    assert len(result.failures) == 300 and result.failures[0] == "big.c:2"
    assert result.log_path is not None and Path(result.log_path).read_bytes().count(b"error:") == 300
    # every error is kept, one line each: 33,183 bytes printed as about 21,400 when measured
    assert result.printed_bytes < result.raw_bytes * 0.75


@pytest.mark.parametrize("name", ["swift-build", "cargo-build", "go-build", "tsc", "cc", "make", "ruff", "eslint",
                                  "mypy", "pip", "npm-install", "apt", "git-status", "git-diff", "git-log"])
def test_empty_output(name: str) -> None:
    """No output: a passing command gets a summary without failures (or the generic one), a failing one
    always the generic one (nothing here says why it failed)."""
    fam = by_name(name)
    assert fam is not None
    passing = fam.summarise("x", iter([]), 0, Limits())
    assert passing is None or passing.failures == []
    assert fam.summarise("x", iter([]), 1, Limits()) is None


def test_log_lines_strip_every_escape() -> None:
    """mypy's --color-output (curses) ends each colour with ESC ( B; it used to stay in the text and broke the
    reading of mypy's coloured lines."""
    from outloop.runner.compact import clean

    assert clean("a.py:6: \x1b[1m\x1b[31merror:\x1b(B\x1b[m Bad\x1b(B\x1b[m\n") == "a.py:6: error: Bad"
    assert clean("\x1b7saved\x1b8 \x1b]0;title\x07x \x1bM") == "saved x "


@pytest.mark.parametrize(("argv", "sub"), [
    (["git", "-C", "repo", "-c", "a=b", "--no-pager", "status"], "status"), (["cargo", "+nightly", "build"], "build"),
    (["npm"], None), (["npm", "--prefix", "app", "ci"], "ci"),
])
def test_subcommand(argv: list[str], sub: str | None) -> None:
    from outloop.runner.families.diag import git_subcommand, subcommand

    valued = frozenset({"-C", "-c", "--prefix"})
    assert (git_subcommand(argv) if argv[0] == "git" else subcommand(argv, valued)) == sub


@pytest.mark.parametrize(("line", "seen"), [
    ("src/a.c:3:5: error: 'x' undeclared", ("error", "src/a.c:3")),
    ("a.c:3: fatal error: b.h: No such file or directory", ("error", "a.c:3")),
    ("a.cc:9:1: warning: unused [-Wunused]", ("warning", "a.cc:9")),
    ("a.c:2:11: note: expected 'int'", ("note", "a.c:2")),
    ("/x/link.c:2: undefined reference to `g'", ("error", "/x/link.c:2")),
    ("collect2: error: ld returned 1 exit status", ("error", None)),
    ("    5 |     x = 1;", None), ("In file included from a.c:1:", None),
])
def test_cc_line(line: str, seen: tuple[str, str | None] | None) -> None:
    from outloop.runner.families.diag import cc_line

    assert cc_line(line) == seen


def test_generic_summary_memory_does_not_grow_with_error_lines() -> None:
    """200,000 error lines with a location: the generic summariser's peak allocations are those of 20,000
    (its list of locations used to be built with list(Capped), which sized itself by every location seen:
    2.0 MB against 0.56 MB before the fix)."""
    import tracemalloc

    from outloop.runner.families import generic

    def peak(n: int) -> int:
        tracemalloc.start()
        generic.summarise("x", (f"src/m{i}.c:{i}:1: error: bad thing {i}" for i in range(n)), 1, Limits())
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    assert peak(200_000) < 1.2 * peak(20_000)
