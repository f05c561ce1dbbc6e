"""The command rule table: every example in it is a test, the load-time checks fail loudly, a user's
own file adds and overrides entries (checked the same way), and the rules' content feeds the version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from outloop.agents import programs, ruletable
from outloop.agents.ruletable import RulesError
from outloop.agents.signatures import (
    RULES_TABLE,
    SIGNATURE_VERSION,
    check_examples,
    command_signature,
    rules_version,
    use_rules,
)

BUILTIN = ruletable.load_builtin()
EXAMPLES = [(p.names[0], i, ex) for p in BUILTIN.programs for i, ex in enumerate(p.examples)]


@pytest.mark.parametrize(("entry", "i", "ex"), EXAMPLES, ids=[f"{n}-{i}" for n, i, _ in EXAMPLES])
def test_every_example_of_the_table_holds(entry: str, i: int, ex: ruletable.Example) -> None:
    got = command_signature(ex.run, cache=None)
    assert (got.signature, got.side_effect) == (ex.sig, ex.effect), f"{entry} example {i + 1}: {ex.run!r}"


def test_every_program_name_has_an_example() -> None:
    """Not only one example per entry: every name an entry lists is run by one of its examples."""
    missing = []
    for p in BUILTIN.programs:
        if p.internal:
            continue
        words = [[programs.basename(w).lower() for w in ex.run.split()] for ex in p.examples]
        ran = {w for ws in words for w in ws} | {f"{a}-{b}" for ws in words for a, b in zip(ws, ws[1:], strict=False)}
        missing += [n for n in p.names if n not in ran]
    assert not missing, missing
    assert len(BUILTIN.by_name) > 700 and RULES_TABLE.user_path is None


def test_handlers_are_few_and_all_used() -> None:
    used = {p.handler for p in BUILTIN.programs if p.handler}
    assert used == set(programs.HANDLERS)  # no handler without an entry, no entry without its handler
    assert len(used) < len(BUILTIN.programs)
    with pytest.raises(ValueError, match="registered twice"):
        programs.handler(programs.HANDLERS["git"])


def _entry(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "names": ["mytool"],
        "category": "test",
        "target": "word",
        "examples": [{"run": "mytool unit", "sig": "test:mytool:unit", "effect": "writes files"}],
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([_entry(), _entry(names=["other", "mytool"])], "'mytool' is already covered by entry 1"),
        ([_entry(examples=[])], "at least one example"),
        ([{k: v for k, v in _entry().items() if k != "examples"}], "at least one example"),
        ([_entry(colour="red")], "unknown field"),
        ([_entry(category="testing")], "unknown category"),
        ([_entry(effect="harmless")], "unknown side effect"),
        ([_entry(target="everything")], "target"),
        ([_entry(handler="git")], "exactly one"),
        ([_entry(names=["MyTool"])], "lower case"),
        ([_entry(names=["mytool.exe"])], "lower case"),
        ([_entry(examples=[{"run": "mytool", "sig": "test:mytool:*"}])], "an example is"),
        ([_entry(subcommands={"x": {"colour": 1}})], "subcommand"),
    ],
)
def test_load_time_checks_fail_loudly(tmp_path: Path, entries: list[object], message: str) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"program": entries}))
    with pytest.raises(RulesError, match=message):
        ruletable.load(path, BUILTIN)


def test_the_builtin_table_itself_is_checked(tmp_path: Path) -> None:
    data = json.loads(ruletable.BUILTIN.read_text())
    data["program"].append(_entry(names=["git"]))
    bad = tmp_path / "commands.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(RulesError, match="'git' is already covered"):
        ruletable.load_builtin(bad)


@pytest.fixture
def restore_rules() -> Iterator[None]:
    yield
    use_rules(None)


NEW_PROGRAM = """
# A program outloop does not know, and an override of a built-in one.
[[program]]
names = ["mytool"]
category = "test"
target = "word"
values = ["--shard"]
subcommands = { lint = "lint", deploy = { category = "run", effect = "network" } }
examples = [
  { run = "mytool --shard 3 unit", sig = "test:mytool:unit", effect = "writes files" },
  { run = "mytool deploy prod", sig = "run:mytool:deploy", effect = "network" },
  { run = "cd api && mytool lint | tail", sig = "lint:mytool:lint", effect = "read-only" },
]

[[program]]
names = ["terraform"]
category = "build"
target = "word"
subcommands = { destroy = { category = "edit", effect = "destructive" } }
examples = [{ run = "terraform plan", sig = "build:terraform:plan", effect = "writes files" }]
"""


def test_a_user_file_adds_and_overrides_programs(tmp_path: Path, restore_rules: None) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(NEW_PROGRAM)
    assert command_signature("mytool unit", cache=None).category == "other"
    before_helm = command_signature("helm list", cache=None)
    table = use_rules(path)
    assert command_signature("mytool unit", cache=None).signature == "test:mytool:unit"
    assert command_signature("sudo terraform destroy -auto-approve", cache=None).side_effect == "destructive"
    assert command_signature("helm list", cache=None) == before_helm  # terraform's old family keeps the rest
    assert table.user_path == str(path) and rules_version(table) != rules_version(BUILTIN)
    assert check_examples(table, user_only=True) == []
    stale = check_examples(table)  # the built-in examples of what the user overrode, and only those
    assert stale and all(line.startswith("'terraform ") for line in stale)
    use_rules(None)
    assert command_signature("mytool unit", cache=None).category == "other"


def test_a_user_file_that_does_not_check_leaves_the_builtin_rules(tmp_path: Path, restore_rules: None) -> None:
    wrong = tmp_path / "rules.toml"
    wrong.write_text(NEW_PROGRAM.replace('sig = "test:mytool:unit"', 'sig = "test:mytool:all"'))
    with pytest.raises(RulesError, match="1 example\\(s\\) do not hold"):
        use_rules(wrong)
    assert command_signature("mytool unit", cache=None).category == "other"
    no_handler = tmp_path / "rules.json"
    no_handler.write_text(json.dumps({"program": [_entry(category=None, handler="my_code")]}))
    with pytest.raises(RulesError, match="unknown handler"):
        use_rules(no_handler)
    assert command_signature("git status", cache=None).signature == "vcs:git:status"


def test_user_rules_path(tmp_path: Path) -> None:
    assert ruletable.user_rules_path({"OUTLOOP_HOME": str(tmp_path)}) is None
    (tmp_path / "rules.toml").write_text("")
    assert ruletable.user_rules_path({"OUTLOOP_HOME": str(tmp_path)}) == tmp_path / "rules.toml"
    assert ruletable.user_rules_path({"OUTLOOP_RULES": "/x/r.json", "OUTLOOP_HOME": str(tmp_path)}) == Path(
        "/x/r.json"
    )


def test_the_version_follows_the_table(tmp_path: Path) -> None:
    data = json.loads(ruletable.BUILTIN.read_text())
    data["program"][0]["examples"].append({"run": "cd", "sig": "env:cd:*", "effect": "read-only"})
    changed = tmp_path / "commands.json"
    changed.write_text(json.dumps(data))
    assert rules_version(BUILTIN) == SIGNATURE_VERSION
    assert rules_version(ruletable.load_builtin(changed)) != SIGNATURE_VERSION
    assert 2**31 > SIGNATURE_VERSION > 2  # stored as INTEGER; above every version before the table


def _import_signatures(env_extra: dict[str, str]) -> list[str]:
    code = "from outloop.agents.signatures import SIGNATURE_VERSION as v, command_signature as c\n"
    code += "print(v); print(c('mytool unit').signature)"
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [*out.stdout.split(), out.stderr]


def test_user_rules_at_import_and_failing_open(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(NEW_PROGRAM)
    version, sig, _ = _import_signatures({"OUTLOOP_RULES": str(good)})
    assert sig == "test:mytool:unit" and int(version) != SIGNATURE_VERSION
    bad = tmp_path / "bad.toml"
    bad.write_text(NEW_PROGRAM.replace("[[program]]\nnames = [\"terraform\"]", "[[program]]\nnames = [\"mytool\"]"))
    version, sig, err = _import_signatures({"OUTLOOP_RULES": str(bad)})
    assert sig == "other:mytool:unit" and int(version) == SIGNATURE_VERSION
    assert "user command rules ignored" in err and "already covered" in err


def test_the_documented_user_file_works(tmp_path: Path, restore_rules: None) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "signatures.md").read_text()
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "rules.toml"
    path.write_text(block)
    use_rules(path)
    assert command_signature("mytool deploy prod", cache=None).signature == "run:mytool:deploy"
    assert command_signature("terraform destroy", cache=None).side_effect == "destructive"
