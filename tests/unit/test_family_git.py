"""Fidelity of the git-status, git-diff and git-log families on real git runs in a repository made in a
temporary folder: conflicts are never dropped, the diffstat and hunk headers match the patch, one line per
commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from outloop.runner.families import git_diff, git_log, git_status
from outloop.runner.families.base import Limits
from tests.unit.familykit import Output, compact, keeps, need, run, smaller, summarise

GIT_ENV = {"GIT_AUTHOR_NAME": "Ada Dev", "GIT_AUTHOR_EMAIL": "ada@example.org", "GIT_COMMITTER_NAME": "Ada Dev",
           "GIT_COMMITTER_EMAIL": "ada@example.org", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_AUTHOR_DATE": "2026-12-01T10:00:00+00:00", "GIT_COMMITTER_DATE": "2026-12-01T10:00:00+00:00"}


def git(repo: Path, command: str) -> Output:
    return run(f"git {command}", repo, GIT_ENV)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    need("git")
    assert git(tmp_path, "init -q -b main").exit_code == 0
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("".join(f"line {i}\n" for i in range(1, 41)))
    (tmp_path / "README.md").write_text("# demo\n")
    assert git(tmp_path, "add -A").exit_code == 0
    assert git(tmp_path, "commit -q -m 'First commit' -m 'A body line that is left out.'").exit_code == 0
    return tmp_path


def test_detect() -> None:
    assert git_status.detect(["git", "status", "-s"]) and git_status.detect(["git", "-C", "x", "status"])
    assert git_diff.detect(["git", "--no-pager", "diff", "HEAD~1"]) and git_diff.detect(["git", "show", "HEAD"])
    assert git_log.detect(["git", "-c", "color.ui=never", "log", "-5"]) and not git_log.detect(["git", "commit"])
    assert not git_status.detect(["hg", "status"]) and not git_diff.detect(["diff", "a", "b"])


def test_git_status_long_and_short(repo: Path) -> None:
    (repo / "src" / "app.py").write_text("changed\n")
    (repo / "new.py").write_text("x = 1\n")
    assert git(repo, "add new.py").exit_code == 0
    (repo / "untracked.txt").write_text("u\n")
    long = compact(git_status, git(repo, "status"))
    keeps(long, "On branch main", "staged (1):\n  new file:   new.py", "not staged (1):\n  modified:   src/app.py",
          "untracked (1):\n  untracked.txt")
    assert '(use "git' not in long.text and long.failures == []
    short = compact(git_status, git(repo, "status -s -b"))
    keeps(short, "## main", "A  new.py", " M src/app.py", "?? untracked.txt", "1 staged, 1 not staged, 1 untracked")
    coloured = git(repo, "-c color.status=always status")
    assert b"\x1b[" in coloured.raw and compact(git_status, coloured).text == long.text
    clean = compact(git_status, git(repo, "stash -u -q && git status"))
    assert clean.summary_line == "nothing to commit, working tree clean"
    assert summarise(git_status, git(repo.parent, "-C /nonexistent-dir status")) is None


def test_git_status_conflicts_are_all_kept(repo: Path) -> None:
    assert git(repo, "checkout -q -b other").exit_code == 0
    (repo / "README.md").write_text("# other\n")
    (repo / "src" / "app.py").write_text("other\n")
    assert git(repo, "commit -q -am 'Other side'").exit_code == 0
    assert git(repo, "checkout -q main").exit_code == 0
    (repo / "README.md").write_text("# main\n")
    (repo / "src" / "app.py").write_text("main\n")
    assert git(repo, "commit -q -am 'Main side'").exit_code == 0
    assert git(repo, "merge other").exit_code == 1
    result = compact(git_status, git(repo, "status"))
    keeps(result, "You have unmerged paths.",
          "unmerged (2):\n  both modified:   README.md\n  both modified:   src/app.py")
    assert result.failures == ["README.md", "src/app.py"]
    short = compact(git_status, git(repo, "status --short"))
    assert short.failures == ["README.md", "src/app.py"]
    v2 = compact(git_status, git(repo, "status --porcelain=v2 --branch"))
    assert v2.failures == ["README.md", "src/app.py"] and "# branch.head main" in v2.text


def test_git_status_huge_counts_by_folder(repo: Path) -> None:
    for d in ("gen", "build"):
        (repo / d).mkdir()
        for i in range(300 if d == "gen" else 100):
            (repo / d / f"f{i}.txt").write_text("x\n")
    out = git(repo, "status -uall")
    result = compact(git_status, out)
    keeps(result, "untracked (400):", "... and 370 more: gen/ 300, build/ 70")
    smaller(result, out, 5)


def test_git_diff_stat_and_hunk_headers(repo: Path) -> None:
    text = (repo / "src" / "app.py").read_text().splitlines()
    text[2] = "line 3 changed"
    text[30] = "line 31 changed"
    text.insert(35, "an added line")
    (repo / "src" / "app.py").write_text("\n".join(text) + "\n")
    (repo / "README.md").unlink()
    out = git(repo, "diff")
    assert out.exit_code == 0
    result = compact(git_diff, out)
    keeps(result, "2 files changed, +3 -3 in 3 hunks", "src/app.py | +3 -2, 2 hunks",
          "README.md | +0 -1, 1 hunk (deleted)", "  @@ -1,6 +1,6 @@", "  @@ -28,11 +28,12 @@")
    assert "line 3 changed" not in result.text  # the bodies are in the log
    assert compact(git_diff, git(repo, "diff --no-prefix")).text == result.text
    coloured = git(repo, "-c color.diff=always diff")
    assert b"\x1b[" in coloured.raw and compact(git_diff, coloured).text == result.text
    assert git(repo, "commit -q -am 'Change app'").exit_code == 0
    show = compact(git_diff, git(repo, "show HEAD"))
    keeps(show, "Author: Ada Dev <ada@example.org>", "Change app", "src/app.py | +3 -2, 2 hunks")


def test_git_diff_empty_not_a_patch_and_huge(repo: Path) -> None:
    empty = compact(git_diff, git(repo, "diff"))
    assert empty.text == "[outloop] git diff: no differences"
    (repo / "src" / "app.py").write_text("".join(f"line {i} {'x' * (i % 3)}\n" for i in range(1, 3001)))
    assert summarise(git_diff, git(repo, "diff --stat")) is None  # already a stat: the generic summariser
    out = git(repo, "diff")
    result = compact(git_diff, out)
    keeps(result, "1 file changed, +3000 -40 in 1 hunk;", "src/app.py | +3000 -40, 1 hunk [log line 1]")
    smaller(result, out, 50)
    bad = git(repo, "diff nosuchref")
    assert bad.exit_code == 128 and summarise(git_diff, bad) is None


def test_git_log_one_line_per_commit(repo: Path) -> None:
    for i in range(3):
        (repo / "README.md").write_text(f"# v{i}\n")
        assert git(repo, f"commit -q -am 'Release v{i}' -m 'Body {i}'").exit_code == 0
    out = git(repo, "log --decorate")
    result = compact(git_log, out)
    lines = result.text.splitlines()
    assert lines[0].startswith("[outloop] git log: 4 commits") and len(lines) == 5
    assert lines[1].endswith(" 2026-12-01 Ada Dev: Release v2 (HEAD -> main)")
    assert "Body 2" not in result.text and lines[4].endswith("Ada Dev: First commit")
    stat = compact(git_log, git(repo, "log --stat -2"))
    keeps(stat, "Release v2", "[1 files, +1 -1]")
    patch = compact(git_log, git(repo, "log -p"))
    assert len(patch.text.splitlines()) == 5 and "+# v2" not in patch.text
    coloured = git(repo, "-c color.ui=always log --decorate")
    assert b"\x1b[" in coloured.raw and compact(git_log, coloured).text.splitlines()[1:] == lines[1:]
    assert summarise(git_log, git(repo, "log --oneline")) is None


def test_git_log_huge_is_capped(repo: Path) -> None:
    stream = "".join(f"commit refs/heads/main\ncommitter Ada Dev <ada@example.org> 1764583200 +0000\n"
                     f"data {len(f'Commit {i}')}\nCommit {i}\n" + ("from refs/heads/main^0\n" if i == 0 else "") + "\n"
                     for i in range(250))
    (repo.parent / "stream").write_text(stream)
    assert run(f"git fast-import --quiet < {repo.parent / 'stream'}", repo, GIT_ENV).exit_code == 0
    out = git(repo, "log")
    result = compact(git_log, out, Limits(max_lines=100))
    keeps(result, "251 commits", "... and 151 more commits")
    assert len(result.text.splitlines()) == 102
    smaller(result, out, 3)
