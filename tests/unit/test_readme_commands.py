"""The README's command table ("Using it") names every command of the CLI with every one of its options,
so a user reading it learns each flag that exists (the table is checked against the typer app itself)."""

from __future__ import annotations

import re
from typing import Any

import typer

from outloop.cli import app
from outloop.doctables import README


def table_rows() -> list[str]:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"\| command \| what it does \|\n\|---\|---\|\n((?:\|.*\n)+)", text)
    assert found, "the README lost its command table"
    return found.group(1).splitlines()


def leaf_commands(group: Any, path: tuple[str, ...] = (), inherited: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    """(path, options) of every command, a group's own options (``outloop quota --at``) included."""
    own = tuple(o for p in group.params if "Option" in type(p).__name__ and p.name != "help" for o in p.opts)
    subs = getattr(group, "commands", None)
    if not subs:
        return [(path, inherited + own)]
    return [leaf for name, sub in subs.items() for leaf in leaf_commands(sub, (*path, name), inherited + own)]


def test_every_command_and_option_is_in_the_readme_table() -> None:
    rows = table_rows()
    gaps = []
    for path, options in leaf_commands(typer.main.get_command(app)):
        mine = [r for r in rows if f"`outloop {path[0]}" in r and all(word in r for word in path[1:])]
        if not mine:
            gaps.append(f"outloop {' '.join(path)}: no row")
            continue
        gaps += [f"outloop {' '.join(path)}: {o}" for o in options if not any(o in r for r in mine)]
    assert not gaps, f"the README's command table misses: {gaps}"
