"""Filing drafts as GitHub issues through the ``gh`` CLI. A dry run (the default) only shows the exact
commands and runs none. A real run first looks for an issue whose body holds the recommendation's id
(``gh issue list --search "<id> in:body"``, open or closed): found, the issue's body is updated with the
draft (``gh issue edit``); not found, ``gh issue create`` files it once. Recommendations already recorded
as filed (``recommendation_feedback``) are updated at the recorded issue, never filed again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]
GH_TIMEOUT_S = 60.0


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=GH_TIMEOUT_S, check=False)


class FilingError(RuntimeError):
    pass


@dataclass(frozen=True)
class Filed:
    id: str
    action: str  # create | update | would-create | would-update
    command: list[str]
    url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "command": self.command, "url": self.url}


def gh_ready(gh: str = "gh", run: Runner = _run) -> str | None:
    """None when ``gh`` is installed and authenticated, else why not."""
    if shutil.which(gh) is None:
        return "the gh CLI is not installed (https://cli.github.com)"
    done = run([gh, "auth", "status"])
    return None if done.returncode == 0 else f"gh is not authenticated: {(done.stderr or done.stdout).strip()}"


def _repo(repo: str | None) -> list[str]:
    return ["--repo", repo] if repo else []


def _existing(gh: str, rec_id: str, repo: str | None, run: Runner) -> str | None:
    """The number of an issue whose body holds ``rec_id``, or None."""
    done = run([gh, "issue", "list", *_repo(repo), "--state", "all", "--search", f"{rec_id} in:body",
                "--json", "number,url,body", "--limit", "20"])
    if done.returncode != 0:
        raise FilingError(f"gh issue list failed: {(done.stderr or done.stdout).strip()}")
    for issue in json.loads(done.stdout or "[]"):
        if rec_id in str(issue.get("body", "")):
            return str(issue.get("number") or issue.get("url"))
    return None


def file_issues(recs: Iterable[Mapping[str, Any]], drafts: Path, *, repo: str | None = None, dry_run: bool = True,
                filed: Mapping[str, str] | None = None, gh: str = "gh", run: Runner = _run) -> list[Filed]:
    """File (or, in a dry run, show) one issue per recommendation whose draft exists in ``drafts``.
    ``filed`` maps ids already filed to their issue URL."""
    filed = filed or {}
    out = []
    for rec in recs:
        rid, body = rec["id"], drafts / f"{rec['id']}.md"
        if not body.exists():
            continue
        create = [gh, "issue", "create", *_repo(repo), "--title", str(rec["title"]).replace("`", ""),
                  "--body-file", str(body)]
        known = filed.get(rid)
        if dry_run:
            edit = [gh, "issue", "edit", known, *_repo(repo), "--body-file", str(body)] if known else None
            out.append(Filed(rid, "would-update" if edit else "would-create", edit or create, known))
            continue
        number = known or _existing(gh, rid, repo, run)
        if number:
            edit = [gh, "issue", "edit", number, *_repo(repo), "--body-file", str(body)]
            done = run(edit)
            if done.returncode != 0:
                raise FilingError(f"gh issue edit failed: {(done.stderr or done.stdout).strip()}")
            out.append(Filed(rid, "update", edit, known or number))
            continue
        done = run(create)
        if done.returncode != 0:
            raise FilingError(f"gh issue create failed: {(done.stderr or done.stdout).strip()}")
        out.append(Filed(rid, "create", create, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else None))
    return out
