"""What every command-line module shares: its consoles, the one form of an error, and the settings of a
command (``--db`` wins over ``OUTLOOP_DB``). ``outloop.cli`` mounts the sub-CLIs (``quota_cli``,
``discover_cli``), so they cannot import this from it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from outloop.streams.settings import Settings

out = Console(emoji=False, highlight=False)
err = Console(stderr=True, emoji=False, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` (the one form of every CLI error) and return the Exit to raise."""
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    return typer.Exit(code)


def settings(db: Path | None = None, **overrides: Any) -> Settings:
    """The settings from the environment; exit 2 with the reason when they are invalid."""
    try:
        s = Settings.from_env()
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if db is not None:
        overrides["db"] = db.expanduser().resolve()
    return replace(s, **overrides) if overrides else s
