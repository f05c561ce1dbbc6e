"""Secret redaction: realistic secrets go, ordinary text stays, the record gate never misses."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outloop.agents.pairing import BatchOut, Pairing, tool_call_model
from outloop.agents.signatures import redact as signatures_redact
from outloop.schemas.events import Envelope, EventType, HookEvent, ToolUseRecord
from outloop.streams import redact
from outloop.streams.codec import Rejected, dead_letter
from outloop.streams.redact import ALL, redact_bytes, redact_json, redact_text, scan, secret_name

# text -> (the secret, the kind in its marker)
SECRETS = {
    "export ANTHROPIC_API_KEY=sk-ant-api03-Xq3vLm9PzR2tKw8YbN4cJh6Ds1Fg5Ae7Ui0Oo-_ZxCv": (
        "sk-ant-api03-Xq3vLm9PzR2tKw8YbN4cJh6Ds1Fg5Ae7Ui0Oo-_ZxCv", "anthropic_key"),
    "client = OpenAI(api_key='sk-proj-4fJk9QmZx2Lr8Tb6Vn1Wc3Hy5Pd7Gs0Ke')": (
        "4fJk9QmZx2Lr8Tb6Vn1Wc3Hy5Pd7Gs0Ke", "openai_key"),
    "git push https://ghp_Zx9Qm2Lk7Rt4Vb8Nc1Hd5Jf3Gs6Pw0Ya2Ue4Io@github.com/o/r": (
        "ghp_Zx9Qm2Lk7Rt4Vb8Nc1Hd5Jf3Gs6Pw0Ya2Ue4Io", "github_token"),
    "gh auth login --with-token <<< github_pat_11ABCDEFG0aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789": (
        "github_pat_11ABCDEFG0aBcDeFgHiJkLmNoPqRsTuVwXyZ", "github_token"),
    "oauth gho_16C7e42F292c6912E7710c838347Ae178B4a in the log": (
        "gho_16C7e42F292c6912E7710c838347Ae178B4a", "github_token"),
    "aws_access_key_id = AKIAIOSFODNN7EXAMPLE": ("AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY": ("wJalrXUtnFEMI/K7MDENG", "secret"),
    "aws configure set aws_secret_access_key wJalrXUtnFEMI/K7MDENG/bPxRfiCY": ("wJalrXUtnFEMI", "secret"),
    "SLACK_BOT=xoxb-2048751305-2075437290-Zx9Qm2Lk7Rt4Vb8Nc1Hd5Jf3": ("xoxb-2048751305-2075437290", "slack_token"),
    "curl -X POST https://hooks.slack.com/services/T0A1B2C3D/B4E5F6G7H/q9W8e7R6t5Y4u3I2o1P0": (
        "q9W8e7R6t5Y4u3I2o1P0", "slack_webhook"),
    "maps?key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY&q=x": (
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "google_api_key"),
    "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U": (
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt"),
    "curl -H 'Authorization: Bearer 7f3c9a1e5b2d8f4a6c0e' https://api": ("7f3c9a1e5b2d8f4a6c0e", "authorization"),
    'requests.get(u, headers={"Authorization": "Basic YWxpY2U6czNjcjN0"})': ("YWxpY2U6czNjcjN0", "basic_auth"),
    "sent with bearer 9b8a7c6d5e4f3a2b1c0d": ("9b8a7c6d5e4f3a2b1c0d", "bearer"),
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\nok": (
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU", "private_key"),
    "git clone https://alice:Tr0ub4dor-3@git.example.com/r.git": ("Tr0ub4dor-3", "url_password"),
    "DATABASE_URL=postgres://app:pa55-w0rd@db.internal:5432/prod": ("pa55-w0rd", "url_password"),
    "redis-cli -u redis://:r3d1s-s3cret@cache:6379": ("r3d1s-s3cret", "url_password"),
    "psql --password=Hunter2024": ("Hunter2024", "password"),
    "docker login --password s3cr3t-Pw registry.io": ("s3cr3t-Pw", "password"),
    "mysql -u root -pHunter2 shop": ("Hunter2", "password"),
    "sshpass -p 'c0rrect-horse' ssh deploy@host": ("c0rrect-horse", "password"),
    "curl -u alice:wonder-land42 https://x": ("wonder-land42", "password"),
    "PASSWORD: Zebra!Stripes9": ("Zebra!Stripes9", "password"),
    "db:\n  password: \"quoted pass phrase\"\n": ("quoted pass phrase", "password"),
    "export GITLAB_TOKEN=z8y7x6w5v4u3": ("z8y7x6w5v4u3", "token"),
    "API_KEY=k3y-v4lue-123 npm start": ("k3y-v4lue-123", "api_key"),
    "STRIPE_SECRET=sk_live_51HxYzAbCdEfGhIjKlMn": ("sk_live_51HxYzAbCdEfGhIjKlMn", "stripe_key"),
    "PGPASSWORD=pgs3cret psql -h db": ("pgs3cret", "password"),
    "DB_PASS=abc123xyz": ("abc123xyz", "password"),
    "MAILGUN_KEY=key-3ax6xnjp29jd6fds4gc373sgvjxteol0": ("3ax6xnjp29jd6fds4gc373sgvjxteol0", "api_key"),
    "X-Api-Key: 0123456789abcdef": ("0123456789abcdef", "api_key"),
    "const clientSecret = 'cl13nt-s3cr3t';": ("cl13nt-s3cr3t", "secret"),
    '{"refresh_token": "rt-9f8e7d6c5b"}': ("rt-9f8e7d6c5b", "token"),
    "npm config set //registry.npmjs.org/:_authToken=npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789": (
        "npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "npm_token"),
}

KEEP = ["pytest -q tests/unit", "==== 120 passed in 1.20s ====", "tests/test_a.py::test_x PASSED [ 10%]",
        "max_tokens=4096", "input_tokens: 1234", "sorted(xs, key=lambda x: x)", "token = get_token()",
        "password reset link sent to the user", "mkdir -p build", "ssh -p 2222 host", "tokenizer: bpe",
        "the key is here", "primary_key=id", "self.token = token", "password=os.environ['PW']",
        "docker login --password-stdin", "PWD=/home/dev/proj", "author: Alice", "Basic usage of bearer authentication",
        "secretary=ann", "task-abcdefghijklmnopqrstuvwxyz", "call_key=s1:ab12:0", "def f(password: str = None):",
        "if token is None:", "cache_key: xyz", "http://localhost:8080/path", "token_type: bearer",
        "Authorization header missing", "git log --author=alice", "PASS: test_login", "password: ${DB_PASSWORD}",
        "gpg --list-secret-keys ABCDEF", "see https://user@example.com/x", "café naïve 日本語 key: ✓",
        'TRUNCATED_KEY = b"outloop_truncated"', 'auth = ("user", pw)', "DB_PASS = config.db_pass"]


@pytest.mark.parametrize("text", list(SECRETS))
def test_realistic_secrets_are_replaced_by_a_kind_marker(text: str) -> None:
    secret, kind = SECRETS[text]
    out = redact_text(text)
    assert secret not in out, out
    assert f"[REDACTED:{kind}]" in out, out
    assert redact_text(out) == out  # idempotent: redacting again changes nothing
    assert redact_text(text) == out  # deterministic
    assert signatures_redact(text) == out  # the sample redactor is this one


@pytest.mark.parametrize("text", KEEP)
def test_ordinary_text_survives(text: str) -> None:
    assert redact_text(text) == text


def test_json_values_keys_and_sizes() -> None:
    value = {"tool_input": {"command": "export GH_TOKEN=ghp_Zx9Qm2Lk7Rt4Vb8Nc1Hd5Jf3Gs6Pw0Ya2Ue4Io && gh pr list",
                            "env": {"password": "correct horse", "DB_USER": "app", "token_count": 5},
                            "args": ["--token", "t0k3n-value", "--verbose"], "n": 3, "ok": True, "none": None},
             "headers": [{"name": "Authorization", "value": "Bearer 7f3c9a1e5b2d8f4a6c0e"},
                         {"Authorization": "Basic YWxpY2U6czNjcjN0"}]}
    out = redact_json(value)
    text = orjson.dumps(out).decode()
    for secret in ("ghp_Zx9Qm2Lk7Rt4Vb8Nc1Hd5Jf3Gs6Pw0Ya2Ue4Io", "correct horse", "7f3c9a1e5b2d8f4a6c0e",
                   "YWxpY2U6czNjcjN0"):
        assert secret not in text
    assert out["tool_input"]["env"] == {"password": "[REDACTED:password]", "DB_USER": "app", "token_count": 5}
    assert out["tool_input"]["n"] == 3 and out["tool_input"]["ok"] is True and out["tool_input"]["none"] is None
    assert out["tool_input"]["command"].endswith("&& gh pr list")
    assert value["tool_input"]["env"]["password"] == "correct horse"  # the input is not modified
    assert redact_json(out) == out and redact_json(value, scan(orjson.dumps(value))) == out


def test_bytes_keep_what_is_not_utf8() -> None:
    raw = b"\xff\xfe{\"cmd\": \"curl -H 'Authorization: Bearer 7f3c9a1e5b2d8f4a6c0e'\"}\xc3\x28 tail"
    out = redact_bytes(raw)
    assert b"7f3c9a1e5b2d8f4a6c0e" not in out
    assert out.startswith(b"\xff\xfe{") and out.endswith(b"\xc3\x28 tail")
    clean = b"\xff\x00 nothing secret here"
    assert redact_bytes(clean) is clean


def test_dead_letters_store_redacted_bytes_and_digest() -> None:
    raw = b'{"type": "hook.event", "data": {"password": "hunter2-pw"}} \xff'
    at = datetime(2026, 3, 1, tzinfo=UTC)
    dl = dead_letter(raw, Rejected("envelope", "bad"), "t", 0, 5, b"sess-1", now=at)
    assert b"hunter2-pw" not in dl.raw and dl.raw.endswith(b"\xff")
    assert dl == dead_letter(raw, Rejected("envelope", "bad"), "t", 0, 5, b"sess-1", now=at)  # same id, same row
    assert dl.id != dead_letter(raw + b" ", Rejected("envelope", "bad"), "t", 0, 5, b"sess-1", now=at).id


def _hook(event: str, tool_input: dict, **extra: object) -> tuple[Envelope, HookEvent]:
    data = {"session_id": "s1", "hook_event_name": event, "tool_name": "Bash", "tool_input": tool_input, **extra}
    env = Envelope(id=f"e-{event}", type=EventType.HOOK_EVENT, source="hook", subject="s1",
                   time=datetime(2026, 3, 1, 10, tzinfo=UTC), data=data)
    return env, HookEvent.model_validate(data)


def test_pairing_redacts_content_but_measures_the_original() -> None:
    tool_input = {"command": "mysql -u root -pHunter2 shop -e 'select 1'"}
    stdout = "connected with token=abc123def456\n" + "x" * 100
    out = BatchOut()
    fold = Pairing()
    for event, extra in (("PreToolUse", {}), ("PostToolUse", {"tool_response": {"stdout": stdout, "stderr": ""}})):
        env, data = _hook(event, tool_input, **extra)
        fold.apply(env, data, out, secrets=scan(env.model_dump_json().encode()))
    (call,) = [tool_call_model(v) for v in out.tool_calls.values()]
    assert call.command == "mysql -u root -p[REDACTED:password] shop -e 'select 1'"
    assert call.input_bytes == len(orjson.dumps(tool_input))
    assert call.output_bytes == len(stdout) and call.output_tokens_est == -(-len(stdout) // 4)
    # the call key (no tool_use_id) is computed on the original input: it still joins the transcript
    unredacted = Pairing()
    plain = BatchOut()
    env, data = _hook("PreToolUse", tool_input)
    unredacted.apply(env, data, plain, secrets=frozenset())
    assert set(plain.tool_calls) == set(out.tool_calls)
    stored = orjson.dumps([e.data for e in out.hook_events])
    assert b"Hunter2" not in stored and b"abc123def456" not in stored and b"x" * 100 in stored
    use = ToolUseRecord(session_id="s1", tool_use_id="toolu_1", tool_name="Bash", call_key="k",
                        tool_input={"command": "PGPASSWORD=pgs3cret psql"})
    env = Envelope(id="u1", type=EventType.TOOL_USE, source="transcript", subject="s1", data=use.model_dump())
    fold.apply(env, use, out)
    assert out.tool_calls["toolu_1"]["command"] == "PGPASSWORD=[REDACTED:password] psql"


FRAGMENTS = [*SECRETS, *KEEP, " ", "\t", "\n", '"', "'", "\\", "=", ": ", "--", "é", "日本", "{", "}", "password",
             "TOKEN", "key", "Bearer ", "://", "@", "-p", "mysql ", "set ", "A", "sk-", "eyJ"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12), st.booleans())
def test_the_record_gate_never_misses_a_secret(parts: list[str], ascii_only: bool) -> None:
    """Scanning the raw JSON bytes of a record once and searching only the anchors found gives the
    same result as searching every anchor in every string (with orjson's and the stdlib's escapes)."""
    text = "".join(parts)
    value = {"tool_input": {"command": text}, "nested": [text, {"password": text}]}
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert redact_json(value, scan(raw)) == redact_json(value, ALL)
    assert redact_json(value, scan(orjson.dumps(value))) == redact_json(value, ALL)


def test_secret_names() -> None:
    named = {"password": "password", "DB_PASSWORD": "password", "client_secret": "secret", "GITHUB_TOKEN": "token",
             "accessToken": "token", "x-api-key": "api_key", "OPENAI_API_KEY": "api_key", "SECRET_KEY_BASE": "secret",
             "--db-pass": "password", "auth": "auth", "credentials": "credentials",
             "Proxy-Authorization": "authorization"}
    for name, kind in named.items():
        assert secret_name(name) == kind, name
    for name in ("tokens", "max_tokens", "token_count", "primary_key", "sort_key", "keyboard", "author",
                 "password_file", "secretary", "bypass", "passed", "call_key", "PUBLIC_KEY"):
        assert secret_name(name) is None, name


def _gates_one_by_one(raw: bytes) -> frozenset[str]:
    """The scan as defined: every gate's own regex over the record (folded gates over its lower case)."""
    if (b"\\u00" in raw and redact._ESCAPED.search(raw)) or b"\\/" in raw:
        return frozenset(a.name for a in redact.ANCHORS)
    low = raw.lower()
    return frozenset(a.name for a in redact.ANCHORS if a.gate.search(low if a.folded else raw))


ONE_PASS = pytest.mark.skipif(redact._one_pass() is None, reason="Hyperscan is not installed on this platform")


@ONE_PASS
@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([*FRAGMENTS, "PASSWORD", "Secret", "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
                                 "ghp_", "AKIA", "xoxb-", "hooks.slack.com/services/", "sshpass -p", "curl -u a:",
                                 "--token ", "set SECRET ", "k_live_", "glpat-", "npm_", "hf_", "0123456789abcdef",
                                 "ABCDEFGHIJKLMNOP", "\\u0041", "\\/"]), min_size=1, max_size=16), st.text(max_size=8))
def test_the_one_pass_scan_finds_exactly_the_gates(parts: list[str], noise: str) -> None:
    """Hyperscan's loosened gates report every gate that matches (and the confirmation drops the
    rest): the scan equals running each gate's regex on its own, in raw bytes and in JSON."""
    text = noise.join(parts)
    for raw in (text.encode("utf-8", "surrogateescape"), orjson.dumps({"command": text}),
                json.dumps({"command": text}).encode()):
        assert scan(raw) == _gates_one_by_one(raw)


@ONE_PASS
def test_the_one_pass_scan_on_every_realistic_secret_and_ordinary_text() -> None:
    for text in [*SECRETS, *KEEP]:
        for raw in (text.encode(), orjson.dumps({"tool_input": {"command": text}})):
            assert scan(raw) == _gates_one_by_one(raw), text
    assert all(scan(t.encode()) for t in SECRETS)


@ONE_PASS
def test_every_loosened_gate_still_matches_where_the_gate_does() -> None:
    """Gate by gate, on the texts that make each one match: Hyperscan reports it."""
    one = redact._one_pass()
    assert one is not None
    for text in SECRETS:
        raw = text.encode()
        expected = {i for i, a in enumerate(redact.ANCHORS) if a.gate.search(raw.lower() if a.folded else raw)}
        assert expected <= set(one.candidates(raw)), text
