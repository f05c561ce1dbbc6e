"""Fidelity of the test-runner families on recorded outputs (each fixture's .json says the command, the
tool's version and whether it is a real run): every failing test id, its file:line and message, and the
tool's own summary line are kept; outputs of other tools are declined (None)."""

from __future__ import annotations

import pytest

from outloop.runner.argv import simple_commands
from outloop.runner.families import FAMILIES, by_name, detect
from outloop.runner.families.base import Limits
from tests.unit.runnerkit import DATA, fixture

LIMITS = Limits()

# (family, fixture, strings the compact text must contain, failure ids, summary line or None)
CASES = [
    ("cargo-test", "cargo-fail", ["tests::adds_wrong", "src/lib.rs:7:31", "left: 3", "tests::divides_by_zero",
                                  "attempt to divide by zero", "tests::custom_message", "two and two made 4"],
     ["tests::custom_message", "tests::divides_by_zero", "tests::adds_wrong"],
     "test result: FAILED. 1 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s"),
    ("cargo-test", "cargo-fail-ansi", ["tests::adds_wrong", "src/lib.rs:7:31"], None, None),
    ("cargo-test", "cargo-compile-error", ["error[E0425]: cannot find value `c` in this scope at src/lib.rs:1:41"],
     [], None),
    ("cargo-test", "cargo-abort", ["signal: 6, SIGABRT"], [], None),
    ("cargo-test", "cargo-huge", ["tests::case_017", "tests::case_333", "tests::case_598", "src/lib.rs:603:29",
                                  "597 passed; 3 failed"], ["tests::case_333", "tests::case_017", "tests::case_598"],
     None),
    ("cargo-test", "cargo-pass", ["test result: ok. 2 passed"], [], None),
    ("cargo-test", "cargo-empty", ["test result: ok. 0 passed"], [], None),
    ("js-test", "jest-fail", ["sum › adds 1 + 2 to equal 4", "Expected: 4", "Received: 3", "sum.test.js:3:59",
                              "top level fails", "boom at top level", "sum.test.js:7:39",
                              "Tests:       3 failed, 3 passed, 6 total"],
     ["sum › adds 1 + 2 to equal 4", "sum › throws on objects", "top level fails"],
     "Tests:       3 failed, 3 passed, 6 total"),
    ("js-test", "jest-fail-ansi", ["sum › adds 1 + 2 to equal 4", "sum.test.js:3:59"],
     ["sum › adds 1 + 2 to equal 4", "sum › throws on objects", "top level fails"], None),
    ("js-test", "jest-crash", ["Test suite failed to run", "SyntaxError: /home/dev/proj/sum.test.js: Unexpected token"],
     ["Test suite failed to run"], None),
    ("js-test", "jest-huge", ["suite 3 › case 7", "suite 11 › case 2", "suite 19 › case 39", "sum.test.js:840:47",
                              "Tests:       3 failed, 797 passed, 800 total"], None, None),
    ("js-test", "jest-pass", ["Tests:       2 passed, 2 total"], [], None),
    ("js-test", "vitest-pass", ["Tests  2 passed (2)"], [], "Tests  2 passed (2)"),
    ("js-test", "mocha-pass", ["2 passing"], [], None),
    ("js-test", "jest-empty", ["No tests found"], [], None),
    ("js-test", "vitest-fail", ["sum.test.js > sum > adds 1 + 2 to equal 4", "expected 3 to be 4", "sum.test.js:4:59",
                                "sum.test.js > top level fails", "Error: boom at top level",
                                "Tests  3 failed | 3 passed (6)"], None, "Tests  3 failed | 3 passed (6)"),
    ("js-test", "vitest-fail-ansi", ["sum.test.js > sum > throws on objects", "sum.test.js:6:63"], None, None),
    ("js-test", "vitest-crash", ["Failed to load url ./missing-module", "Test Files  1 failed (1)"], None, None),
    ("js-test", "mocha-fail", ["sum fails adds 1 + 2 to equal 4", "3 !== 4", "test/sum.test.js:4:46",
                               "sum fails throws", "Error: boom in mocha", "3 failing", "2 passing"],
     ["sum fails adds 1 + 2 to equal 4", "sum fails adds strings", "sum fails throws"], None),
    ("js-test", "mocha-fail-ansi", ["sum fails adds strings", "test/sum.test.js:5:37"], None, None),
    ("js-test", "mocha-crash", ["Exception during run: Error: Cannot find module '../nope'",
                                "at /home/dev/proj/test/sum.test.js:2:17"], [], None),
    ("go-test", "go-fail", ["TestAdd", "calc_test.go:7: Add(1, 2) = 3; want 4", "TestTable/bad",
                            "calc_test.go:15: Add(2, 2) = 4; want 5", "FAIL\texample.com/calc"],
     ["TestAdd", "TestTable", "TestTable/bad"], None),
    ("go-test", "go-fail-verbose", ["calc_test.go:7: Add(1, 2) = 3; want 4", "calc_test.go:15: Add(2, 2) = 4; want 5"],
     ["TestAdd", "TestTable", "TestTable/bad"], None),
    ("go-test", "go-fail-json", ["calc_test.go:7: Add(1, 2) = 3; want 4", "calc_test.go:15: Add(2, 2) = 4; want 5",
                                 "FAIL\texample.com/calc"], ["TestAdd", "TestTable", "TestTable/bad"], None),
    ("go-test", "go-fail-multi", ["TestTable/bad", "1 packages ok"], None, None),
    ("go-test", "go-panic", ["TestAt", "index out of range [5] with length 3", "/home/dev/proj/calc.go:5"], ["TestAt"],
     None),
    ("go-test", "go-build-error", ["./calc_test.go:6:18: undefined: undefinedThing", "[build failed]"], [], None),
    ("go-test", "go-huge", ["TestCase042", "calc_test.go:259: Add(42, 1) = 43; want 44", "TestCase250", "TestCase499"],
     ["TestCase042", "TestCase250", "TestCase499"], None),
    ("go-test", "go-pass", ["1 packages ok"], [], "ok  \texample.com/calc\t0.002s"),
    ("go-test", "go-empty", ["[no test files]", "1 without test files"], [], None),
    ("swift-test", "xctest-fail", ["CalcTests.testAddWrong", "CalcTests.swift:10: XCTAssertEqual failed",
                                   "CalcTests.testNil", "Executed 3 tests, with 2 failures"],
     ["CalcTests.testAddWrong", "CalcTests.testNil"],
     "Executed 3 tests, with 2 failures (0 unexpected) in 0.004 (0.004) seconds"),
    ("swift-test", "xctest-macos-fail", ["CalcTests.CalcTests.testAddWrong", "CalcTests.swift:10"], None, None),
    ("swift-test", "xctest-crash", ["CalcTests.testIndex", "Fatal error: Index out of range", "signal code 4"],
     ["CalcTests.testIndex"], None),
    ("swift-test", "build-error", ["Calc.swift:3:40: error: cannot find 'c' in scope"], [], None),
    ("swift-test", "swift-testing-fail", ["addition()", "CalcTests.swift:8:5: Expectation failed",
                                          "Test run with 2 tests failed"], ["addition()"],
     "✘ Test run with 2 tests failed after 0.003 seconds with 1 issue."),
    ("swift-test", "xctest-pass", ["Executed 1 test, with 0 failures"], [], None),
]


@pytest.mark.parametrize(("family", "case", "kept", "ids", "summary"), CASES, ids=[c[1] for c in CASES])
def test_family_keeps_every_failure(family: str, case: str, kept: list[str], ids: list[str] | None,
                                    summary: str | None) -> None:
    lines, meta = fixture(family, case)
    assert meta["command"] and meta["versions"] and meta["recorded"]
    fam = by_name(family)
    assert fam is not None and fam.KIND == "structured"
    assert fam.detect(simple_commands(meta["command"])[-1]), meta["command"]
    c = fam.summarise(meta["command"], iter(lines), meta["exit_code"], LIMITS)
    assert c is not None and c.family == family and c.kind == "structured"
    for s in kept:
        assert s in c.text, f"{s!r} missing from:\n{c.text}"
    if ids is not None:
        assert c.failures == ids
    if summary is not None:
        assert c.summary_line == summary and summary in c.text
    assert "\x1b" not in c.text


def test_every_fixture_is_covered_and_labelled() -> None:
    covered = {(f, c) for f, c, *_ in CASES}
    for log in DATA.glob("*/*.log"):
        assert (log.parent.name, log.stem) in covered, log
        assert log.with_suffix(".json").is_file(), log


@pytest.mark.parametrize("family", ["cargo-test", "js-test", "go-test", "swift-test", "pytest", "unittest"])
def test_families_decline_other_tools_output(family: str) -> None:
    fam = by_name(family)
    assert fam is not None
    plain = ["Compiling...", "all good", "done in 3s"]
    assert fam.summarise("x", iter(plain), 0, LIMITS) is None
    assert fam.summarise("x", iter([]), 0, LIMITS) is None


def test_failures_past_the_cap_are_counted_and_pointed_to() -> None:
    lines = [f"--- FAIL: TestCase{i} (0.00s)" for i in range(50)] + ["FAIL\texample.com/m\t0.1s"]
    c = by_name("go-test").summarise("go test", iter(lines), 1, Limits(max_failures=10))  # type: ignore[union-attr]
    assert c is not None and len(c.failures) == 10
    assert "and 40 more (not listed here; grep the log for the rest)" in c.text


@pytest.mark.parametrize(("command", "family"), [
    ("pytest -q", "pytest"), ("uv run python -m pytest tests/", "pytest"), ("cd app && py.test -x", "pytest"),
    ("python3 -m unittest discover", "unittest"), ("python manage.py test", "unittest"),
    ("cargo test --lib", "cargo-test"), ("cargo +nightly test", "cargo-test"), ("cargo nextest run", "cargo-test"),
    ("npm test", "js-test"), ("yarn test --ci", "js-test"), ("pnpm run test:unit", "js-test"),
    ("npx jest sum", "js-test"), ("npx vitest run", "js-test"), ("mocha", "js-test"), ("bun run test", "js-test"),
    ("go test ./...", "go-test"), ("GOFLAGS=-count=1 go test -run X ./pkg", "go-test"),
    ("swift test --parallel", "swift-test"),
    ("cargo build", "cargo-build"), ("npm install", "npm-install"), ("go build ./...", "go-build"),
    ("ls -la", "generic"),
    ("echo 'unclosed", "generic"),
])
def test_detect_by_main_program(command: str, family: str) -> None:
    assert family == detect(simple_commands(command)).NAME


def test_registry_contract() -> None:
    names = [f.NAME for f in FAMILIES]
    assert names[-1] == "generic" and len(set(names)) == len(names)
    for f in FAMILIES:
        assert f.KIND in ("structured", "generic") and callable(f.detect) and callable(f.summarise)
        assert by_name(f.NAME) is f
    assert by_name("no-such-family") is None
