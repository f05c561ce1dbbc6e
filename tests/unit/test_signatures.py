"""Signatures: accuracy on a labelled set of real shell commands, and one test per rule."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from outloop.agents.shell import extract_heredocs, parse
from outloop.agents.signatures import (
    SIGNATURE_VERSION,
    Signature,
    SignatureCache,
    command_signature,
    recompute,
    redact,
    signature_of,
)

DATA = Path(__file__).resolve().parent / "data" / "labelled_commands.json"
TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces-dev"
LABELLED = json.loads(DATA.read_text())


def sig(command: str, fast: bool = True) -> Signature:
    return command_signature(command, cache=None, fast=fast)


# ---- the labelled set ------------------------------------------------------------------------------


def test_labelled_set_is_big_and_real() -> None:
    real = [r for r in LABELLED if r["source"] == "traces-dev"]
    assert len({r["command"] for r in real}) >= 300
    assert len([r for r in LABELLED if r["source"] == "written"]) >= 30
    assert {r["category"] for r in LABELLED} >= {
        "test",
        "build",
        "lint",
        "typecheck",
        "format",
        "install",
        "vcs",
        "search",
        "read",
        "edit",
        "run",
        "env",
        "other",
    }


def _confusion(rows: list[dict[str, str]], field: str, got: list[str]) -> str:
    pairs = Counter((r[field], g) for r, g in zip(rows, got, strict=True) if r[field] != g)
    lines = [f"  expected {e:<10} got {g:<10} x{n}" for (e, g), n in pairs.most_common()]
    examples = [
        f"  {r[field]:>10} <- {g:<10} {r['command'][:100]!r}"
        for r, g in zip(rows, got, strict=True)
        if r[field] != g
    ][:40]
    return "\n".join(["confusion:", *lines, "misses:", *examples])


@pytest.mark.parametrize("source", ["all", "traces-dev", "written"])
def test_category_accuracy_at_least_95_percent(source: str) -> None:
    rows = [r for r in LABELLED if source == "all" or r["source"] == source]
    got = [sig(r["command"]).category for r in rows]
    accuracy = sum(r["category"] == g for r, g in zip(rows, got, strict=True)) / len(rows)
    print(f"category accuracy ({source}, n={len(rows)}): {accuracy:.3f}")
    assert accuracy >= 0.95, f"accuracy {accuracy:.3f}\n" + _confusion(rows, "category", got)


ROUTABLE = ("test", "build", "lint", "typecheck", "format", "install")


def test_routable_classes_are_precise() -> None:
    """Routing trusts test/build/lint/typecheck/format/install: on the labelled set, a command put in one
    of them belongs there (precision 1.0; a miss in these classes goes to run/env/other instead)."""
    got = [(r, sig(r["command"]).category) for r in LABELLED]
    wrong = [(r["category"], g, r["command"][:100]) for r, g in got if g in ROUTABLE and g != r["category"]]
    assert not wrong, wrong
    assert sum(g in ROUTABLE for _, g in got) > 100


@pytest.mark.parametrize(
    "command",
    [
        "./scripts/setup.sh",
        "./install.sh",
        "bash scripts/setup-dev.sh",
        "./scripts/bootstrap.sh",
        "./scripts/restore_db.sh",
        "./scripts/check.sh",
        "./verify_fix.sh",
        "bash check_env.sh",
        "./bench.sh",
        "./scripts/update_all.sh",
        "./scripts/test_and_deploy.sh",
        "./scripts/deploy_release.sh",
        "sleep 3 && make status",
        "sleep 5 && npm run build:status",
        "just logs",
    ],
)
def test_unclear_purposes_are_not_routable(command: str) -> None:
    """A project's own script whose name does not clearly say test/build/lint (installers, set-ups,
    checks, deploys) and a task named after a query or a wait are run: their purpose is unclear."""
    assert sig(command).category == "run", command


@pytest.mark.parametrize(
    ("command", "category"),
    [
        ("./scripts/test.sh", "test"),
        ("bin/test", "test"),
        ("python runtests.py", "test"),
        ("./scripts/coverage.sh", "test"),
        ("./scripts/build_and_test.sh", "test"),
        ("./scripts/lint.sh", "lint"),
        ("./build.sh", "build"),
        ("./scripts/gen_client.sh", "build"),
        ("./typecheck.sh", "typecheck"),
        ("python setup.py install", "install"),
        ("make test", "test"),
        ("npm run build", "build"),
    ],
)
def test_clearly_named_scripts_and_tasks_stay_routable(command: str, category: str) -> None:
    assert sig(command).category == category, command


def test_side_effect_accuracy() -> None:
    rows = [r for r in LABELLED if r.get("side_effect")]
    got = [sig(r["command"]).side_effect for r in rows]
    accuracy = sum(r["side_effect"] == g for r, g in zip(rows, got, strict=True)) / len(rows)
    assert accuracy >= 0.95, f"side-effect accuracy {accuracy:.3f}\n" + _confusion(rows, "side_effect", got)


def test_fast_path_agrees_with_full_parse_on_the_labelled_set() -> None:
    used = 0
    for r in LABELLED:
        assert sig(r["command"], fast=True) == sig(r["command"], fast=False), r["command"][:200]
        used += parse(r["command"], fast=True).parser == "fast"
    assert used / len(LABELLED) > 0.7  # most real commands take the fast path


@pytest.mark.traces
def test_every_trace_command_signs_and_fast_agrees_with_full() -> None:
    if not TRACES.is_dir():
        pytest.skip(f"traces-dev not present at {TRACES}")
    commands: set[str] = set()
    for f in TRACES.rglob("*.jsonl"):
        for line in f.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # damaged lines exist in traces-dev
            content = (record.get("message") or {}).get("content") if isinstance(record, dict) else None
            for block in content if isinstance(content, list) else []:
                if isinstance(block, dict) and block.get("name") == "Bash":
                    command = (block.get("input") or {}).get("command")
                    if isinstance(command, str):
                        commands.add(command)
    for f in TRACES.rglob("pre_tool_use.json"):
        for p in json.loads(f.read_text()):
            if p.get("tool_name") == "Bash":
                commands.add(p["tool_input"]["command"])
    assert len(commands) > 300
    for c in commands:
        a, b = sig(c, fast=True), sig(c, fast=False)
        assert a == b, c[:200]
        assert a.category in {
            "test",
            "build",
            "lint",
            "typecheck",
            "format",
            "install",
            "vcs",
            "search",
            "read",
            "edit",
            "run",
            "env",
            "other",
        }


# ---- rules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("sudo -u www apt-get install -y nginx", "install:apt-get:install"),
        ("timeout 300 pytest tests/unit", "test:pytest:tests/unit"),
        ("timeout -s KILL 5s python3 -m pytest tests/unit", "test:pytest:tests/unit"),
        ("nohup npm run build > build.log 2>&1 &", "build:npm:build"),
        ("CI=1 FOO=bar npm test", "test:npm:test"),
        ("env -u HOME PYTHONPATH=src pytest tests", "test:pytest:tests"),
        ("nix develop --command cargo test", "test:cargo:test"),
        ("nix-shell --run 'make lint'", "lint:make:lint"),
        ("ssh root@host 'cat /etc/nginx/nginx.conf'", "read:cat:etc/nginx/nginx.conf"),
        ('ssh -p 2222 deploy@host "cd /srv && git pull"', "vcs:git:pull"),
        ("bash -c 'go test ./...'", "test:go:..."),
        ("uv run pytest tests/unit", "test:pytest:tests/unit"),
        ("poetry run mypy src", "typecheck:mypy:src"),
        ("npx tsc --noEmit", "typecheck:tsc:*"),
        ("docker compose exec web pytest tests", "test:pytest:tests"),
        ("xargs -n1 echo < list.txt", "other:echo:*"),
    ],
)
def test_wrappers_are_unwrapped(command: str, expected: str) -> None:
    assert sig(command).signature == expected


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("pytest -q 2>&1 | tail -20", "test"),
        ("go test ./... | grep -v ok | head", "test"),
        ("git log --oneline | head -5", "vcs"),
        ("cat src/app.py | grep -n def", "read"),
        ("ps aux | grep node | wc -l", "env"),
        ("npm run build 2>&1 | jq .", "build"),
        ("find . -name '*.orig' | xargs rm", "edit"),
        ("curl -fsSL https://example.org/install.sh | bash", "run"),
    ],
)
def test_pipe_filters_keep_the_producer(command: str, expected: str) -> None:
    assert sig(command).category == expected


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("cd api && pytest -q", "test:pytest:*"),
        ("cd web; npm ci; npm run test:unit", "test:npm:test:unit"),
        ("go build ./... && go test ./...", "test:go:..."),
        ("pytest; echo done", "test:pytest:*"),
        ("sed -i 's/a/b/' src/x.py && grep -n b src/x.py", "edit:sed:src/x.py"),
        ("sed -i 's/a/b/' src/x.py && cat src/x.py", "edit:sed:src/x.py"),
        ("which tool || npm install -g tool", "env:which:tool"),
        ("test -f setup.cfg && cat setup.cfg", "read:cat:setup.cfg"),
        ("mkdir -p out && ls out", "edit:mkdir:out"),
        ("cat > src/conf.py <<'EOF'\nX = 1\nEOF", "edit:cat:src/conf.py"),
        ("cat <<'EOF' > repro.py\nprint(1)\nEOF\npython repro.py", "run:python:repro.py"),
        ("cat > fix.py <<'EOF'\nopen('src/a.py', 'w').write('x')\nEOF\npython fix.py", "edit:python:fix.py"),
        ("if [ -d build ]; then rm -rf build; fi && make", "build:make:*"),
        ("git commit -m \"$(cat <<'EOF'\nmessage\nEOF\n)\"", "vcs:git:commit"),
    ],
)
def test_compound_commands_take_the_step_the_agent_is_after(command: str, expected: str) -> None:
    assert sig(command).signature == expected


def test_subcommands_are_kept() -> None:
    assert sig("npm run build").signature == "build:npm:build"
    assert sig("npm run test").signature == "test:npm:test"
    assert sig("npm run lint").signature == "lint:npm:lint"
    assert sig("npm run build").signature != sig("npm run test").signature
    assert sig("git status").signature == "vcs:git:status"
    assert sig("git stash pop").signature == "vcs:git:stash"
    assert sig("gh issue view 65").signature == "vcs:gh:issue-view"
    assert sig("cargo clippy").category == "lint" and sig("cargo test").category == "test"
    assert sig("backlog task edit 39 -s Done").signature == "other:backlog:task-edit"


def test_argument_lists_of_any_length_collapse() -> None:
    one = sig("git add src/a.py").signature
    assert one == sig("git add src/a.py src/b.py tests/c.py docs/d.md").signature == "vcs:git:add"
    assert (
        sig("rm a.py b.py c.py d.py e.py").signature == sig("rm x.py").signature.replace("x.py", "*")
        or sig("rm a.py b.py c.py").target == "*"
    )
    assert sig("pytest tests/unit/test_a.py tests/unit/test_b.py").target == "tests/unit"
    assert sig("go test ./internal/http ./internal/ws ./internal/db").target == "internal"


@pytest.mark.parametrize(
    ("command", "target"),
    [
        ("pytest /home/alice/work/proj/tests/unit", "tests/unit"),
        ("pytest tests/unit/test_x.py::TestA::test_b -k slow", "tests/unit/test_x.py"),
        ("cat /Users/bob/code/proj/src/main/App.java", "src/main/App.java"),
        ("cat /tmp/tmpab12cd34/out.log", "<tmp>/out.log"),
        ("tail -n 50 /tmp/claude/tasks/b3932ee.output", "<tmp>/claude/tasks/<hash>.output"),
        ("tail -n 50 /tmp/claude/-Users-bob-proj/tasks/b3932ee.output", "<tmp>/tasks/<hash>.output"),
        ("cat ~/.config/app/settings.json", ".config/app/settings.json"),
        ("cat 'C:\\Users\\Me\\proj\\src\\app.py'", "src/app.py"),
        ("gh issue view 1234", "issue-view"),
        ("cat logs/7c1b6b4303c0edf17afccd3322a09ab33e85ba11.log", "logs/<hash>.log"),
        ("cat runs/20240101/out.txt", "runs/<n>/out.txt"),
    ],
)
def test_masking_of_targets(command: str, target: str) -> None:
    assert sig(command).target == target


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/tmp/tmpab12cd34/proj/src/app.py", "<tmp>/src/app.py"),
        ("/tmp/tmpab12cd34/proj/lib/app.py", "<tmp>/lib/app.py"),
        ("/tmp/tmpab12cd34/proj/app.py", "<tmp>/proj/app.py"),
        ("/var/folders/x7/k2jd84nd0000gn/T/tmpq1w2e3r4/proj/src/app.py", "<tmp>/src/app.py"),
        ("/private/var/folders/x7/k2jd84nd0000gn/T/proj/tests/test_app.py", "<tmp>/tests/test_app.py"),
        ("C:\\Users\\bob\\AppData\\Local\\Temp\\tmp12ab34cd\\proj\\src\\app.py", "<tmp>/src/app.py"),
        ("/tmp/pytest-of-alice/pytest-37/test_replay0/proj/src/app.py", "<tmp>/src/app.py"),
        ("/tmp/build.log", "<tmp>/build.log"),
        ("/tmp/tmp.Xy12Ab", "<tmp>/<tmp>"),
        ("/tmp", "<tmp>"),
    ],
)
def test_paths_under_a_temporary_folder_keep_their_structure(path: str, target: str) -> None:
    """A project copied under the system's temporary folder keeps its structure below the folder and its
    random names: ``src/app.py`` and ``lib/app.py`` there never share a signature (issue 12, item 9)."""
    assert signature_of("Read", {"file_path": path}, cache=None).signature == f"read:file:{target}"
    assert sig(f"cat '{path}'").target == target


def test_masking_makes_machines_agree() -> None:
    a = signature_of("Read", {"file_path": "/home/alice/proj/src/app.py"})
    b = signature_of("Read", {"file_path": "/Users/bob/work/proj/src/app.py"})
    c = signature_of("Bash", {"command": "cat src/app.py"})
    assert a.signature == b.signature == "read:file:src/app.py"
    assert c.target == a.target


@pytest.mark.parametrize(
    ("command", "category"),
    [
        ("pytest", "test"),
        ("python -m pytest -x", "test"),
        ("npm test", "test"),
        ("vitest run", "test"),
        ("python3 tests/runtests.py admin_views", "test"),
        ("./tests/runtests.py model_fields", "test"),
        ("bin/test sympy/core", "test"),
        ("python reproduce_issue.py", "run"),
        ("python check_fix.py", "run"),
        ("python -c 'print(1)'", "run"),
        ("python -c \"open('src/a.py','w').write('')\"", "edit"),
        ("python3 <<'EOF'\nprint(2)\nEOF", "run"),
        ("python3 - <<'EOF'\nfrom pathlib import Path\nPath('a.py').write_text('x')\nEOF", "edit"),
        ("systemctl restart nginx", "env"),
        ("uci show dhcp", "env"),
        ("defaults read com.apple.dock", "env"),
        ("dig example.com", "env"),
        ("brew list", "env"),
        ("pip list", "env"),
        ("node --version", "env"),
        ("python --version", "env"),
        ("cat /etc/hosts", "read"),
        ("tail -f /var/log/syslog", "read"),
        ("git --version", "vcs"),
        ("gh pr list", "vcs"),
        ("git diff HEAD~1", "vcs"),
    ],
)
def test_category_rules(command: str, category: str) -> None:
    assert sig(command).category == category


@pytest.mark.parametrize(
    ("command", "effect"),
    [
        ("cat a.txt", "read-only"),
        ("ls -la", "read-only"),
        ("git status", "read-only"),
        ("sed -i 's/a/b/' x.py", "writes files"),
        ("echo hi > out.txt", "writes files"),
        ("rm -rf build", "destructive"),
        ("git reset --hard", "destructive"),
        ("git push --force", "destructive"),
        ("kill -9 1234", "destructive"),
        ("git checkout -- src/a.py", "destructive"),
        ("curl https://example.org", "network"),
        ("git pull", "network"),
        ("pip install x", "network"),
        ("python script.py", "unknown"),
        ("./configure", "unknown"),
        ("frobnicate --all", "unknown"),
        ("ls && rm x", "destructive"),
        ("pytest || rm -rf /tmp/x", "destructive"),
    ],
)
def test_side_effects(command: str, effect: str) -> None:
    assert sig(command).side_effect == effect


def test_routable_excludes_destructive_and_unknown() -> None:
    assert sig("pytest tests").routable
    assert not sig("rm -rf build").routable
    assert not sig("python repro.py").routable


def test_non_shell_tools() -> None:
    assert signature_of("Read", {"file_path": "/repo/src/app.py"}).signature == "read:file:src/app.py"
    for tool in ("Edit", "Write", "MultiEdit"):
        assert signature_of(tool, {"file_path": "/repo/src/app.py"}).signature == "edit:file:src/app.py"
    assert signature_of("NotebookEdit", {"notebook_path": "/r/nb/a.ipynb"}).category == "edit"
    assert signature_of("Grep", {"pattern": "TODO"}).signature == "search:grep:*"
    assert signature_of("Glob", {"pattern": "**/*.py"}).category == "search"
    assert signature_of("LS", {"path": "/repo/src"}).signature == "search:ls:src"
    assert (
        signature_of("WebFetch", {"url": "https://user:pw@docs.example.org/a"}).signature
        == "web:fetch:docs.example.org"
    )
    assert signature_of("WebSearch", {"query": "x"}).category == "web"
    assert signature_of("TodoWrite", {"todos": []}).category == "plan"
    assert signature_of("ExitPlanMode", {}).category == "plan"
    assert (
        signature_of("Task", {"subagent_type": "general-purpose"}).signature
        == "delegate:task:general-purpose"
    )
    assert signature_of("Agent", {}).category == "delegate"
    assert signature_of("mcp__github__create_issue", {}).signature == "mcp:github:create_issue"
    assert signature_of("SomethingNew", {"x": 1}).category == "other"
    assert signature_of("Bash", None).category == "other"
    assert signature_of("Bash", {"command": "   "}).category == "other"


def test_stability_and_cache() -> None:
    cache = SignatureCache(maxsize=3)
    commands = ["pytest -q", "npm run build", "git status", "pytest -q", "ls", "npm run build"]
    first = [command_signature(c, cache=cache) for c in commands]
    again = [command_signature(c, cache=None) for c in commands]
    assert first == again
    assert cache.hits == 1 and cache.misses == 5 and len(cache) == 3  # "ls" evicted "npm run build"
    off = SignatureCache(enabled=False)
    command_signature("pytest", cache=off)
    command_signature("pytest", cache=off)
    assert off.hits == 0 and len(off) == 0


def test_version_and_recompute() -> None:
    assert isinstance(SIGNATURE_VERSION, int) and SIGNATURE_VERSION >= 1
    s = sig("pytest")
    assert s.version == SIGNATURE_VERSION
    rows = [
        {
            "tool_name": "Bash",
            "tool_input": {"command": "pytest -q"},
            "signature": "test:pytest:old",
            "signature_version": 0,
        },
        {
            "tool_name": "Bash",
            "tool_input": {"command": "ls"},
            "signature": "search:ls:.",
            "signature_version": SIGNATURE_VERSION,
        },
    ]
    out = list(recompute(rows))
    assert out[0]["signature"] == "test:pytest:*" and out[0]["signature_version"] == SIGNATURE_VERSION
    assert out[1] == rows[1]


def test_signature_format_is_parseable() -> None:
    for r in LABELLED:
        s = sig(r["command"])
        category, tool, target = s.signature.split(":", 2)
        assert (category, tool, target) == (s.category, s.tool, s.target)
        assert " " not in s.signature and "\n" not in s.signature


def test_heredocs_are_cut_out_and_kept() -> None:
    body, docs = extract_heredocs("cat <<'EOF' > a.py\nx = 1 << 2\nEOF\npython a.py")
    assert docs == ("x = 1 << 2",)
    assert "EOF" not in body
    text, none = extract_heredocs("python -c 'print(1 << 5)'")
    assert none == () and text == "python -c 'print(1 << 5)'"


@pytest.mark.parametrize("text, body, docs", [
    # bash reads the rest as the body when the delimiter line never comes ("delimited by end-of-file")
    ("cat > /tmp/x.sh <<'EOF'\nset -e\nmake testEOF", "cat > /tmp/x.sh < __HD0__", ("set -e\nmake testEOF",)),
    ("python - <<PY\nprint(1)", "python - < __HD0__", ("print(1)",)),
    ("echo 'it''s' # don't\ncat <<EOF\nbody", "echo 'it''s' # don't\ncat < __HD0__", ("body",)),
    ("echo $'a\\'b' \"q\\\"\" <<X\nbody", "echo $'a\\'b' \"q\\\"\" < __HD0__", ("body",)),
    ('git commit -m "$(cat <<\'EOF\'\nmsg', 'git commit -m "$(cat < __HD0__', ("msg",)),
    ("cat <<A <<B\na\nA\nb", "cat < __HD0__ < __HD1__", ("a", "b")),
    # not an operator: inside quotes, arithmetic or a comment, with no delimiter line, it stays
    ('python -c "x = a << b"\nls', 'python -c "x = a << b"\nls', ()),
    ("python -c 'x = a << b\ny = 1'", "python -c 'x = a << b\ny = 1'", ()),
    ("echo $((a << b))\nls", "echo $((a << b))\nls", ()),
    ("(( x = y << z ))\nls", "(( x = y << z ))\nls", ()),
    ("ls # a << b\npwd", "ls # a << b\npwd", ()),
    ('echo "$(( a << b ))"\nls', 'echo "$(( a << b ))"\nls', ()),
])
def test_a_heredoc_without_its_delimiter_line(text: str, body: str, docs: tuple[str, ...]) -> None:
    assert extract_heredocs(text) == (body, docs)


def test_an_unterminated_heredoc_signs_like_a_terminated_one_and_its_body_is_not_parsed() -> None:
    pad = "".join(f"echo 'line {i}' \"$(date)\" && x=$((i+1)) # note\n" for i in range(800))
    terminated = sig(f"cat > /tmp/x.sh <<'EOF'\n{pad}EOF")
    unterminated = sig(f"cat > /tmp/x.sh <<'EOF'\n{pad}  # trimmed EOF")
    assert unterminated.signature == terminated.signature == "edit:cat:<tmp>/x.sh"
    assert parse(f"cat > /tmp/x.sh <<'EOF'\n{pad}").parser == "fast"  # the body is never parsed as commands


def test_many_operators_inside_a_string_are_left_alone() -> None:
    text = 'python -c "' + "a << b\n" * 20_000 + '"'
    assert extract_heredocs(text) == (text, ())


def test_parser_fallbacks() -> None:
    assert parse("ls -la | grep x && echo ok").parser == "fast"
    assert parse("for f in *.py; do echo $f; done").parser == "bashlex"
    assert parse("case $x in a) echo a;; esac").parser == "shlex"
    assert sig("case $x in a) pytest;; esac").category in ("test", "other", "env")
    assert sig("echo 'unterminated").category == "other"


def test_powershell_and_cmd() -> None:
    assert sig('powershell -Command "Get-Service | Select-Object Name"').category == "env"
    assert sig("powershell 'Get-Content C:\\logs\\app.log | Select-Object -Last 5'").category == "read"
    assert sig("powershell.exe -Command \"cd 'C:\\repo'; git status --short\"").signature == "vcs:git:status"
    assert sig("powershell -Command \"Remove-Item 'C:\\tmp\\x' -Force\"").side_effect == "destructive"
    assert sig('cmd.exe /c "whoami /priv"').category == "env"


def test_redact() -> None:
    cases = {
        "curl -H 'Authorization: Bearer abcdef1234567890xyz' https://api.x": "abcdef1234567890xyz",
        "git clone https://alice:s3cretpw@github.com/x/y.git": "s3cretpw",
        "export OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz123456": "sk-abcdefghijklmnopqrstuvwxyz123456",
        "mysql -u root -pHunter2 db": "Hunter2",
        "psql --password=topsecret": "topsecret",
        "GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789 gh pr list": "ghp_abcdefghijklmnop",
        "aws configure set aws_secret_access_key wJalrXUtnFEMI/K7MDENG": "wJalrXUtnFEMI",
        "echo '-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----'": "MIIEabc",
    }
    for text, secret in cases.items():
        out = redact(text)
        assert secret not in out, out
        assert "REDACTED" in out
    assert redact("pytest -q tests/unit") == "pytest -q tests/unit"
