"""The Docker path's invariants, read from the files themselves (no Docker engine is needed): the image
does not run as root, the build context leaves out what the image never copies, and compose hands
the hook spool to the host user, whom the forwarder runs as."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data["services"]


def ignored() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [x.strip() for x in lines if x.strip() and not x.startswith("#")]


def test_the_image_runs_as_a_user_of_its_own_not_root() -> None:
    steps = instructions()
    users = [arg for word, arg in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    assert [w for w, _ in steps[last_user:]] == ["USER", "ENTRYPOINT"]  # nothing after it runs as root
    created = " ".join(arg for word, arg in steps if word == "RUN")
    assert "useradd" in created and users[-1] in created and "chown" in created  # it owns /data


def test_the_build_context_leaves_out_the_virtualenv_git_caches_and_runs_but_not_what_is_copied() -> None:
    patterns = ignored()
    for needed in (".venv", ".git", "**/__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "runs"):
        assert needed in patterns, needed
    copied = [src for word, arg in instructions() if word == "COPY" for src in arg.split()[:-1]]
    assert {"pyproject.toml", "README.md", "schemas", "streams", "agents", "sinks", "outloop"} <= set(copied)
    for src in copied:
        assert not any(fnmatch.fnmatch(src, p) for p in patterns), src


def test_compose_hands_the_spool_to_the_host_user_and_the_forwarder_runs_as_that_user() -> None:
    services = compose()
    fwd, init, worker = services["forwarder"], services["spool"], services["worker"]
    spool_mount = "./spool:/spool"
    assert spool_mount in fwd["volumes"] and spool_mount in init["volumes"]
    assert fwd["environment"]["OUTLOOP_SPOOL"] == "/spool"
    assert fwd["user"] == "${OUTLOOP_UID:-1000}:${OUTLOOP_GID:-1000}"
    assert fwd["depends_on"]["spool"] == {"condition": "service_completed_successfully"}
    assert init["user"] == "root" and init["environment"] == {"OUTLOOP_UID": "${OUTLOOP_UID:-1000}",
                                                               "OUTLOOP_GID": "${OUTLOOP_GID:-1000}"}
    script = " ".join(init["entrypoint"])
    assert 'chown "$$OUTLOOP_UID:$$OUTLOOP_GID" /spool' in script and "chmod 0700 /spool" in script
    # only the one-shot runs as root; the worker keeps the image's user; its port is on loopback only
    assert [name for name, svc in services.items() if svc.get("user") == "root"] == ["spool"]
    assert "user" not in worker
    assert all(p.startswith("127.0.0.1:") for svc in services.values() for p in svc.get("ports", []))
