"""Fidelity of the pip, npm-install and apt families. pip runs for real from this virtualenv, offline, on
wheels built in a temporary folder; npm runs for real, offline, on a package packed in a temporary folder;
apt-get runs for real where the failure does not depend on the machine's package lists. uv, yarn, pnpm and
the apt runs that would change the machine are recorded outputs (their metadata says which are real runs
and which were written to the documented format)."""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

import pytest

from outloop.runner.families import apt, npm_install, pip
from outloop.runner.families.base import Limits
from tests.unit.familykit import Output, compact, keeps, need, recorded, run, smaller, summarise

PIP = f"{Path(sys.executable).parent}/python -m pip"
QUIET_PIP = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_FIND_LINKS": "",
             "PIP_CONFIG_FILE": "/dev/null"}


def wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal valid pure-Python wheel (what a build backend would produce for a one-module package)."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"X = 1\n",
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                             + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()},"
                     f"{len(v)}\n" for k, v in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return path


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    wheel(tmp_path, "demo_a", "1.0", ("demo_b",))
    wheel(tmp_path, "demo_b", "2.0")
    (tmp_path / "badproj").mkdir()
    (tmp_path / "badproj" / "setup.py").write_text('raise RuntimeError("boom: cannot build demo_bad")\n')
    return tmp_path


def test_detect() -> None:
    assert pip.detect(["pip", "install", "-r", "r.txt"]) and pip.detect(["pip3.11", "install", "x"])
    assert pip.detect(["uv", "pip", "install", "x"]) and pip.detect(["uv", "sync"]) and pip.detect(["uv", "add", "x"])
    assert not pip.detect(["pip", "list"]) and not pip.detect(["uv", "run", "x"])
    assert not pip.detect(["pipx", "install"])
    assert npm_install.detect(["npm", "ci"]) and npm_install.detect(["npm", "i", "-D", "x"])
    assert npm_install.detect(["yarn"])
    assert npm_install.detect(["pnpm", "install", "--frozen-lockfile"]) and npm_install.detect(["yarn", "add", "x"])
    assert not npm_install.detect(["npm", "run", "build"]) and not npm_install.detect(["yarn", "test"])
    assert apt.detect(["apt-get", "install", "-y", "x"]) and apt.detect(["apt", "update"])
    assert not apt.detect(["apt-cache", "search", "x"]) and not apt.detect(["apt", "list"])


@pytest.mark.slow
def test_pip_install_passing_and_again(wheels: Path) -> None:
    out = run(f"{PIP} install --no-index --find-links . --target t demo_a", wheels, QUIET_PIP)
    assert out.exit_code == 0, out.raw
    result = compact(pip, out)
    assert result.summary_line == "Successfully installed demo_a-1.0 demo_b-2.0" and result.failures == []
    again = compact(pip, run(f"{PIP} install --no-index --find-links . --target t demo_a", wheels, QUIET_PIP))
    keeps(again, "WARNING: Target directory", "already exists")


@pytest.mark.slow
def test_pip_failures_keep_the_reason(wheels: Path) -> None:
    missing = run(f"{PIP} install --no-index nonexistent-pkg-xyz", wheels, QUIET_PIP)
    assert missing.exit_code == 1
    result = compact(pip, missing)
    keeps(result, "ERROR: Could not find a version that satisfies the requirement nonexistent-pkg-xyz",
          "ERROR: No matching distribution found for nonexistent-pkg-xyz")
    build = run(f"{PIP} install --no-index --no-build-isolation ./badproj", wheels, {**QUIET_PIP, "FORCE_COLOR": "1"})
    assert build.exit_code == 1 and b"\x1b[" in build.raw  # coloured, as a terminal would show it
    result = compact(pip, build)
    keeps(result, "RuntimeError: boom: cannot build demo_bad", "error: subprocess-exited-with-error",
          "× Preparing metadata (pyproject.toml) did not run successfully.", "error: metadata-generation-failed")
    assert "_in_process.py" not in result.text  # the traceback's frames are left out
    assert summarise(pip, Output("pip install x", b"", 1)) is None


@pytest.mark.slow
def test_pip_huge_already_satisfied() -> None:
    from importlib.metadata import distributions

    names = sorted({d.metadata["Name"] for d in distributions()})
    out = run(f"{PIP} install --no-index {' '.join(names)}", Path.cwd(), QUIET_PIP)
    assert out.exit_code == 0 and out.raw.count(b"Requirement already satisfied") >= len(names) > 20
    result = compact(pip, out)
    keeps(result, "requirement(s) already satisfied")
    assert result.text.count("\n") < 6
    smaller(result, out, 20)


def test_uv_recorded() -> None:
    ok = compact(pip, recorded("pip", "uv-install"))
    assert ok.summary_line == "Installed 2 packages in 2ms"
    keeps(ok, "packages: + demo-a==1.0 + demo-b==2.0", "Resolved 2 packages")
    unsat = compact(pip, recorded("pip", "uv-unsatisfiable"))
    keeps(unsat, "error: No solution found when resolving dependencies\n  cause: Because only demo-b==2.0 is available")
    build = compact(pip, recorded("pip", "uv-build-error"))
    keeps(build, "error: The build backend returned an error", "ModuleNotFoundError: No module named 'setuptools'")


@pytest.fixture
def npm_project(tmp_path: Path) -> Path:
    need("npm")
    lib, app = tmp_path / "lib", tmp_path / "app"
    lib.mkdir()
    app.mkdir()
    (lib / "package.json").write_text('{"name": "demo-lib", "version": "1.0.0"}')
    (lib / "index.js").write_text("module.exports = 1;\n")
    (app / "package.json").write_text('{"name": "demo-app", "version": "1.0.0"}')
    assert run("npm pack --offline --silent", lib).exit_code == 0
    return app


NPM_ENV = {"npm_config_update_notifier": "false", "npm_config_fund": "false", "npm_config_audit": "false"}


@pytest.mark.slow
def test_npm_install_passing_failing_and_usage(npm_project: Path) -> None:
    out = run("npm install --offline ../lib/demo-lib-1.0.0.tgz", npm_project, NPM_ENV)
    assert out.exit_code == 0, out.raw
    result = compact(npm_install, out)
    assert result.summary_line is not None and result.summary_line.startswith("added 1 package")
    missing = run("npm install --offline --color=always left-pad-nonexistent-xyz", npm_project, NPM_ENV)
    assert missing.exit_code == 1 and b"\x1b[" in missing.raw
    result = compact(npm_install, missing)
    keeps(result, "npm error code ENOTCACHED", "request to https://registry.npmjs.org/left-pad-nonexistent-xyz failed",
          "A complete log of this run can be found in")
    assert result.failures == ["npm error code ENOTCACHED"]
    (npm_project / "package-lock.json").unlink()
    usage = run("npm ci --offline", npm_project, NPM_ENV)
    assert usage.exit_code == 1
    result = compact(npm_install, usage, Limits(detail_lines=6))
    keeps(result, "npm error code EUSAGE", "The `npm ci` command can only install with an existing package-lock.json",
          "more npm error lines in the log]")
    smaller(result, usage, 4)


def test_yarn_and_pnpm_recorded() -> None:
    added = compact(npm_install, recorded("npm-install", "yarn-add"))
    assert added.summary_line == "Done in 0.16s." and added.failures == []
    missing = compact(npm_install, recorded("npm-install", "yarn-missing"))
    keeps(missing, 'error Couldn\'t find any versions for "left-pad-nonexistent-xyz"')
    assert "info Visit" not in missing.text
    padd = compact(npm_install, recorded("npm-install", "pnpm-add"))
    keeps(padd, "packages: + demo-lib 1.0.0")
    assert padd.summary_line is not None and padd.summary_line.startswith("Done in ")
    assert "Progress:" not in padd.text
    pmiss = compact(npm_install, recorded("npm-install", "pnpm-missing"))
    keeps(pmiss, "ERR_PNPM_NO_OFFLINE_META", "Failed to resolve left-pad-nonexistent-xyz@latest")
    assert compact(npm_install, recorded("npm-install", "pnpm-install")).summary_line is not None


def test_npm_huge_warnings_are_capped() -> None:
    """A long run of deprecation warnings (the real line's shape, 20,000 package names): the text stays small
    and says how many were left out."""
    line = "npm warn deprecated pkg{}@1.0.{}: This package is no longer supported.\n"
    raw = "".join(line.format(i, i) for i in range(20000)).encode() + b"\nadded 20000 packages in 9s\n"
    result = compact(npm_install, Output("npm install", raw, 0))
    assert result.summary_line == "added 20000 packages in 9s"
    keeps(result, "20000 warnings", "... and 19950 more")
    smaller(result, Output("npm install", raw, 0), 100)


def test_apt_missing_package_for_real() -> None:
    need("apt-get")
    out = run("apt-get install -s -y nonexistent-pkg-xyz", Path.cwd())
    assert out.exit_code == 100
    result = compact(apt, out)
    keeps(result, "E: Unable to locate package nonexistent-pkg-xyz")
    assert "Reading package lists" not in result.text


def test_apt_recorded_and_written() -> None:
    sim = compact(apt, recorded("apt", "simulate"))
    assert sim.summary_line is not None and sim.summary_line.startswith("0 upgraded, 2 newly installed")
    keeps(sim, "The following NEW packages will be installed: cowsay libtext-charwidth-perl")
    download = compact(apt, recorded("apt", "download"))
    keeps(download, "Fetched 30.9 kB", "Download complete and in download only mode")
    assert "Get:1" not in download.text
    missing = compact(apt, recorded("apt", "missing"))
    keeps(missing, "E: Unable to locate package nonexistent-pkg-xyz")
    failing = compact(apt, recorded("apt", "install-failing"))
    keeps(failing, "dpkg: error processing package cowsay (--configure):\n  installed cowsay package post-installation "
          "script subprocess returned error exit status 127", "Errors were encountered while processing:\n  cowsay",
          "E: Sub-process /usr/bin/dpkg returned an error code (1)", "update-cowpath: not found",
          "Setting up (2): libtext-charwidth-perl cowsay")
    assert "Unpacking" not in failing.text and "Reading database" not in failing.text
    update = compact(apt, recorded("apt", "update-failing"))
    keeps(update, "Err:4 http://apt.example.org/repo bookworm InRelease\n  Could not resolve 'apt.example.org'",
          "W: Some index files failed to download.")
    assert update.summary_line == "144 packages can be upgraded. Run 'apt list --upgradable' to see them."
    assert summarise(apt, Output("apt-get install x", b"", 100)) is None


def test_apt_huge_install_is_bounded() -> None:
    """A long install (the real lines' shape, 5,000 packages): the packages are counted, a few listed."""
    body = "".join(f"Get:{i} http://deb.debian.org/debian bookworm/main amd64 p{i} all 1.0 [1 kB]\n"
                   f"Unpacking p{i} (1.0) ...\nSetting up p{i} (1.0) ...\n" for i in range(5000))
    raw = (body + "0 upgraded, 5000 newly installed, 0 to remove and 0 not upgraded.\n").encode()
    result = compact(apt, Output("apt-get install -y big", raw, 0))
    keeps(result, "Setting up (5000): p0 p1", "(and 4960 more)")
    smaller(result, Output("apt-get install -y big", raw, 0), 100)


def test_apt_coloured_shape() -> None:
    """apt's recorded install wrapped in colour codes (as apt's own progress bar and a coloured terminal
    show it): the same result as the plain output."""
    plain = recorded("apt", "install-failing")
    coloured = Output(plain.command, b"".join(b"\x1b[0;32m" + ln + b"\x1b[0m\n" for ln in plain.raw.splitlines()),
                      plain.exit_code)
    assert compact(apt, coloured).text == compact(apt, plain).text
