"""Catch text pasted from a web page before YAML sees it.

Blogs and word processors turn ``"`` into “ ”, ``'`` into ‘ ’, ``-`` list markers into – or —,
and indentation into non-breaking spaces; editors add tabs. kube-apiserver then fails with a
YAML or validation error that does not name the culprit (or, for a quoted level such as
``“Metadata”``, says the level is unsupported). This module finds every such character and
says exactly what to type instead.

This is a deliberate difference from kube-apiserver, which accepts some of these silently: in
``users: [“bob”]`` the curly quotes become part of a user name that never matches, and
``level: “Metadata”`` fails validation without saying why. Rejecting them with the exact fix is
what a user wants before deploying.

Comments are skipped (kube-apiserver ignores them, so a ’ in ``# Don't log`` is harmless), and so
is text inside ASCII-quoted strings. Tabs are reported where go-yaml (kube-apiserver's YAML
parser) rejects them: in indentation and right after ``:``, ``-`` or ``?`` in block context; the
tabs it accepts are turned into spaces for PyYAML, which is stricter
(:func:`spaces_for_allowed_tabs`).
"""
from __future__ import annotations

import unicodedata
from typing import NamedTuple

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
    """One line: the first problem in full, then, per other kind, a count and its first full fix."""
    first = problems[0]
    counts: dict[str, int] = {}
    firsts: dict[str, Problem] = {}
    for p in problems[1:]:
        counts[p.kind] = counts.get(p.kind, 0) + 1
        if p.kind != first.kind:
            firsts.setdefault(p.kind, p)
    if not counts:
        return first.message
    parts = []
    for kind, n in counts.items():
        part = f"{n}{' more' if kind == first.kind else ''} {_KIND_NAMES[kind][n > 1]}"
        if kind in firsts:
            part += f" ({firsts[kind].message})"
        parts.append(part)
    return f"{first.message}; also {'; '.join(parts)}; the text looks pasted from a web page"


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "character").lower()
    return f"the {name} (U+{ord(ch):04X})"


def _code_part(line: str, depth: int = 0) -> tuple[list[tuple[int, str, bool, int]], int]:
    """(index, char, inside ASCII quotes, flow depth) for each char before a comment starts.

    ``depth`` is the ``[``/``{`` nesting carried over from earlier lines; the new depth is returned.
    """
    out: list[tuple[int, str, bool, int]] = []
    quote: str | None = None
    for i, ch in enumerate(line):
        if quote is None:
            if ch == "#" and (i == 0 or line[i - 1] in " \t"):
                break
            if ch in "\"'" and (i == 0 or line[i - 1] in " \t[{,:-"):
                quote = ch
            elif ch in "[{":
                depth += 1
            elif ch in "]}" and depth:
                depth -= 1
            out.append((i, ch, False, depth))
        else:
            out.append((i, ch, True, depth))
            if ch == quote:
                quote = None
    return out, depth


def _tab_allowed(line: str, i: int, depth: int) -> bool:
    """Would go-yaml (libyaml's scanner) accept this tab outside quotes and comments?

    libyaml skips a tab between tokens only in a flow collection or where a simple key is not
    allowed, i.e. after a scalar or a closing bracket; after ``:``, ``-`` or ``?`` in block
    context, and in indentation, it fails with "found character that cannot start any token".
    """
    if depth > 0:
        return True
    before = line[:i].rstrip(" \t")
    if not before.strip():
        return False
    if before.endswith((":", "?")):
        return False
    return not all(c in "- " for c in before.strip())


def _line_problems(lineno: int, line: str, depth: int) -> tuple[list[Problem], int]:
    problems: list[Problem] = []
    indent_len = len(line) - len(line.lstrip(" \t" + "".join(_SPACES)))
    indent = line[:indent_len]
    if "\t" in indent:
        problems.append(Problem(lineno, indent.index("\t") + 1,
                                f"replace the tab (U+0009) in the indentation of line {lineno} with spaces "
                                "(YAML indentation must be spaces)", "tab"))
    rest = line[indent_len:]
    if rest[:1] in _DASHES and (len(rest) == 1 or rest[1] in " \t\u00a0"):
        problems.append(Problem(lineno, indent_len + 1,
                                f"replace {_describe(rest[0])} used as a list marker on line {lineno} with '-'",
                                "dash"))
    chars, new_depth = _code_part(line, depth)
    for i, ch, quoted, d in chars:
        if ch in _SPACES:
            where = "indentation" if i < indent_len else "text"
            what = f"{_describe(ch)} in the {where} of line {lineno}, column {i + 1}"
            msg = f"remove {what}" if ch in ("\u200b", "\ufeff") else f"replace {what} with a plain space"
            problems.append(Problem(lineno, i + 1, msg, "space"))
        elif ch in _QUOTE_FIX and not quoted:
            problems.append(Problem(lineno, i + 1, f"replace {_describe(ch)} on line {lineno}, column {i + 1} "
                                    f"with {_QUOTE_FIX[ch]!r} (typographic quotes are not YAML quotes)", "quote"))
        elif ch == "\t" and not quoted and i >= indent_len and not _tab_allowed(line, i, d):
            after = line[:i].rstrip(" \t")[-1:] or "-"
            problems.append(Problem(lineno, i + 1, f"replace the tab (U+0009) after {after!r} on line {lineno}, "
                                    f"column {i + 1} with a space (YAML does not allow a tab there)", "tab"))
    return problems, new_depth


def find_pasted_characters(text: str) -> list[Problem]:
    """Every pasted-from-a-web-page character outside comments, in file order. Expects no BOM."""
    problems: list[Problem] = []
    depth = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        found, depth = _line_problems(lineno, line, depth)
        problems.extend(found)
    return problems


def spaces_for_allowed_tabs(text: str) -> str:
    """Replace the tabs go-yaml accepts (between tokens, outside quotes) by spaces.

    PyYAML rejects nearly every tab outside quoted strings, go-yaml (which kube-apiserver uses)
    accepts them after a scalar or inside ``[...]``/``{...}``. Call after
    :func:`find_pasted_characters` found nothing, so the remaining tabs are all allowed ones.
    """
    if "\t" not in text:
        return text
    out_lines = []
    depth = 0
    for line in text.splitlines(keepends=True):
        chars, depth = _code_part(line, depth)
        buf = list(line)
        for i, ch, quoted, _ in chars:
            if ch == "\t" and not quoted:
                buf[i] = " "
        out_lines.append("".join(buf))
    return "".join(out_lines)
