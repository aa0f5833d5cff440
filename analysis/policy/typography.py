"""Catch text pasted from a web page before YAML sees it.

Blogs and word processors turn ``"`` into “ ”, ``'`` into ‘ ’, ``-`` list markers into – or —,
and indentation into non-breaking spaces; editors add tabs. kube-apiserver then fails with a
YAML or validation error that does not name the culprit (or, for a quoted level such as
``“Metadata”``, says the level is unsupported). This module finds the first such character and
says exactly what to type instead.

Comments are skipped (kube-apiserver ignores them, so a ’ in ``# Don't log`` is harmless), and so
is text inside ASCII-quoted strings. Tabs are reported only in indentation, the only place YAML
forbids them.
"""
from __future__ import annotations

import unicodedata
from typing import Iterator, NamedTuple

_QUOTE_FIX = {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'", "\u201a": "'"}
_DASHES = {"\u2013", "\u2014", "\u2012", "\u2015", "\u2212"}
_SPACES = {"\u00a0", "\u2007", "\u202f", "\u200b", "\ufeff"}


class Problem(NamedTuple):
    line: int  # 1-based
    column: int  # 1-based
    message: str
    kind: str  # "tab", "dash", "space" or "quote"


_KIND_NAMES = {"tab": ("tab in indentation", "tabs in indentation"),
               "dash": ("dash used as a list marker", "dashes used as list markers"),
               "space": ("no-break or zero-width space", "no-break or zero-width spaces"),
               "quote": ("typographic quote", "typographic quotes")}


def summarize(problems: list[Problem]) -> str:
    """The first problem in full, then counts of the rest by kind: one line."""
    first, rest = problems[0], problems[1:]
    if not rest:
        return first.message
    counts: dict[str, int] = {}
    for p in rest:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    parts = [f"{n} {_KIND_NAMES[k][n > 1]}" for k, n in counts.items()]
    return f"{first.message}; also {', '.join(parts)} (the text looks pasted from a web page)"


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "character").lower()
    return f"the {name} (U+{ord(ch):04X})"


def _code_part(line: str) -> list[tuple[int, str, bool]]:
    """(index, char, inside ASCII quotes) for each char before a comment starts."""
    out: list[tuple[int, str, bool]] = []
    quote: str | None = None
    for i, ch in enumerate(line):
        if quote is None:
            if ch == "#" and (i == 0 or line[i - 1] in " \t"):
                break
            if ch in "\"'" and (i == 0 or line[i - 1] in " \t[{,:-"):
                quote = ch
                out.append((i, ch, False))
                continue
            out.append((i, ch, False))
        else:
            out.append((i, ch, True))
            if ch == quote:
                quote = None
    return out


def _line_problems(lineno: int, line: str) -> Iterator[Problem]:
    indent_len = len(line) - len(line.lstrip(" \t" + "".join(_SPACES)))
    indent = line[:indent_len]
    if "\t" in indent:
        yield Problem(lineno, indent.index("\t") + 1,
                      f"replace the tab (U+0009) in the indentation of line {lineno} with spaces "
                      "(YAML indentation must be spaces)", "tab")
    rest = line[indent_len:]
    if rest[:1] in _DASHES and (len(rest) == 1 or rest[1] in " \t\u00a0"):
        yield Problem(lineno, indent_len + 1,
                      f"replace {_describe(rest[0])} used as a list marker on line {lineno} with '-'", "dash")
    for i, ch, quoted in _code_part(line):
        if ch in _SPACES:
            where = "indentation" if i < indent_len else "text"
            what = f"{_describe(ch)} in the {where} of line {lineno}, column {i + 1}"
            msg = f"remove {what}" if ch in ("\u200b", "\ufeff") else f"replace {what} with a plain space"
            yield Problem(lineno, i + 1, msg, "space")
        elif ch in _QUOTE_FIX and not quoted:
            yield Problem(lineno, i + 1, f"replace {_describe(ch)} on line {lineno}, column {i + 1} "
                                         f"with {_QUOTE_FIX[ch]!r} (typographic quotes are not YAML quotes)", "quote")


def find_pasted_characters(text: str) -> list[Problem]:
    """Every pasted-from-a-web-page character outside comments, in file order. Expects no BOM."""
    problems: list[Problem] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        problems.extend(_line_problems(lineno, line))
    return problems
