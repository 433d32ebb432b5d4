"""Normalize SQL text into a ProxySQL-style digest (text, stable 64-bit id, comments and hints)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from hashlib import blake2b

__all__ = (
    "CONSISTENCY_LEVELS",
    "NO_HINTS",
    "Digest",
    "Hints",
    "compute_digest",
    "digest_id",
    "normalize",
    "parse_hints",
    "reported_digest",
)

CONSISTENCY_LEVELS = frozenset(
    {"eventual", "strong", "read_your_writes", "causal", "causal_global"}
)


@dataclass(frozen=True, slots=True)
class Hints:
    """Routing hints read from `/* pyproxy:... */` comments of one statement."""

    route: str | None = None
    """'writer', 'reader', or a server name from `pyproxy:server=NAME`."""
    consistency: str | None = None
    """One of CONSISTENCY_LEVELS."""


NO_HINTS = Hints()


@dataclass(frozen=True, slots=True)
class Digest:
    """The normalized form of one SQL text (possibly a multi-statement batch)."""

    text: str
    """Literals replaced by `?`, lists of `?` collapsed, comments removed, case folded."""
    id: int
    """64-bit digest id, stable across processes and hosts (blake2b of `text`)."""
    comments: tuple[str, ...] = ()
    """The comments removed from the text, in order, verbatim (executable ones excluded)."""
    hints: Hints = NO_HINTS

    @property
    def hex(self) -> str:
        """The id formatted the way ProxySQL prints digests: 0x + 16 upper-case hex digits."""
        return f"0x{self.id:016X}"


# Literals are replaced in C-level regex passes over the lower-cased text. Each pattern
# starts with a character set or its branches with literal characters, so the engine
# skips ordinary words and operators in C without entering the alternation; lookbehinds
# come after the first character for the same reason. Whitespace is folded last by
# str.split, also in C. A Python callback runs only for text with comments or quoted
# identifiers, whose case or content must be kept.

# Numbers as MySQL's lexer reads them: an integer run into letters is a name (1abc), but a
# decimal point or an exponent ends the number (1.5INTO is 1.5 INTO). Hex and bit values
# too; a leading sign is folded later (_SIGN). Possessive quantifiers: no backtracking.
_NUMBER_BRANCH = r"""
    (?<=[0-9])(?<![\w$][0-9])                            # not a digit inside a name
    (?:(?<=\.[0-9])[0-9]*+(?:e[-+]?[0-9]++)?              # the digits of .5
      |(?<=0)x[0-9a-f]++(?![\w$])|(?<=0)b[01]++(?![\w$])
      |[0-9]*+(?:\.[0-9]*+(?:e[-+]?[0-9]++)?|e[-+]?[0-9]++|(?![\w$])))
"""
# Strings and numbers in one pass, for text without comments or quoted identifiers (the
# common case). The first character picks the branch through a one-character lookbehind.
# Strings without a backslash get the [^'] form: a much faster loop in the regex engine
# than [^'\\], and exact when there is no escape to honour. String bodies are atomic
# (?>...): a string runs to its closing quote or, unterminated, to the end of the text,
# never to a quote found by backtracking.
_LITERAL = re.compile(
    rf"""['"0-9](?:{_NUMBER_BRANCH}
      |(?<=')(?>[^']*(?:''[^']*)*)(?:'|.*)               # unterminated: the rest
      |(?<=")(?>[^"]*(?:""[^"]*)*)(?:"|.*))              # "string" (no ANSI_QUOTES)
    """,
    re.VERBOSE | re.DOTALL,
)
_LITERAL_ESCAPES = re.compile(
    rf"""['"0-9](?:{_NUMBER_BRANCH}
      |(?<=')(?>[^'\\]*(?:(?:\\.|'')[^'\\]*)*)(?:'|.*)
      |(?<=")(?>[^"\\]*(?:(?:\\.|"")[^"\\]*)*)(?:"|.*))
    """,
    re.VERBOSE | re.DOTALL,
)
# Numbers alone, after _SCAN has replaced the strings.
_NUMBER = re.compile(rf"[0-9](?:{_NUMBER_BRANCH})", re.VERBOSE)
# Comments, executable comment markers, strings and quoted identifiers, with a callback.
# The empty marker groups tell the branches apart through m.lastindex. {S1}/{S2} are the
# string bodies: with backslash escapes (MySQL's default) or without (NO_BACKSLASH_ESCAPES).
_SCAN_PATTERN = r"""
 /\*(?:(?!m?!)(?:[^*]*\*+(?:[^/*][^*]*\*+)*/|.*)()  # 1 block comment (or unterminated), /*+ */
      |m?![0-9]*())                                 # 2 /*! and /*M! opener: content is code
|--(?=\s|$)[^\n]*()                                 # 3 line comment (MySQL needs the space)
|\#[^\n]*()                                         # 4 line comment
|\*/()                                              # 5 closer of an executable comment
|'(?>{S1})(?:'|.*)()                                # 6 string (unterminated: the rest)
|"(?>{S2})(?:"|.*)()                                # 7 string: default sql_mode, no ANSI_QUOTES
|`(?:[^`]*(?:``[^`]*)*`|.*)()                       # 8 quoted identifier: keeps its case
"""
_COMMENTS = frozenset({1, 3, 4})
_STRINGS = frozenset({6, 7})
_QUOTED_ID = 8


def _scan_regex(escapes: bool, flags: int) -> re.Pattern[str]:
    if escapes:
        s1, s2 = r"[^'\\]*(?:(?:\\.|'')[^'\\]*)*", r'[^"\\]*(?:(?:\\.|"")[^"\\]*)*'
    else:
        s1, s2 = r"[^']*(?:''[^']*)*", r'[^"]*(?:""[^"]*)*'
    pattern = _SCAN_PATTERN.replace("{S1}", s1).replace("{S2}", s2)
    return re.compile(pattern, re.VERBOSE | re.DOTALL | flags)


# Indexed by backslash_escapes. The IGNORECASE twins are for the rare text whose length
# changes when lower-cased (spans can't be mapped back to the original then).
_SCAN = (_scan_regex(False, 0), _scan_regex(True, 0))
_SCAN_ANYCASE = (_scan_regex(False, re.IGNORECASE), _scan_regex(True, re.IGNORECASE))
_QUOTED_ID_SPLIT = re.compile(r"(`[^`]*(?:``[^`]*)*`)")

_GROUP = r"\( ?\?(?: ?, ?\?)* ?\)"
_LIST = re.compile(rf"{_GROUP}(?: ?, ?{_GROUP})+|\( ?\?(?: ?, ?\?)+ ?\)")
# A sign right after an operator, '(' or ',' belongs to the number: `id = -1` is `id = ?`.
_SIGN = re.compile(r"[-+](?:(?<=[=<>(,][-+])|(?<=[=<>(,] [-+])) ?\?")

_HINT = re.compile(
    r"pyproxy:(?:(writer|reader)\b|server=([^\s*/,;]+)|consistency=(\w+))", re.IGNORECASE
)


def normalize(sql: str, *, backslash_escapes: bool = True) -> tuple[str, tuple[str, ...]]:
    """Return (digest text, comments) for `sql`: compute_digest without the hash.

    backslash_escapes=False reads strings as a session with NO_BACKSLASH_ESCAPES would.
    """
    low = sql.lower()
    if "/*" in low or "#" in low or "--" in low or "`" in low or "*/" in low:
        found: list[str] = []
        text = _NUMBER.sub("?", _scan(sql, low, found, backslash_escapes))
        comments = tuple(found)
    else:
        comments = ()
        escapes = backslash_escapes and "\\" in low
        text = (_LITERAL_ESCAPES if escapes else _LITERAL).sub("?", low)
    # Folds whitespace inside quoted identifiers too: harmless for a digest.
    text = " ".join(text.split())
    if text.endswith(";"):
        text = text.rstrip("; ")
    if "?" in text:
        if "(?" in text or "( ?" in text:
            text = _LIST.sub("(?,...)", text)
        if "-" in text or "+" in text:
            text = _SIGN.sub("?", text)
    return text, comments


def digest_id(text: str) -> int:
    """The 64-bit id of a digest text: blake2b, so stable across processes (unlike hash())."""
    return int.from_bytes(
        blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big"
    )


def compute_digest(sql: str) -> Digest:
    """Normalize `sql` and hash it. Pure, deterministic, safe on any input."""
    text, comments = normalize(sql)
    if not comments:
        return Digest(text, digest_id(text))
    return Digest(text, digest_id(text), comments, parse_hints(comments))


def reported_digest(sql: str, digest: Digest, backslash_escapes: bool | None) -> Digest:
    """The digest to show in statistics for sql, run by a session whose strings have
    backslash escapes (True), have none (False: NO_BACKSLASH_ESCAPES) or either (None).

    `digest` is sql's default-mode digest. Only a backslash in a string can make the two
    readings differ; then the session's reading is used, and when it is unknown, only what
    both readings agree on is kept (cut where they part, marked `...`): no literal of either
    reading can show through.
    """
    if backslash_escapes is True or "\\" not in sql:
        return digest
    alt, _ = normalize(sql, backslash_escapes=False)
    if alt == digest.text:
        return digest
    if backslash_escapes is None:
        text = digest.text
        n = 0
        while n < len(text) and n < len(alt) and text[n] == alt[n]:
            n += 1
        alt = text[:n] + "..."
    return Digest(alt, digest_id(alt), digest.comments, digest.hints)


def _scan(sql: str, low: str, comments: list[str], escapes: bool) -> str:
    """Replace strings, drop comments (collected verbatim); `low` is `sql.lower()`."""
    if len(low) != len(sql):
        return _scan_anycase(sql, comments, escapes)

    def replace(m: re.Match[str]) -> str:
        i = m.lastindex
        if i in _STRINGS:
            return "?"
        if i == _QUOTED_ID:
            return sql[m.start() : m.end()]
        if i in _COMMENTS:
            comments.append(sql[m.start() : m.end()])
        return " "

    return _SCAN[escapes].sub(replace, low)


def _scan_anycase(sql: str, comments: list[str], escapes: bool) -> str:
    """_scan for text whose lower-cased form has another length (some Unicode)."""

    def replace(m: re.Match[str]) -> str:
        i = m.lastindex
        if i in _STRINGS:
            return "?"
        if i == _QUOTED_ID:
            return m.group()
        if i in _COMMENTS:
            comments.append(m.group())
        return " "

    parts = _QUOTED_ID_SPLIT.split(_SCAN_ANYCASE[escapes].sub(replace, sql))
    # Odd indexes are the quoted identifiers captured by the split.
    return "".join(p if i % 2 else p.lower() for i, p in enumerate(parts))


def parse_hints(comments: tuple[str, ...] | list[str]) -> Hints:
    """Read pyproxy routing hints from comment texts; later hints override earlier ones."""
    route: str | None = None
    consistency: str | None = None
    for comment in comments:
        if "pyproxy:" not in comment.lower():
            continue
        for m in _HINT.finditer(comment):
            if m.group(1):
                route = m.group(1).lower()
            elif m.group(2):
                route = m.group(2)
            elif m.group(3) and m.group(3).lower() in CONSISTENCY_LEVELS:
                consistency = m.group(3).lower()
    if route is None and consistency is None:
        return NO_HINTS
    return Hints(route, consistency)
