"""Fidelity of the cargo-build, go-build and swift-build families: cargo runs for real (offline, a tiny
crate in a temporary folder); go and swift use recorded outputs (go: real runs of go 1.19 recorded with
their command; swift: written to the documented format, as its metadata says)."""

from __future__ import annotations

from pathlib import Path

import pytest

from outloop.runner.families import cargo_build, go_build, swift_build
from outloop.runner.families.base import Limits
from tests.unit.familykit import Output, compact, keeps, need, recorded, run, smaller, summarise

BAD_RS = """fn main() {
    let x = 5;
    println!("{}", y);
    let s: i32 = "a";
}
"""
WARN_RS = 'fn main() {\n    let unused = 5;\n    println!("ok");\n}\n'


@pytest.fixture
def crate(tmp_path: Path) -> Path:
    need("cargo")
    (tmp_path / "src").mkdir()
    (tmp_path / "Cargo.toml").write_text('[package]\nname = "demo"\nversion = "0.1.0"\nedition = "2021"\n')
    (tmp_path / "src" / "main.rs").write_text(BAD_RS)
    return tmp_path


CARGO_ENV = {"CARGO_TERM_COLOR": "never"}


def test_detect() -> None:
    assert cargo_build.detect(["cargo", "build", "--release"]) and cargo_build.detect(["cargo", "+nightly", "check"])
    assert cargo_build.detect(["cargo", "clippy", "--", "-D", "warnings"]) and cargo_build.detect(["rustc", "a.rs"])
    assert not cargo_build.detect(["cargo", "test"]) and not cargo_build.detect(["cargo", "fmt"])
    assert not cargo_build.detect(["cargo", "run"]) and not go_build.detect(["go", "run", "."])
    assert go_build.detect(["go", "build", "./..."]) and go_build.detect(["go", "vet", "./..."])
    assert not go_build.detect(["go", "test", "./..."]) and not go_build.detect(["go"])
    assert swift_build.detect(["swift", "build", "-c", "release"]) and not swift_build.detect(["swift", "test"])


def test_cargo_failing_joins_each_error_to_its_location(crate: Path) -> None:
    out = run("cargo build --offline", crate, CARGO_ENV)
    assert out.exit_code == 101
    result = compact(cargo_build, out)
    keeps(result, "src/main.rs:3:20: error[E0425]: cannot find value `y` in this scope",
          "src/main.rs:4:18: error[E0308]: mismatched types")
    assert result.failures == ["src/main.rs:3", "src/main.rs:4"]
    assert result.summary_line is not None and result.summary_line.startswith("error: could not compile `demo`")
    assert "Compiling demo" not in result.text and "help:" not in result.text and "rustc --explain" not in result.text


def test_cargo_passing_with_warning(crate: Path) -> None:
    (crate / "src" / "main.rs").write_text(WARN_RS)
    result = compact(cargo_build, run("cargo build --offline", crate, CARGO_ENV))
    keeps(result, "src/main.rs:2:9: warning: unused variable: `unused`", "0 errors, 1 warning")
    assert result.failures == [] and result.summary_line is not None and "Finished" in result.summary_line


def test_cargo_ansi_coloured_same_as_plain(crate: Path) -> None:
    plain = compact(cargo_build, run("cargo build --offline", crate, CARGO_ENV))
    colour = run("cargo build --offline --color=always", crate)
    assert b"\x1b[" in colour.raw
    assert compact(cargo_build, colour).text == plain.text


def test_cargo_huge_and_outside_a_crate(crate: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    body = "".join(f"    let _ = u{i};\n" for i in range(300))
    (crate / "src" / "main.rs").write_text(f"fn main() {{\n{body}}}\n")
    out = run("cargo check --offline", crate, CARGO_ENV)
    result = compact(cargo_build, out)
    assert len(result.failures) == 300 and result.failures[-1] == "src/main.rs:301"
    assert "due to 300 previous errors" in (result.summary_line or "")
    smaller(result, out, 2)  # every error is kept, one line each
    capped = compact(cargo_build, out, Limits(max_failures=100))
    keeps(capped, "300 errors", "... and 200 more")
    empty = tmp_path_factory.mktemp("nocrate")
    nocrate = compact(cargo_build, run("cargo build --offline", empty, CARGO_ENV))
    keeps(nocrate, "error: could not find `Cargo.toml`")
    assert summarise(cargo_build, Output("cargo build", b"", 101)) is None


def test_go_build_recorded_failures() -> None:
    out = recorded("go-build", "failing")
    result = compact(go_build, out)
    keeps(result, "# example.com/demo", './main.go:5:2: imported and not used: "os"', "./main.go:12:14: undefined: y",
          "./main.go:14:18: not enough arguments in call to add\n\thave (number)\n\twant (int, int)")
    assert result.failures == ["./main.go:5", "./main.go:11", "./main.go:12", "./main.go:13", "./main.go:14"]
    vet = compact(go_build, recorded("go-build", "vet"))
    assert vet.failures == ["./main.go:7"]
    keeps(vet, "fmt.Printf format %d has arg s of wrong type string")


def test_go_build_passing_capped_huge_and_no_module() -> None:
    passing = compact(go_build, recorded("go-build", "passing"))
    assert passing.failures == [] and passing.text.startswith("[outloop] go-build: exit 0; 0 errors")
    capped = compact(go_build, recorded("go-build", "capped"))
    assert len(capped.failures) == 10 and capped.summary_line == "./main.go:13:2: too many errors"
    huge = recorded("go-build", "huge")
    result = compact(go_build, huge, Limits(max_failures=150))
    assert len(result.failures) == 150
    keeps(result, "400 errors", "... and 250 more")
    nomodule = compact(go_build, recorded("go-build", "nomodule"))
    keeps(nomodule, "pattern ./...: directory prefix . does not contain main module")
    # ANSI colour around go's lines (go prints none itself; a wrapper such as grc would) changes nothing
    failing = recorded("go-build", "failing")
    coloured = Output(failing.command, b"".join(b"\x1b[31m" + ln + b"\x1b[0m\n" for ln in failing.raw.splitlines()),
                      failing.exit_code)
    assert compact(go_build, coloured).text == compact(go_build, failing).text


def test_swift_build_written_fixtures() -> None:
    result = compact(swift_build, recorded("swift-build", "failing"))
    keeps(result, "/home/dev/Demo/Sources/Demo/Demo.swift:4:16: error: cannot convert return expression of type "
                  "'String' to return type 'Int' (x2)",
          "/home/dev/Demo/Sources/Demo/main.swift:3:7: error: cannot find 'missing' in scope",
          "error: emit-module command failed with exit code 1",
          "main.swift:2:5: warning: initialization of immutable value 'unused' was never used")
    assert "`- error" not in result.text and "[4/5]" not in result.text
    assert "4 errors (3 distinct)" in result.text and "note: the summary" not in result.text
    assert "/home/dev/Demo/Sources/Demo/main.swift:3" in result.failures
    passing = compact(swift_build, recorded("swift-build", "passing"))
    assert passing.summary_line == "Build complete! (2.41s)" and passing.failures == []
    linker = compact(swift_build, recorded("swift-build", "linker"))
    keeps(linker, "cannot find -lmissingdep", "clang: error: linker command failed with exit code 1")
    assert summarise(swift_build, Output("swift build", b"", 1)) is None


def test_swift_build_huge_and_coloured_shape() -> None:
    """Swift's own lines (the written fixture's error block) repeated for 2,000 files, and the fixture wrapped
    in colour codes as a terminal shows it: the errors are all counted, the colour changes nothing."""
    failing = recorded("swift-build", "failing")
    block = b"".join(f"/home/dev/Demo/Sources/Demo/F{i}.swift:3:7: error: cannot find 'missing' in scope\n"
                     f" 3 | print(missing)\n   |       `- error: cannot find 'missing' in scope\n".encode()
                     for i in range(2000))
    huge = Output("swift build", b"Building for debugging...\n" + block + b"error: fatalError\n", 1)
    result = compact(swift_build, huge)
    assert len(result.failures) == 1000
    keeps(result, "2001 errors", "... and 1001 more")
    smaller(result, huge, 2)
    painted = b"".join(b"\x1b[1m\x1b[31m" + ln + b"\x1b[0m\n" for ln in failing.raw.splitlines())
    coloured = Output(failing.command, painted, failing.exit_code)
    assert compact(swift_build, coloured).text == compact(swift_build, failing).text
