"""The registry of output families, in priority order: the first whose ``detect`` accepts the command's
main program summarises its output; ``generic`` (last) takes everything else. See ``base.py`` for the
contract a family implements. Stdlib only.

A family is one line in ``NAMES`` (its module's name in this package), in the block it belongs to.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES: list[str] = [
    # test runners: one line a family
    "py_pytest",
    "py_unittest",
    "cargo_test",
    "js_test",
    "go_test",
    "swift_test",
    # builds and compilers, linters and type checkers, installers, git: one line a family
    "swift_build",
    "cargo_build",
    "go_build",
    "make",
    "cc",
    "tsc",
    "ruff",
    "eslint",
    "mypy",
    "pip",
    "npm_install",
    "apt",
    "git_status",
    "git_diff",
    "git_log",
    "generic",  # always last: it accepts every command
]

FAMILIES: list[ModuleType] = [importlib.import_module(f"{__name__}.{n}") for n in NAMES]
generic = FAMILIES[-1]

_BY_NAME = {f.NAME: f for f in FAMILIES}


def by_name(name: str) -> ModuleType | None:
    """The family called ``name``, or None."""
    return _BY_NAME.get(name)


def detect(argvs: list[list[str]]) -> ModuleType:
    """The family for a command given as its simple commands' words (``argv.simple_commands``): the
    last simple command a structured family accepts decides (``cd app && pytest -q`` is pytest's),
    else the generic family."""
    for argv in reversed(argvs):
        for fam in FAMILIES:
            if fam is not generic and fam.detect(argv):
                return fam
    return generic
