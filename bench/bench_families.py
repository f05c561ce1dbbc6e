"""Throughput and memory of the build, compiler, linter, installer and git summarisers on huge outputs.

Each family reads N lines (default 1,000,000; ``--quick`` 100,000) made by repeating the shape of its tool's
real output (the lines below are taken from real runs, with a counter so that no two are equal), as the
runner hands them over (an iterator of str). Printed per family, each beside references measured in the
same run: the time to merely iterate the same lines, the generic summariser on them, the compact text's
size, and the peak of Python allocations (tracemalloc) at N and at N/10 (flat memory: the ratio stays near
1). Run: ``.venv/bin/python bench/bench_families.py [--quick] [--family NAME]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import tracemalloc
from collections.abc import Iterator

from outloop.runner.families import by_name, generic
from outloop.runner.families.base import Limits

SHAPES: dict[str, list[str]] = {
    "cc": ["src/m{i}.c: In function ‘main’:", "src/m{i}.c:5:5: error: ‘x{i}’ undeclared (first use in this function)",
           "    5 |     x{i} = 1;", "      |     ^",
           "src/m{i}.c:4:9: warning: unused variable ‘u{i}’ [-Wunused-variable]"],
    "make": ["gcc -Wall -c m{i}.c -o m{i}.o", "m{i}.c:7:12: error: ‘y’ undeclared (first use in this function)",
             "make[1]: Entering directory '/src/d{i}'", "[ 50%] Building C object CMakeFiles/app.dir/m{i}.c.o"],
    "cargo-build": ["   Compiling dep{i} v0.1.0", "error[E0425]: cannot find value `y{i}` in this scope",
                    " --> src/m{i}.rs:3:20", "  |", "3 |     println!(\"{{}}\", y{i});", "  |                    ^"],
    "go-build": ["# example.com/p{i}", "./m{i}.go:12:14: undefined: y{i}", "go: downloading example.com/d{i} v1.0.0"],
    "swift-build": ["[{i}/9] Compiling App m{i}.swift", "/src/App/m{i}.swift:2:7: error: cannot find 'y{i}' in scope",
                    " 2 | print(y{i})", "   |       `- error: cannot find 'y{i}' in scope"],
    "tsc": ["src/m{i}.ts(1,7): error TS2322: Type 'string' is not assignable to type 'number'.",
            "  Types of parameters 'a{i}' and 'a' are incompatible."],
    "ruff": ["F401 [*] `m{i}` imported but unused", " --> a{i}.py:1:8", "  |", "1 | import m{i}", "  |        ^^", ""],
    "eslint": ["/src/a{i}.js", "  1:7  error    'x{i}' is assigned a value but never used  no-unused-vars",
               "  2:1  warning  Unexpected console statement            no-console", ""],
    "mypy": ["a{i}.py:6: error: Unsupported operand types for + (\"int\" and \"str\")  [operator]",
             "a{i}.py:7: note: See https://mypy.rtfd.io/en/stable/_refs.html#code-operator"],
    "pip": ["Collecting pkg{i}", "  Downloading pkg{i}-1.0-py3-none-any.whl (10 kB)",
            "Requirement already satisfied: dep{i} in ./venv/lib/python3.11/site-packages (2.0)"],
    "npm-install": ["npm warn deprecated pkg{i}@1.0.{i}: This package is no longer supported."],
    "apt": ["Get:{i} http://deb.debian.org/debian bookworm/main amd64 p{i} all 1.0 [1 kB]",
            "Unpacking p{i} (1.0) ...", "Setting up p{i} (1.0) ..."],
    "git-status": ["\tmodified:   src/d{i}/f{i}.py"],
    "git-diff": ["diff --git a/f{i}.py b/f{i}.py", "index 1234567..89abcde 100644", "--- a/f{i}.py", "+++ b/f{i}.py",
                 "@@ -1,3 +1,3 @@ def f{i}():", " ctx", "-old {i}", "+new {i}"],
    "git-log": ["commit {i:040x}", "Author: Ada Dev <ada@example.org>", "Date:   Tue Dec 1 10:00:00 2026 +0000", "",
                "    Commit {i}", ""],
}
HEADERS = {"git-status": ["On branch main", "Changes not staged for commit:"]}
# the exit code each shape is read with: the shapes with errors as a failed run, the others as a passing one
PASSING = {"pip", "npm-install", "apt", "git-status", "git-diff", "git-log"}


def lines(family: str, n: int) -> Iterator[str]:
    """``n`` lines of ``family``'s shape (after its header lines, if any)."""
    yield from HEADERS.get(family, [])
    shape = SHAPES[family]
    for k in itertools.count():
        for tmpl in shape:
            if k * len(shape) >= n:
                return
            yield tmpl.format(i=k)


def timed(fn, family: str, n: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn(lines(family, n))
    return time.perf_counter() - t, out


def peak(fn, family: str, n: int) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    fn(lines(family, n))
    size = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--family", action="append")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n = 100_000 if args.quick else 1_000_000
    limits = Limits()
    print(f"{'family':<12} {'lines/s':>10} {'x iterate':>9} {'x generic':>9} {'text bytes':>10} "
          f"{'peak MiB':>8} {'peak N/10':>9}")
    for name in args.family or list(SHAPES):
        fam = by_name(name)
        assert fam is not None, name

        code = 0 if name in PASSING else 1

        def summarise(it, fam=fam, code=code):  # type: ignore[no-untyped-def]
            return fam.summarise("bench", it, code, limits)

        def gen(it, code=code):  # type: ignore[no-untyped-def]
            return generic.summarise("bench", it, code, limits)

        def iterate(it):  # type: ignore[no-untyped-def]
            for _ in it:
                pass

        own = statistics.median(timed(summarise, name, n)[0] for _ in range(args.runs))
        bare = statistics.median(timed(iterate, name, n)[0] for _ in range(args.runs))
        ref = statistics.median(timed(gen, name, n)[0] for _ in range(args.runs))
        result = summarise(lines(name, n))
        size = len(result.text.encode()) if result is not None else 0
        big, small = peak(summarise, name, n), peak(summarise, name, n // 10)
        print(f"{name:<12} {n / own:>10,.0f} {own / bare:>9.1f} {own / ref:>9.2f} {size:>10,} "
              f"{big / 2**20:>8.2f} {big / max(small, 1):>9.2f}")


if __name__ == "__main__":
    main()
