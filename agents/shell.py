"""Shell parsing for signatures: a command string -> a flat list of pipelines of simple commands.

Three parsers give the same shape (:class:`Parsed`):

* ``bashlex`` - the real parser, used for everything by default (``fast=False`` forces it);
* ``fast`` - a small lexer for the simple subset (words, quotes, ``&& || ; | &``, redirects, newlines,
  no substitutions, subshells, groups or keywords). It yields exactly what bashlex yields on that subset
  (tests compare the two over the labelled set and the real traces) and bails out on anything else;
* ``shlex`` - the fallback when bashlex cannot parse (``case``, ``time``, broken quoting).

Before parsing, here-document bodies are cut out (bashlex fails on quoted delimiters) and replaced by an
input redirect from a placeholder ``__HD<n>__``; the body stays reachable through :attr:`Parsed.heredocs`.
A here-document whose delimiter line never comes takes the rest of the text, as in bash, unless its ``<<``
stands inside quotes or arithmetic (:class:`_Quoting`).
Full-line comments are dropped. Every pipeline records the operator that preceded it (``&&``, ``||``,
``;``) and its context: ``main``, ``cond`` (an ``if``/``while`` condition) or ``sub`` (a ``$(...)``).
"""

from __future__ import annotations

import bisect
import re
import shlex
from dataclasses import dataclass
from typing import Any

import bashlex  # type: ignore[import-untyped]


@dataclass(frozen=True, slots=True)
class Step:
    """One simple command: its words (after leading ``VAR=x`` assignments) and its redirects as
    ``(kind, target)`` with kind in ``in``, ``out``, ``append``, ``dup`` (fd duplication), ``here``."""

    words: tuple[str, ...]
    assigns: tuple[str, ...] = ()
    redirects: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Pipeline:
    steps: tuple[Step, ...]
    op: str = ""  # operator before this pipeline: "", "&&", "||", ";"
    ctx: str = "main"  # main | cond | sub


@dataclass(frozen=True, slots=True)
class Parsed:
    pipelines: tuple[Pipeline, ...]
    heredocs: tuple[str, ...] = ()
    parser: str = "fast"  # fast | bashlex | shlex


HEREDOC_RE = re.compile(r"(?<![<\d])<<(-?)[ \t]*(['\"]?)([A-Za-z_][\w.-]*)\2")
PLACEHOLDER_RE = re.compile(r"^__HD(\d+)__$")


def _words(text: str) -> list[str]:
    return text.split()


KEYWORDS = frozenset(
    _words("if then else elif fi for while until do done case esac function select time coproc { } [[ ]] !")
)
ASSIGN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\+?=")


class _Quoting:
    """Where bash would be, lexically, at the end of the text fed so far: reading commands, or
    inside quotes, a comment or an arithmetic ``$(( ))``/``(( ))``. Command substitutions
    (``$( )``, backquotes) are commands again, also within double quotes. It lexes quoting only:
    enough to tell a ``<<`` bash takes as a here-document operator from one inside a string
    (``python -c "a << b"``). Fed in pieces, it reads every character once; runs of plain
    characters are skipped by a regex."""

    _CODE = re.compile(r"[\\'\"$()`#]")
    _DQ = re.compile(r'[\\"$`]')
    _ARITH = re.compile(r"[\\()]")
    _SQ = re.compile(r"'")
    _ANSI = re.compile(r"\\.|'", re.S)

    def __init__(self) -> None:
        self.stack: list[list[Any]] = [["c", 0]]  # [kind, parentheses open inside an arithmetic]
        self.quote = ""  # "'" inside single quotes, "$'" inside $'...'
        self.comment = self.escape = False
        self.last = "\n"  # the character before the next piece

    @property
    def in_code(self) -> bool:
        return not (self.quote or self.comment or self.escape) and self.stack[-1][0] in ("c", "`")

    def copy(self) -> _Quoting:
        twin = _Quoting()
        twin.stack = [list(frame) for frame in self.stack]
        twin.quote, twin.comment, twin.escape, twin.last = self.quote, self.comment, self.escape, self.last
        return twin

    def feed(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            if self.escape:
                self.escape, i = False, i + 1
                continue
            if self.comment:
                j = text.find("\n", i)
                if j < 0:
                    break
                self.comment, i = False, j + 1
                continue
            if self.quote:
                m = (self._ANSI if self.quote == "$'" else self._SQ).search(text, i)
                while m is not None and m.group() != "'":
                    m = self._ANSI.search(text, m.end())
                if m is None:
                    break
                self.quote, i = "", m.end()
                continue
            frame = self.stack[-1]
            kind = frame[0]
            m = (self._DQ if kind == '"' else self._ARITH if kind == "a" else self._CODE).search(text, i)
            if m is None:
                break
            i = m.start()
            ch = text[i]
            before = text[i - 1] if i else self.last
            step = 1
            if ch == "\\":
                self.escape = True
            elif kind == "a":
                if ch == "(":
                    frame[1] += 1
                elif frame[1]:
                    frame[1] -= 1
                elif text.startswith("))", i):
                    self.stack.pop()
                    step = 2
            elif text.startswith("$((", i) or (ch == "(" and kind != '"' and text.startswith("((", i)):
                self.stack.append(["a", 0])
                step = 3 if ch == "$" else 2
            elif text.startswith("$(", i):
                self.stack.append(["c", 0])
                step = 2
            elif ch == "`":
                if kind == "`":
                    self.stack.pop()
                else:
                    self.stack.append(["`", 0])
            elif kind == '"':
                if ch == '"':
                    self.stack.pop()
            elif ch == "'":
                self.quote = "$'" if before == "$" else "'"
            elif ch == '"':
                self.stack.append(['"', 0])
            elif ch == "(":
                self.stack.append(["c", 0])
            elif ch == ")":
                if kind == "c" and len(self.stack) > 1:
                    self.stack.pop()
            elif ch == "#" and before in " \t\n;&|()":
                self.comment = True
            i += step
        if text:
            self.last = text[-1]


def extract_heredocs(text: str) -> tuple[str, tuple[str, ...]]:
    """Cut here-document bodies out of ``text``. An operator whose delimiter line never comes takes
    the rest of the text as its body, as bash does (``delimited by end-of-file``), when it stands
    where bash reads commands; inside quotes or arithmetic it is left alone (it is not a
    here-document: ``python -c "a << b"``, ``$((a << b))``)."""
    if "<<" not in text:
        return text, ()
    lines = text.split("\n")
    ends: dict[str, list[int]] = {}  # a line's stripped text -> the lines that hold it, in order
    for k, ln in enumerate(lines):
        key = ln.strip()
        if key and len(key) < 256:
            ends.setdefault(key, []).append(k)
    quoting: _Quoting | None = None  # lexed only when an operator has no delimiter line
    fed = 0  # lines of ``out`` the lexer has read
    out: list[str] = []
    bodies: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        pos = 0
        while True:
            m = HEREDOC_RE.search(line, pos)
            if m is None:
                break
            found = ends.get(m.group(3), [])
            at = bisect.bisect_left(found, i)
            j = found[at] if at < len(found) else len(lines)
            if j == len(lines):
                quoting = quoting or _Quoting()
                for done in out[fed:]:
                    quoting.feed(done + "\n")
                fed = len(out)
                probe = quoting.copy()
                probe.feed(line[: m.start()])
                if not probe.in_code:
                    pos = m.end()
                    continue
            bodies.append("\n".join(lines[i:j]))
            repl = f"< __HD{len(bodies) - 1}__"
            line = line[: m.start()] + repl + line[m.end() :]
            pos = m.start() + len(repl)
            i = j + 1
        out.append(line)
    return "\n".join(out), tuple(bodies)


def _prepare(text: str) -> tuple[str, tuple[str, ...]]:
    body, heredocs = extract_heredocs(text)
    if "\\\n" in body:
        body = body.replace("\\\n", " ")
    if "#" in body:
        body = "\n".join(ln for ln in body.split("\n") if not ln.lstrip().startswith("#"))
    return body.strip(), heredocs


def parse(text: str, fast: bool = True) -> Parsed:
    body, heredocs = _prepare(text)
    if not body:
        return Parsed((), heredocs, "fast")
    if fast:
        pipelines = fast_parse(body)
        if pipelines is not None:
            return Parsed(pipelines, heredocs, "fast")
    try:
        return Parsed(_bashlex_parse(body), heredocs, "bashlex")
    except Exception:  # bashlex raises many types (ParsingError, NotImplementedError, ...)
        return Parsed(shlex_parse(body), heredocs, "shlex")


# ---- fast path -------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""(?P<ws>[ \t]+)|(?P<nl>\n)|(?P<op>&&|\|\||\|&|[|;&])"""
    r"""|(?P<redir>\d*(?:>>|&>>|&>|>&|<&|>\||<<<|<>|>|<))"""
    r"""|(?P<word>(?:[^\s'"\\|&;<>()`$#]|\\.|'[^']*'|"(?:[^"\\`$]|\\.|\$(?![('"]))*"|\$(?![('"])|#)+)"""
)
_UNQUOTE_RE = re.compile(r"""\$'((?:[^'\\]|\\.)*)'|'([^']*)'|"((?:[^"\\]|\\.)*)"|\\(.)""", re.S)
_DQ_ESC_RE = re.compile(r'\\([$`"\\\n])')
_ANSI_ESC_RE = re.compile(r"\\(.)", re.S)
_ANSI = {"n": "\n", "t": "\t", "r": "\r", "0": "", "e": "\x1b", "a": "\a"}


def unquote(word: str) -> str:
    """Quote removal as bash does it: single quotes literal, backslash in double quotes escapes only
    ``$ ` " \\`` and newline, ``$'...'`` ANSI-C escapes. Both parsers use it (bashlex's own quote
    removal drops every backslash inside double quotes, which mangles Windows paths)."""
    if "'" not in word and '"' not in word and "\\" not in word:
        return word

    def repl(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return _ANSI_ESC_RE.sub(lambda e: _ANSI.get(e.group(1), e.group(1)), m.group(1))
        if m.group(2) is not None:
            return m.group(2)
        if m.group(3) is not None:
            return _DQ_ESC_RE.sub(r"\1", m.group(3))
        return "" if m.group(4) == "\n" else m.group(4)

    return _UNQUOTE_RE.sub(repl, word)


def fast_parse(body: str) -> tuple[Pipeline, ...] | None:
    """The simple subset, or None when the command needs the real parser."""
    pos, n = 0, len(body)
    pipelines: list[Pipeline] = []
    steps: list[Step] = []
    words: list[str] = []
    assigns: list[str] = []
    redirects: list[tuple[str, str]] = []
    pending_redir: str | None = None
    op = ""

    def end_step() -> bool:
        if pending_redir is not None:
            return False
        if words or assigns or redirects:
            steps.append(Step(tuple(words), tuple(assigns), tuple(redirects)))
        elif steps:
            return False  # "a | | b"
        words.clear()
        assigns.clear()
        redirects.clear()
        return True

    match = _TOKEN_RE.match
    while pos < n:
        m = match(body, pos)
        if m is None:
            return None
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        tok = m.group()
        if kind == "word":
            if tok[0] == "#" or ("${" in tok and tok.count("{") != tok.count("}")):
                return None  # comments, adjacent quotes ('a'\''b') and odd braces: the real parser decides
            if pending_redir is not None:
                redirects.append(_redirect(pending_redir, unquote(tok)))
                pending_redir = None
                continue
            if not words:
                if tok in KEYWORDS:
                    return None
                if ASSIGN_RE.match(tok):
                    assigns.append(unquote(tok))
                    continue
            words.append(unquote(tok))
        elif kind == "redir":
            if tok.endswith("&") and tok not in ("&",):
                dup = re.match(r"\d+|-", body[pos:])
                if tok in (">&", "<&") or tok[-2:] in (">&", "<&"):
                    if dup is None:
                        return None
                    pos += dup.end()
                    redirects.append(("dup", "&" + dup.group()))
                    continue
            pending_redir = tok
        elif kind == "op" and tok == "|":
            if not end_step() or not steps:
                return None
        elif kind in ("op", "nl"):
            if tok == "|&":
                return None
            if not end_step():
                return None
            if steps:
                pipelines.append(Pipeline(tuple(steps), op))
                steps = []
            elif tok != "\n" and kind == "op":
                return None  # leading or doubled operator
            op = ";" if tok in ("\n", "&") else tok
    if not end_step():
        return None
    if steps:
        pipelines.append(Pipeline(tuple(steps), op))
    return tuple(pipelines)


def _redirect(op: str, target: str) -> tuple[str, str]:
    op = op.lstrip("0123456789")
    if op == "<<<":
        return ("here", target)
    if op in ("<", "<>"):
        return ("in", target)
    if op in (">>", "&>>"):
        return ("append", target)
    return ("out", target)


# ---- bashlex ---------------------------------------------------------------------------------------


def _bashlex_parse(body: str) -> tuple[Pipeline, ...]:
    out: list[Pipeline] = []
    op = ""
    for tree in bashlex.parse(body):
        _walk(tree, "main", op, out, body)
        op = ";"
    return tuple(out)


def _walk(node: object, ctx: str, op: str, out: list[Pipeline], body: str) -> None:
    kind = getattr(node, "kind", "")
    if kind == "list":
        cur = op
        for part in node.parts:  # type: ignore[attr-defined]
            if part.kind == "operator":
                cur = ";" if part.op in ("\n", "&", ";") else part.op
                continue
            _walk(part, ctx, cur, out, body)
    elif kind == "pipeline":
        steps: list[Step] = []
        subs: list[Pipeline] = []
        for part in node.parts:  # type: ignore[attr-defined]
            if part.kind == "command":
                steps.append(_command(part, ctx, subs, body))
            elif part.kind not in ("pipe", "reservedword"):
                _walk(part, ctx, op, out, body)
        if steps:
            out.append(Pipeline(tuple(steps), op, ctx))
        out.extend(subs)
    elif kind == "command":
        subs = []
        step = _command(node, ctx, subs, body)
        out.append(Pipeline((step,), op, ctx))
        out.extend(subs)
    elif kind == "compound":
        for part in node.list:  # type: ignore[attr-defined]
            if part.kind != "reservedword":
                _walk(part, ctx, op, out, body)
                op = ";"
    elif kind in ("if", "while", "until"):
        cur_ctx = ctx
        for part in node.parts:  # type: ignore[attr-defined]
            if part.kind == "reservedword":
                word = part.word
                cur_ctx = "cond" if word in ("if", "elif", "while", "until") else ctx
                continue
            _walk(part, cur_ctx, op, out, body)
            op = ";"
    elif kind in ("for", "function"):
        for part in node.parts:  # type: ignore[attr-defined]
            if part.kind in ("list", "command", "pipeline", "compound", "if", "for", "while", "until"):
                _walk(part, ctx, op, out, body)
                op = ";"


def _command(node: object, ctx: str, out: list[Pipeline], body: str) -> Step:
    words: list[str] = []
    assigns: list[str] = []
    redirects: list[tuple[str, str]] = []
    subs: list[object] = []
    for part in node.parts:  # type: ignore[attr-defined]
        k = part.kind
        if k == "word":
            words.append(_raw_word(part, body))
            subs.extend(_substitutions(part))
        elif k == "assignment":
            assigns.append(_raw_word(part, body))
            subs.extend(_substitutions(part))
        elif k == "redirect":
            target = part.output
            if isinstance(target, int):
                redirects.append(("dup", f"&{target}"))
            elif part.type == ">&" and getattr(target, "word", "").isdigit():
                redirects.append(("dup", "&" + target.word))
            else:
                redirects.append(
                    _redirect(part.type, _raw_word(target, body) if hasattr(target, "pos") else "")
                )
                subs.extend(_substitutions(target))
    sub_ctx = "main" if not words and ctx == "main" else "sub"
    for sub in subs:
        _walk(sub, sub_ctx, ";", out, body)
    return Step(tuple(words), tuple(assigns), tuple(redirects))


def _raw_word(node: object, body: str) -> str:
    start, end = node.pos  # type: ignore[attr-defined]
    return unquote(body[start:end])


def _substitutions(node: object) -> list[object]:
    found: list[object] = []
    for part in getattr(node, "parts", None) or ():
        if part.kind in ("commandsubstitution", "processsubstitution"):
            found.append(part.command)
        else:
            found.extend(_substitutions(part))
    return found


# ---- shlex fallback --------------------------------------------------------------------------------

_SEPARATORS = {"&&", "||", ";", "&", ";;", "(", ")", "{", "}", "then", "do", "else", "fi", "done", "esac"}
_REDIRS = {">", ">>", "<", ">&", "&>", "<&", ">|", "&>>", "<<<", "<>"}


def _split_words(body: str) -> list[str]:
    lex = shlex.shlex(_newlines_to_semicolons(body), posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    try:
        return list(lex)
    except ValueError:
        return _newlines_to_semicolons(body).split()


def _newlines_to_semicolons(body: str) -> str:
    out: list[str] = []
    quote = ""
    for ch in body:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "\n":
            out.append(" ; ")
            continue
        out.append(ch)
    return "".join(out)


def shlex_parse(body: str) -> tuple[Pipeline, ...]:
    pipelines: list[Pipeline] = []
    steps: list[Step] = []
    words: list[str] = []
    redirects: list[tuple[str, str]] = []
    op, ctx, pending = "", "main", ""
    for tok in _split_words(body):
        if pending:
            if tok.isdigit() and pending in (">&", "<&"):
                redirects.append(("dup", "&" + tok))
            else:
                redirects.append(_redirect(pending, tok))
            pending = ""
            continue
        if tok in _REDIRS:
            if words and words[-1].isdigit():
                words.pop()
            pending = tok
            continue
        if tok == "|" or tok in _SEPARATORS or (not words and tok in ("if", "elif", "while", "until")):
            if words or redirects:
                assigns = []
                while words and ASSIGN_RE.match(words[0]):
                    assigns.append(words.pop(0))
                steps.append(Step(tuple(words), tuple(assigns), tuple(redirects)))
                words, redirects = [], []
            if tok == "|":
                continue
            if steps:
                pipelines.append(Pipeline(tuple(steps), op, ctx))
                steps = []
            if tok in ("if", "elif", "while", "until"):
                ctx = "cond"
            elif tok in ("then", "do", "else"):
                ctx = "main"
            op = tok if tok in ("&&", "||") else ";"
            continue
        words.append(tok)
    if words or redirects:
        assigns = []
        while words and ASSIGN_RE.match(words[0]):
            assigns.append(words.pop(0))
        steps.append(Step(tuple(words), tuple(assigns), tuple(redirects)))
    if steps:
        pipelines.append(Pipeline(tuple(steps), op, ctx))
    return tuple(pipelines)


def heredoc_index(target: str) -> int | None:
    m = PLACEHOLDER_RE.match(target)
    return int(m.group(1)) if m else None
