"""A realistic Claude Code session carrying secrets, in every form outloop reads: live hook payloads
(spool records), a hook-log capture, a transcript and a trajectory. Shared by the unit and the
end-to-end tests of redaction at the publisher.

Two Bash calls are made the old way (hook payloads without ``tool_use_id``): they pair Pre with Post
and hook with transcript ``tool_use`` by identical input only, so they check that call keys agree
once the inputs are redacted upstream. One pair of calls differs only in the password it carries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

PEM_BODY = "MIIEowIBAAKCAQEAx4Qm2Lk7Rt4Vb8Nc1Hd5Jf3Gs6Pw0Ya2Ue4IoZx9Qm2Lk7Rt4Vb8Nc1Hd5Jf3Gs6Pw0"
S = {  # the secrets, each unique to these tests
    "aws_id": "AKIAZ7Q3EGRT2XW5LPMV",
    "aws_secret": "kW7xLq2Vz9Pb4Nm8Rt1Yc6Hd3Jf5Gs0Ue2Io7Aq",
    "github": "ghp_Qm2Lk7Rt4Vb8Nc1Hd5Jf3Gs6Pw0Ya2Ue4IoZx9",
    "github_pat": "github_pat_11AB2CD3E0fGhIjKlMnOpQrStUvWxYz9876543210",
    "bearer": "4e9c2a7f1b3d5e8a0c6f9b2d4e7a1c3f",
    "url_pw": "Pg-s3cr3t-Wx7q",
    "env_pw": "Zebra-Stripes-42x",
    "env_pw2": "Okapi-Dots-77y",
    "token": "tok-5d8e1a4b7c0f3e6d",
    "pem": PEM_BODY,
    "anthropic": "sk-ant-api03-Wv8bLm9PzR2tKw8YbN4cJh6Ds1Fg5Ae7Ui0Oo3Tr-_QxCvBnMaSd",
}
SESSION = "5f0c7a52-1d2e-4c3b-9a8f-0e1d2c3b4a59"  # live hooks (spool) + transcript
CAPTURE_SESSION = "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"  # hook-log capture + transcript
CWD = "/home/dev/shop"
T = "2026-03-02T09:00:{:02d}.000Z"

CMD_DEPLOY = (f"export GITHUB_TOKEN={S['github']} && curl -sf -H 'Authorization: Bearer {S['bearer']}' "
              "https://api.example.com/v1/deploy")
CMD_DB = f"PGPASSWORD={S['env_pw']} psql postgres://shop:{S['url_pw']}@db.internal:5432/shop -c 'select 1'"
CMD_DB2 = f"PGPASSWORD={S['env_pw2']} psql postgres://shop:{S['url_pw']}@db.internal:5432/shop -c 'select 1'"
ENV_OUT = (f"AWS_ACCESS_KEY_ID={S['aws_id']}\nAWS_SECRET_ACCESS_KEY={S['aws_secret']}\nHOME=/home/dev\n"
           f"GH_PAT={S['github_pat']}\nSHELL=/bin/bash\n")
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----\n"
KEEP = ["https://api.example.com/v1/deploy", "HOME=/home/dev", "select 1", "/home/dev/shop/deploy/key.pem"]

# (whether the hook payloads carry the tool_use_id (False: an old Claude Code), tool, input, response)
CALLS: list[tuple[bool, str, dict[str, Any], dict[str, Any]]] = [
    (True, "Bash", {"command": CMD_DEPLOY, "description": "deploy"},
     {"stdout": "deployed\n", "stderr": "", "interrupted": False}),
    (True, "Bash", {"command": "env"}, {"stdout": ENV_OUT, "stderr": "", "interrupted": False}),
    (True, "Write", {"file_path": "/home/dev/shop/deploy/key.pem", "content": PEM},
     {"type": "create", "filePath": "/home/dev/shop/deploy/key.pem"}),
    (False, "Bash", {"command": CMD_DB}, {"stdout": " ?column? \n----------\n        1\n", "stderr": ""}),
    (False, "Bash", {"command": CMD_DB2}, {"stdout": " ?column? \n----------\n        1\n", "stderr": ""}),
    (False, "Bash", {"command": CMD_DB}, {"stdout": f"password={S['env_pw']}\n", "stderr": ""}),
]


def tool_use_id(session: str, i: int) -> str:
    return f"toolu_{session[:8]}_{i:02d}"


def hook_payloads(session: str = SESSION) -> list[dict[str, Any]]:
    """Pre and Post of every call, in order, as Claude Code sends them on stdin."""
    out: list[dict[str, Any]] = []
    base = {"session_id": session, "transcript_path": f"/home/dev/.claude/projects/-home-dev-shop/{session}.jsonl",
            "cwd": CWD}
    for i, (with_id, tool, tool_input, response) in enumerate(CALLS):
        ident = {"tool_use_id": tool_use_id(session, i)} if with_id else {}
        out.append({**base, "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": tool_input, **ident})
        out.append({**base, "hook_event_name": "PostToolUse", "tool_name": tool, "tool_input": tool_input,
                    "tool_response": response, **ident})
    out.append({**base, "hook_event_name": "UserPromptSubmit",
                "prompt": f"use my key {S['anthropic']} and deploy"})
    return out


def transcript_records(session: str = SESSION) -> list[dict[str, Any]]:
    """The same calls as an assistant/user transcript, with usage."""
    records: list[dict[str, Any]] = []
    for i, (_, tool, tool_input, response) in enumerate(CALLS):
        tid = tool_use_id(session, i)
        records.append({
            "type": "assistant", "uuid": f"a-{session[:8]}-{i}", "sessionId": session, "cwd": CWD,
            "timestamp": T.format(2 * i),
            "requestId": f"req_{i}",
            "message": {"id": f"msg_{session[:8]}_{i}", "model": "claude-sonnet-4-5", "role": "assistant",
                        "content": [{"type": "tool_use", "id": tid, "name": tool, "input": tool_input}],
                        "usage": {"input_tokens": 10 + i, "output_tokens": 20 + i,
                                  "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 0}},
        })
        text = response.get("stdout") or orjson.dumps(response).decode()
        records.append({
            "type": "user", "uuid": f"u-{session[:8]}-{i}", "sessionId": session, "cwd": CWD,
            "timestamp": T.format(2 * i + 1),
            "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tid, "content": text,
                                                     "is_error": False}]},
        })
    return records


def trajectory(instance: str = "shop__shop-1") -> dict[str, Any]:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant."}]
    for i, command in enumerate((f"API_TOKEN={S['token']} mysql -u root -p{S['env_pw']} shop -e 'select 1'",
                                 f"curl -H 'Authorization: Bearer {S['bearer']}' https://api.example.com/v1/x")):
        msgs.append({"role": "assistant", "content": f"THOUGHT: step {i}\n\n```bash\n{command}\n```",
                     "extra": {"response": {"id": f"gen-{i}", "model": "openai/gpt-5-mini", "created": 1772442000 + i,
                                            "usage": {"prompt_tokens": 100, "completion_tokens": 7}}}})
        msgs.append({"role": "user", "content": f"<returncode>0</returncode>\n<output>token={S['token']}\n</output>"})
    return {"trajectory_format": "mini-swe-agent-1", "instance_id": instance, "messages": msgs}


def write_sources(root: Path) -> Path:
    """Under ``root``: the transcripts of both sessions, the hook-log capture of
    :data:`CAPTURE_SESSION` and a trajectory. The hooks of :data:`SESSION` come live (the spool)."""
    (root / "projects").mkdir(parents=True)
    for session in (SESSION, CAPTURE_SESSION):
        lines = b"".join(orjson.dumps(r) + b"\n" for r in transcript_records(session))
        (root / "projects" / f"{session}.jsonl").write_bytes(lines)
    capture = root / "capture"
    capture.mkdir()
    hooks = hook_payloads(CAPTURE_SESSION)
    pre = [h for h in hooks if h["hook_event_name"] == "PreToolUse"]
    post = [h for h in hooks if h["hook_event_name"] == "PostToolUse"]
    (capture / "pre_tool_use.json").write_bytes(orjson.dumps(pre))
    (capture / "post_tool_use.json").write_bytes(orjson.dumps(post))
    (root / "run.traj.json").write_bytes(orjson.dumps(trajectory()))
    return root


def leaks(data: bytes | str) -> list[str]:
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")
    return [name for name, secret in S.items() if secret.encode() in raw]
