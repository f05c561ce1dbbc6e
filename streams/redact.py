"""Secret redaction for everything outloop stores or shows: strings, nested JSON values and raw bytes.

Secrets (API keys and tokens of well-known shapes, JWTs, Bearer/Basic authorization, private key
blocks, passwords in URLs and connection strings, ``NAME=value`` / ``name: value`` / ``--password x``
/ ``mysql -pX`` assignments whose name says password, secret, token, key, credentials or auth) are
replaced by ``[REDACTED:<kind>]``. Pure and deterministic: the same input always gives the same
output, and redacting twice changes nothing more (so idempotent upserts still converge).

Speed: every rule starts from an *anchor*, a regex with a literal prefix, which CPython's ``re``
finds with a fast substring search (one alternation of all anchors would be tried at every position
and is several times slower). Keyword anchors run over the lower-cased text. :func:`scan` tells
which anchors occur at all in a record: callers scan each record once and hand the result on, and
only the anchors found run their rule.

The scan makes one pass over the record for all the gates with Hyperscan where it is installed
(Linux x86-64; ~1.6 us for a 670-byte record against ~12 us for the 26 gates run one by one):
each gate is compiled in a looser form (lookarounds dropped, possessive and lazy repeats greedy, a
back-reference widened to what it refers to), which matches wherever the gate does and sometimes
where it does not, and every gate Hyperscan reports is confirmed with its own regex. So the scan's
result is exactly the gates' whichever way it runs; without Hyperscan, or if it fails, the gates run
one by one.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Span = tuple[int, int, str]  # start, end, kind
Rule = Callable[[str, "re.Match[str]"], Iterator[Span]]
ALL: frozenset[str] | None = None  # "every anchor may occur": scan again, string by string
_SHORTEST = 7  # no rule finds a secret in fewer characters ("pwd=abc")


def marker(kind: str) -> str:
    return f"[REDACTED:{kind}]"


@dataclass(frozen=True, slots=True)
class Anchor:
    name: str  # the literal prefix; also the gate tested with ``in`` on raw bytes
    folded: bool  # searched in the lower-cased text
    find: re.Pattern[str]
    rule: Rule
    gate: re.Pattern[bytes]


_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")

# ---- which names name a secret, which values are one ---------------------------------------------
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", re.A)  # snake, kebab, dotted and camelCase


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_KEY_QUALIFIERS = _set(
    "api access secret private auth master encryption enc signing client license subscription app account "
    "service session webhook consumer admin deploy bot storage")
_NOT_SECRET_KEYS = _set("primary foreign sort partition cache hash routing idempotency dedup dedupe group "
                        "call map public row join lookup index object")
_GLUED = {"apikey": "api_key", "accesskey": "api_key", "secretkey": "api_key", "privatekey": "api_key",
          "authkey": "api_key", "pwd": "password", "pass": "password", "auth": "auth", "cred": "credentials",
          "creds": "credentials", "credential": "credentials", "credentials": "credentials"}
_NOT_SECRET_TAILS = _set(
    "file path dir folder env var name length len min max policy required prompt field label placeholder type "
    "types count size limit url uri endpoint id ttl expiry expires expiration stdin usage budget total format "
    "header param cmd command helper store manager provider source ref version rotation strength hint reset "
    "changed at time timeout index mode algorithm alg scheme location regex pattern enabled disabled set date "
    "age last expire expired")
_NON_VALUES = _set("true false null none nil undefined yes no on off required optional string str int bool "
                   "any object bytes")
_IDENT = re.compile(r"[A-Za-z_]\w*", re.A)
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+", re.A)


_WEAK = frozenset(("pass", "pwd", "auth", "cred", "creds", "credential", "credentials"))
_LAST = frozenset(("password", "passwd", "passphrase", "secret", "key", "apikey", "accesskey", "secretkey"))


def classify(name: str) -> tuple[str, bool, bool] | None:
    """(kind, strong, ends on the secret word) for a variable, flag, header or JSON key that names a
    secret, else None. Weak names (``pass``, ``pwd``, ``auth``, ``creds``) need ``=`` or a flag."""
    low = name.lower()
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words or (len(words) > 1 and words[-1] in _NOT_SECRET_TAILS):
        return None
    last = words[-1] in _LAST or words[-1] in _WEAK or words[-1].endswith("token")
    if low.endswith("authorization"):
        return "authorization", True, True
    if "password" in low or "passwd" in low or "passphrase" in low:
        return "password", True, last
    if "secret" in low and "secretar" not in low:
        return "secret", True, last
    for i, w in enumerate(words):
        if w.endswith("token"):
            return "token", True, last
        if w in _GLUED:
            return _GLUED[w], w not in _WEAK, last
        if w in ("key", "keys") and i > 0 and words[i - 1] in _KEY_QUALIFIERS:
            return "api_key", True, last
        if w in ("key", "keys") and i > 0 and name.replace("-", "_").isupper() and words[i - 1] not in _NOT_SECRET_KEYS:
            return "api_key", False, last  # STRIPE_KEY=... in an environment, not UNKNOWN_KEY = b"x" in code
    return None


classify = functools.lru_cache(maxsize=4096)(classify)  # field and variable names repeat a lot


def secret_name(name: str) -> str | None:
    """The kind of secret a variable, flag, header or JSON key named ``name`` holds, else None."""
    found = classify(name)
    return found[0] if found else None


def secret_value(value: str, quoted: bool = False, name: str = "", kind: str = "") -> bool:
    """Whether ``value``, assigned to a secret name, is a secret (not a reference, type or placeholder)."""
    v = value.strip()
    if len(v) < 3 or v.startswith(("[REDACTED", "$", "%", "{{", "<", "*")) or v.lower() in _NON_VALUES:
        return False
    if len(set(v)) == 1 or (not quoted and _IDENT.fullmatch(v) and v.lower() in name.lower()):
        return False  # password: xxxxxxxx; code: token=token, self.api_key = api_key
    if not quoted and _DOTTED.fullmatch(v):
        return False  # code: self.token, os.environ
    # $PWD in an `env` listing, a credentials file path
    return not (name.lower() in ("pwd", "oldpwd", "credentials") and v[0] in "/~.")


def _whole(kind: str | Callable[[re.Match[str]], str], group: int | str = 0, back: int = 0,
           boundary: bool = True) -> Rule:
    """The match (or one group of it, starting ``back`` characters earlier) is the secret, when it
    does not continue a longer word."""

    def rule(text: str, m: re.Match[str]) -> Iterator[Span]:
        start = m.start(group) - back
        if start < 0 or (boundary and start > 0 and text[start - 1] in _ALNUM):
            return
        yield start, m.end(group), kind if isinstance(kind, str) else kind(m)

    return rule


def _stripe(text: str, m: re.Match[str]) -> Iterator[Span]:
    if m.start() > 0 and text[m.start() - 1] in "sr":
        yield from _whole("stripe_key", back=1)(text, m)


_NAME_SET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]*", re.A)
_ASSIGN = re.compile(  # value: "double", 'single', \"escaped inside JSON\" or bare
    r"""(?P<kq>\\?["']?)(?P<sep>[ \t]*[:=][ \t]*|[ \t]+)(?:\\"(?P<eq>(?:[^"\\\n]|\\[^"])*)\\"|"""
    r""""(?P<dq>(?:[^"\\\n]|\\.)*)"|'(?P<sq>[^'\n]*)'|(?P<bare>[^\s'"&;|,<>(){}\[\]\\`]+))""", re.A)
_SET_BEFORE = re.compile(r"\bset[ \t]+\Z", re.A)
_AUTH_VALUE = re.compile(r"""["']?[ \t]*[:=][ \t]*["']?(?:(?P<scheme>bearer|basic|token|digest|negotiate)[ \t]+)?"""
                         r"""(?P<v>[^\s'",\\]+)""", re.A | re.I)


def _assignment(text: str, m: re.Match[str]) -> Iterator[Span]:
    """``<name><sep><value>`` where the name around the keyword (group ``n`` of ``m``) names a secret."""
    start = kw_start = m.start("n")
    lowest = max(0, kw_start - 64)
    while start > lowest and text[start - 1] in _NAME_SET:
        start -= 1
    end = _NAME_CHARS.match(text, kw_start).end()  # type: ignore[union-attr]
    name = text[start:end]
    low = name.lower()
    if low.endswith("authorization"):
        a = _AUTH_VALUE.match(text, end)
        if a and secret_value(a["v"]) and not a["v"].startswith("[REDACTED"):
            yield a.start("v"), a.end("v"), "basic_auth" if (a["scheme"] or "").lower() == "basic" else "authorization"
        return
    found = classify(name)
    a = _ASSIGN.match(text, end) if found else None
    if a is None:
        return
    kind, strong, last = found  # type: ignore[misc]
    sep = a["sep"].strip()
    if not sep and not (last and (name.startswith("-") or _SET_BEFORE.search(text, max(0, start - 16), start))):
        return  # "password reset", "token is": only flags and `set NAME value` take a spaced value
    if not strong and (a["sep"] != sep if sep == "=" else sep == ":" and not a["kq"]):
        return  # weak names: "PASS: test_x", `auth = (u, p)` in code; only NAME=value or a quoted JSON key
    group = next(g for g in ("eq", "dq", "sq", "bare") if a[g] is not None)
    value = a[group]
    after = text[a.end(): a.end() + 1]
    if group == "bare" and after in ("(", "["):
        return  # code: token = get_token(), key: Optional[str]
    if secret_value(value, quoted=group != "bare", name=name, kind=kind):
        yield a.start(group), a.end(group), kind


def _value(kind: str) -> Rule:
    """Group ``v`` of the anchor's match is the secret (unless a reference or already redacted)."""

    def rule(text: str, m: re.Match[str]) -> Iterator[Span]:
        if not m["v"].startswith(("[REDACTED", "$")):
            yield m.start("v"), m.end("v"), kind

    return rule


def _anchor(literal: str, rule: Rule, pattern: str | None = None, folded: bool = False, flags: int = 0) -> Anchor:
    """``pattern`` must start with ``literal`` (CPython's ``re`` then skips to it with a substring
    search). The gate is the same pattern over raw JSON bytes, where a tab may be spelled ``\\t``."""
    pattern = pattern or re.escape(literal)
    gate = re.compile(pattern.replace(r"[ \t]", r"(?:[ \t]|\\t)").encode(), re.A | flags)
    return Anchor(literal, folded, re.compile(pattern, re.A | flags), rule, gate)


_KW = r"[a-z0-9_.-]*+(?:\\?[\"'])?[ \t]*+[:=]"  # rest of the name, a closing quote, then = or :
_KWS = r"(?:pass|pwd|secret|token|key|auth|cred)"
_SK = r"sk-(?:ant-[A-Za-z0-9_-]{20,}|(?=[A-Za-z0-9_-]{0,200}?\d)[A-Za-z0-9_-]{20,})"
ANCHORS: tuple[Anchor, ...] = (
    *(_anchor(k, _assignment, f"(?P<n>{k}){_KW}", folded=True)
      for k in ("pass", "pwd", "secret", "token", "key", "cred", "auth")),
    _anchor("-", _assignment, rf"--?(?=[a-z])[a-z0-9_.-]{{0,40}}?(?P<n>{_KWS})[a-z0-9_.-]*[ \t]+[^\s-]", folded=True),
    _anchor("set", _assignment, rf"set[ \t]+[a-z0-9_.-]{{0,40}}?(?P<n>{_KWS})[a-z0-9_.-]*[ \t]+[^\s-]", folded=True),
    _anchor("bearer", _whole("bearer", "v"), r"bearer[ \t]+(?P<v>(?=[A-Za-z0-9._~+/=-]{0,40}?\d|[A-Za-z0-9._~+/=-]{20})"
                                             r"[A-Za-z0-9._~+/=-]{8,})", folded=True),
    _anchor("mysql", _value("password"), r"mysql(?:dump|admin|sh)?\b[^\n|;&]{0,300}?[ \t]-p(?P<v>[^\s'\"\\]+)",
            folded=True),
    _anchor("sshpass", _value("password"), r"""sshpass[ \t]+-p[ \t]*(?P<q>["']?)(?P<v>[^\s'"\\]+)(?P=q)""",
            folded=True),
    _anchor("curl", _value("password"), folded=True, pattern=r"""curl\b[^\n|;&]{0,300}?[ \t](?:-u|--user)"""
            r"""(?:[ \t]+|=)(?P<q>["']?)[^\s:'"]*:(?P<v>[^\s'"\\]+)(?P=q)"""),
    _anchor("sk-", _whole(lambda m: "anthropic_key" if m[0].startswith("sk-ant-") else "openai_key"), _SK),
    _anchor("k_", _stripe, r"k_(?:live|test)_[A-Za-z0-9]{16,}"),
    _anchor("gh", _whole("github_token"), r"gh[pousr]_[A-Za-z0-9]{30,}"),
    _anchor("github_pat_", _whole("github_token"), r"github_pat_[A-Za-z0-9_]{30,}"),
    _anchor("A", _whole(lambda m: "google_api_key" if m[0].startswith("AIza") else "aws_access_key_id"),
            r"A(?:(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|NPA)[A-Z0-9]{16}(?![A-Za-z0-9])|Iza[0-9A-Za-z_-]{35})"),
    _anchor("xox", _whole("slack_token"), r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    _anchor("hooks.slack.com", _whole("slack_webhook", "v"), r"hooks\.slack\.com/services/(?P<v>[A-Za-z0-9/]{10,})"),
    _anchor("eyJ", _whole("jwt"), r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    _anchor("://", _whole("url_password", "v", boundary=False), r"""://[^/\s:@'"\[\]]*:(?P<v>(?![$\[])[^@/\s'"]+)@"""),
    _anchor("-----BEGIN", _whole("private_key", boundary=False),
            r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
            r"|[A-Za-z0-9+/=\s\\:,.-]*)", flags=re.S),
    _anchor("glpat-", _whole("gitlab_token"), r"glpat-[A-Za-z0-9_-]{20,}"),
    _anchor("npm_", _whole("npm_token"), r"npm_[A-Za-z0-9]{30,}"),
    _anchor("hf_", _whole("huggingface_token"), r"hf_[A-Za-z0-9]{30,}"),
)
_FOLDED = tuple(a for a in ANCHORS if a.folded)
_EXACT = tuple(a for a in ANCHORS if not a.folded)
_EVERY = frozenset(a.name for a in ANCHORS)
_ESCAPED = re.compile(rb"\\u00[2-7]")  # JSON escapes that could hide an anchor from the gates (with \/)


log = logging.getLogger("outloop.redact")
_NONE: frozenset[str] = frozenset()


def loosened(pattern: str) -> str:
    """A gate's regex in a form Hyperscan compiles that matches wherever ``pattern`` does: lookaheads
    dropped, named groups plain, possessive repeats greedy, the back-reference ``(?P=q)`` (to an
    optional quote) widened to an optional quote. Lazy repeats are left: Hyperscan reports every
    match, so laziness changes nothing."""
    p = re.sub(r"\(\?P<\w+>", "(?:", pattern.replace("*+", "*").replace("++", "+"))
    p = p.replace("(?P=q)", "[\"']?")
    out, i = [], 0
    while i < len(p):
        if p.startswith(("(?=", "(?!"), i):  # skip to the group's closing parenthesis
            depth, j = 0, i
            while True:
                c = p[j]
                if c == "\\":
                    j += 2
                    continue
                if c == "[":
                    j += 1
                    while p[j] != "]" or p[j - 1] == "\\":
                        j += 1
                elif c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            i = j + 1
            continue
        out.append(p[i])
        i += 1
    return "".join(out)


class _OnePass:
    """All gates in one Hyperscan database (compiled on first use), a scratch space per thread."""

    def __init__(self) -> None:
        import hyperscan

        self.hs = hyperscan
        flags = [hyperscan.HS_FLAG_SINGLEMATCH | (hyperscan.HS_FLAG_CASELESS if a.folded else 0)
                 | (hyperscan.HS_FLAG_DOTALL if a.gate.flags & re.S else 0) for a in ANCHORS]
        self.db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self.db.compile(expressions=[loosened(a.gate.pattern.decode()).encode() for a in ANCHORS],
                        ids=list(range(len(ANCHORS))), elements=len(ANCHORS), flags=flags)
        self.local = threading.local()

    def candidates(self, data: bytes) -> list[int]:
        scratch = getattr(self.local, "scratch", None)
        if scratch is None:
            scratch = self.local.scratch = self.hs.Scratch(self.db)
        found: list[int] = []
        self.db.scan(data, match_event_handler=_collect, context=found, scratch=scratch)
        return found


def _collect(gate: int, start: int, end: int, flags: int, found: object) -> None:
    found.append(gate)  # type: ignore[attr-defined]  # the list passed as the scan's context


@functools.cache
def _one_pass() -> _OnePass | None:
    try:
        return _OnePass()
    except ImportError:
        return None
    except Exception:  # noqa: BLE001 - a Hyperscan that cannot compile here: the gates run one by one
        log.warning("secret scan: Hyperscan unusable here, gates run one by one", exc_info=True)
        return None


def scan(raw: bytes | str) -> frozenset[str]:
    """Names of the anchors whose pattern matches somewhere in ``raw`` (a whole record, raw JSON or
    text): no other rule can find a secret in any string of it."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    if (b"\\u00" in data and _ESCAPED.search(data)) or b"\\/" in data:
        return _EVERY
    one = _one_pass()
    if one is not None:
        try:
            found = one.candidates(data)
        except Exception:  # noqa: BLE001 - e.g. a scratch in use: this record's gates one by one
            found = list(range(len(ANCHORS)))
        if not found:
            return _NONE
        gates = [ANCHORS[i] for i in found]
    else:
        gates = list(ANCHORS)
    low = data.lower() if any(a.folded for a in gates) else data
    return frozenset(a.name for a in gates if a.gate.search(low if a.folded else data))


@functools.lru_cache(maxsize=256)
def _selected(only: frozenset[str] | None) -> tuple[tuple[Anchor, ...], tuple[Anchor, ...]]:
    return (tuple(a for a in _EXACT if only is None or a.name in only),
            tuple(a for a in _FOLDED if only is None or a.name in only))


def _spans(text: str, only: frozenset[str] | None) -> list[Span]:
    spans: list[Span] = []
    exact, folded = _selected(only)
    for a in exact:
        for m in a.find.finditer(text):
            spans.extend(a.rule(text, m))
    if folded:
        low = text.lower()
        same = len(low) == len(text)  # then positions in ``low`` are positions in ``text``
        for a in folded:
            finder = a.find if same else re.compile(a.find.pattern, re.A | re.I | a.find.flags)
            for m in finder.finditer(low if same else text):
                spans.extend(a.rule(text, m))
    return spans


def redact_text(text: str, only: frozenset[str] | None = ALL) -> str:
    """``text`` with every secret replaced. ``only``: the anchors :func:`scan` found in the record."""
    if len(text) < _SHORTEST or (only is not None and not only):
        return text
    spans = _spans(text, only)
    if not spans:
        return text
    spans.sort(key=lambda s: (s[0], -s[1]))
    out: list[str] = []
    pos = 0
    for start, end, kind in spans:
        if start < pos or end <= start:
            continue  # inside (or overlapping) a secret already replaced
        out.append(text[pos:start])
        out.append(marker(kind))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redact_json(value: Any, only: frozenset[str] | None = ALL) -> Any:
    """A nested JSON value (dicts, lists, strings, scalars) with secrets replaced in every string, and
    the whole string value of every key that names a secret (``{"password": "..."}``)."""
    if only is not None and not only:
        return value
    if isinstance(value, str):
        return redact_text(value, only)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = redact_text(k, only) if isinstance(k, str) and len(k) > 16 else k  # field names are not secrets
            if isinstance(v, str) and isinstance(k, str):
                kind = secret_name(k)
                if kind is not None and secret_value(v, quoted=True, name=k, kind=kind):
                    out[key] = marker(kind)
                    continue
            out[key] = redact_json(v, only)
        return out
    if isinstance(value, list):
        return [redact_json(v, only) for v in value]
    return value


def redact_bytes(raw: bytes) -> bytes:
    """Raw record bytes with secrets replaced; bytes that are not UTF-8 are kept as they are."""
    only = scan(raw)
    if not only:
        return raw
    text = raw.decode("utf-8", "surrogateescape")
    out = redact_text(text, only)
    return raw if out == text else out.encode("utf-8", "surrogateescape")


def redact_canonical(value: Any, canonical: bytes) -> Any:
    """``value`` with its secrets redacted, given its canonical JSON (the gate scans those bytes once):
    ``value`` itself when no rule can match. The redactor the contract's ids take
    (:data:`outloop.schemas.ids.Redactor`)."""
    only = scan(canonical)
    return redact_json(value, only) if only else value
