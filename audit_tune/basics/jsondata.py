"""Types for plain data at the JSON/YAML edge, and checked readers that narrow it.

Results inside the program are dataclasses; documents read from or written to files (snapshots,
sweep specs, Prometheus answers) are plain data. ``JsonValue`` names that data precisely, so a
function that takes or returns a document says so instead of ``Any``; the readers narrow a value to
the type the caller needs and raise ``InputError`` naming the field when it is something else.
:func:`loads` parses a document a user gives, refusing what ``json.loads`` lets through silently
(a key twice in one object: the last would win; ``NaN``/``Infinity``, which JSON does not have)
or fails on with an exception other than a syntax error (nesting deeper than the interpreter's
recursion limit, an integer over its digit limit).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TypeAlias

from audit_tune.basics.errors import InputError

JsonScalar: TypeAlias = None | bool | int | float | str
JsonValue: TypeAlias = JsonScalar | list["JsonValue"] | dict[str, "JsonValue"]
JsonObject: TypeAlias = dict[str, JsonValue]
JsonMapping: TypeAlias = Mapping[str, JsonValue]


def as_object(value: JsonValue, where: str) -> JsonObject:
    """``value`` as a JSON object, or an ``InputError`` naming ``where``."""
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def as_list(value: JsonValue, where: str) -> list[JsonValue]:
    """``value`` as a JSON array, or an ``InputError`` naming ``where``."""
    if not isinstance(value, list):
        raise InputError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def as_float(value: JsonValue, where: str) -> float:
    """``value`` as a number (bools refused), or an ``InputError`` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: expected a number, got {type(value).__name__}")
    return float(value)


def as_int(value: JsonValue, where: str) -> int:
    """``value`` as an integer (bools and fractions refused), or an ``InputError`` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise InputError(f"{where}: expected an integer, got {value!r}")
    return int(value)


def as_str(value: JsonValue, where: str) -> str:
    """``value`` as a string, or an ``InputError`` naming ``where``."""
    if not isinstance(value, str):
        raise InputError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def loads(text: str | bytes, what: str, constants: bool = False) -> JsonValue:
    """The JSON document ``text``, or one ``InputError`` line naming ``what`` (and the line, for a
    syntax error): a duplicated key, ``NaN``/``Infinity``, too deep, a number too long.
    ``constants=True`` reads ``NaN``/``Infinity`` as floats, for a document whose own checks refuse
    them naming the field (the snapshot's)."""
    try:
        value: JsonValue = json.loads(text, object_pairs_hook=lambda pairs: _unique(pairs, what),
                                      parse_constant=float if constants else lambda name: _no_constant(name, what))
    except json.JSONDecodeError as e:
        raise InputError(f"{what} line {e.lineno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise InputError(f"{what}: nested too deeply; refused") from None
    except ValueError as e:  # int() over sys.get_int_max_str_digits
        raise InputError(f"{what}: {str(e).split(';')[0]}; refused") from None
    return value


def _unique(pairs: list[tuple[str, JsonValue]], what: str) -> JsonObject:
    out: JsonObject = {}
    for k, v in pairs:
        if k in out:
            raise InputError(f"{what}: key {k!r} appears twice in one object; keep one")
        out[k] = v
    return out


def _no_constant(name: str, what: str) -> float:
    raise InputError(f"{what}: {name} is not a number JSON allows; write a number or null")
