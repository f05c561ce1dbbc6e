"""Cost of secret redaction in the agent hot path, beside ``orjson.loads`` of the same payload, and
at the publisher (where every record is redacted before it reaches Kafka), beside the publisher's own
encoding of the same envelope.

Payloads are PostToolUse hook events whose tool output is this project's own source code (sinks,
streams, outloop: realistic code that mentions tokens, keys and passwords) or a verbose pytest log,
at 1 KB and 100 KB, with and without real-looking secrets. Measured per payload, medians of several runs:
  reference  orjson.loads(raw)
  gate       redact.scan(raw): which anchors occur in the record (what a clean record costs)
  walk       redact_json(orjson.loads(raw), scan(raw)) minus the loads: what the agent adds
  no gate    redact_json(value) with every anchor searched in every string
At the publisher, per envelope (the same payloads as hook events, and every envelope the importers
make of the real traces when ``../shared/data/traces-dev`` is present), medians of several runs:
  reference  env.model_dump_json().encode(): what ``Publisher.envelope`` costs without redaction
  redacted   the same plus streams.publisher.redact_envelope_bytes (gate scan, redaction, re-encoding)
  ratio      redacted / reference, and the redaction throughput in MB of serialised envelopes per second
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from outloop.schemas.events import Envelope, EventType  # noqa: E402
from outloop.streams.publisher import redact_envelope_bytes  # noqa: E402
from outloop.streams.redact import redact_json, scan  # noqa: E402

TRACES = (REPO.parent / "shared" / "data" / "traces-dev").resolve()

SECRETS = ("export GITHUB_TOKEN=ghp_Zx9Qm2Lk7Rt4Vb8Nc1Hd5Jf3Gs6Pw0Ya2Ue4Io\n"
           "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIzNDU2'\n"
           "DATABASE_URL=postgres://app:Tr0ub4dor-3@db.internal:5432/prod\n"
           "OPENAI_API_KEY=sk-proj-4fJk9QmZx2Lr8Tb6Vn1Wc3Hy5Pd7Gs0Ke\n")


def source_text() -> str:
    parts = [p.read_text() for d in ("sinks", "streams", "outloop") for p in sorted((REPO / d).glob("*.py"))]
    return "\n".join(parts)


def pytest_text() -> str:
    lines = [f"tests/unit/test_mod{i % 40}.py::test_case_{i} PASSED [{i % 100:3d}%]" for i in range(4000)]
    return "\n".join(lines) + "\n==== 4000 passed in 12.31s ====\n"


def payload(text: str, size: int, secrets: bool) -> bytes:
    body = (SECRETS if secrets else "") + text
    event = {"session_id": "s-1", "hook_event_name": "PostToolUse", "tool_name": "Bash", "tool_use_id": "toolu_1",
             "cwd": "/home/dev/proj", "tool_input": {"command": "cat src/*.py", "description": "read the sources"},
             "tool_response": {"stdout": "", "stderr": "", "interrupted": False}}
    overhead = len(orjson.dumps(event))
    event["tool_response"]["stdout"] = body[: max(0, size - overhead)]  # type: ignore[index]
    raw = orjson.dumps(event)
    while len(raw) > size:  # JSON escapes grew it: trim
        event["tool_response"]["stdout"] = event["tool_response"]["stdout"][: -(len(raw) - size)]  # type: ignore[index]
        raw = orjson.dumps(event)
    return raw


def per_call(fn: Callable[[], object], budget: float = 0.15) -> float:
    """Seconds per call: as many calls as fit in ``budget`` seconds, at least 3."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        spent = time.perf_counter() - t0
        if n >= 3 and spent >= budget:
            return spent / n


def main(runs: int = 7) -> None:
    print("== secret redaction per payload, beside orjson.loads of the same payload")
    print("   (2-core machine shared with other engineers' test runs: absolute figures are noisy; read the ratios)")
    texts = {"source code": source_text(), "pytest log": pytest_text()}
    for (label, text) in texts.items():
        for size in (1024, 100 * 1024):
            for secrets in (False, True):
                raw = payload(text, size, secrets)
                value = orjson.loads(raw)
                loads, gate, walk, nogate = [], [], [], []
                for _ in range(runs):
                    ref = per_call(lambda raw=raw: orjson.loads(raw))
                    loads.append(ref)
                    gate.append(per_call(lambda raw=raw: scan(raw)))
                    full = per_call(lambda raw=raw: redact_json(orjson.loads(raw), scan(raw)))
                    walk.append(max(full - ref, 0.0))
                    nogate.append(per_call(lambda value=value: redact_json(value)))
                out = redact_json(value, scan(raw))
                n = orjson.dumps(out).count(b"[REDACTED:")
                ref = statistics.median(loads)
                name = f"{label}, {len(raw) / 1024:.0f} KB, {'with' if secrets else 'no'} secrets ({n} redacted)"
                print(f"  {name}")
                print(f"    orjson.loads (reference)  {ref * 1e6:9.1f} us")
                for what, xs in (("gate  scan(raw)", gate), ("walk  scan+redact_json", walk),
                                 ("no gate redact_json", nogate)):
                    ratios = [x / r for x, r in zip(xs, loads, strict=True)]
                    runs_us = ", ".join(f"{x * 1e6:.0f}" for x in xs)
                    print(f"    {what:26} {statistics.median(xs) * 1e6:9.1f} us   "
                          f"ratio {statistics.median(ratios):6.1f}x   (runs: {runs_us} us)")


def _encode_all(envs: list[Envelope]) -> None:
    for env in envs:
        env.model_dump_json().encode()


def _redact_all(envs: list[Envelope]) -> None:
    for env in envs:
        redact_envelope_bytes(env, env.model_dump_json().encode())


def _publisher_row(name: str, envs: list[Envelope], runs: int, budget: float) -> None:
    size = sum(len(e.model_dump_json().encode()) for e in envs)
    secrets = sum(redact_envelope_bytes(e).count(b"[REDACTED:") for e in envs)
    refs, reds = [], []
    for _ in range(runs):
        refs.append(per_call(lambda: _encode_all(envs), budget))
        reds.append(per_call(lambda: _redact_all(envs), budget))
    ratios = [r / e for r, e in zip(reds, refs, strict=True)]
    extra = [max(r - e, 1e-12) for r, e in zip(reds, refs, strict=True)]
    ref, red = statistics.median(refs), statistics.median(reds)
    per = 1e6 / len(envs)
    print(f"  {name}: {len(envs)} envelopes, {size / 1e6:.2f} MB, {secrets} secrets redacted")
    print(f"    encode (reference)         {ref * per:9.1f} us/envelope  {size / ref / 1e6:8.1f} MB/s")
    print(f"    encode + redact            {red * per:9.1f} us/envelope  {size / red / 1e6:8.1f} MB/s   "
          f"ratio {statistics.median(ratios):5.2f}x   (runs: {', '.join(f'{x:.2f}' for x in ratios)})")
    print(f"    redaction alone            {statistics.median(extra) * per:9.1f} us/envelope  "
          f"{statistics.median([size / x / 1e6 for x in extra]):8.1f} MB/s")


def trace_envelopes() -> list[Envelope]:
    from outloop.streams.importers import ImportStats
    from outloop.streams.importers.detect import iter_paths

    return list(iter_paths([TRACES], ImportStats())) if TRACES.is_dir() else []


def publisher(runs: int = 7) -> None:
    print("== secret redaction at the publisher, beside the publisher's encoding of the same envelope")
    print("   (2-core machine shared with other engineers' test runs: absolute figures are noisy; read the ratios)")
    texts = {"source code": source_text(), "pytest log": pytest_text()}
    for label, text in texts.items():
        for size in (1024, 100 * 1024):
            for secrets in (False, True):
                raw = payload(text, size, secrets)
                env = Envelope(id="019c0000-0000-7000-8000-000000000000", type=EventType.HOOK_EVENT, source="hook",
                               subject="s-1", time="2026-03-01T10:00:00Z", data=orjson.loads(raw))
                _publisher_row(f"hook event, {label}, {len(raw) / 1024:.0f} KB, {'with' if secrets else 'no'} secrets",
                               [env] * 20, runs, 0.15)
    envs = trace_envelopes()
    if envs:
        _publisher_row(f"every envelope of the dev traces ({TRACES.name})", envs, max(3, runs // 2), 0.0)
    else:
        print(f"  (dev traces not found at {TRACES}: skipped)")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    main(n)
    publisher(n)
