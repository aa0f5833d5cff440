"""One YAML loader for every file audit-tune reads, bounded in what a hostile file can cost.

PyYAML's ``SafeLoader`` builds only plain data, but it still follows aliases without limit (an
"alias bomb" of nine anchors, each listing the previous one nine times, describes 9^9 nodes in a
few hundred bytes), recurses once per nesting level (a 5,000-deep list ends in ``RecursionError``)
and accepts whatever the reader can decode. This loader, before anything is constructed:

* decodes the bytes as UTF-8 (a BOM is allowed) and refuses anything else, or a NUL byte, with
  one line;
* composes the node graph with a nesting limit (:data:`MAX_DEPTH`);
* counts the nodes the graph stands for once every alias is expanded, and refuses more than
  :data:`MAX_NODES` (a self-referencing alias is refused as well).

Every error is an :class:`~audit_tune.basics.errors.InputError` naming the input.
"""
from __future__ import annotations

import datetime
import os
from typing import TypeAlias

import yaml

from audit_tune.basics import files
from audit_tune.basics.errors import InputError
from audit_tune.basics.jsondata import JsonValue

# What SafeLoader builds: JSON's types plus timestamps (``2024-01-01``), ``!!binary`` and ``!!set``,
# and mapping keys of any scalar type. :func:`as_json` narrows it to JSON data.
YamlKey: TypeAlias = None | bool | int | float | str | bytes | datetime.date
YamlValue: TypeAlias = YamlKey | list["YamlValue"] | dict[YamlKey, "YamlValue"] | set[YamlKey]

MAX_DEPTH = 100
MAX_NODES = 1_000_000


class _DepthLimited(yaml.SafeLoader):
    """A SafeLoader whose composer stops at :data:`MAX_DEPTH` levels of nesting."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int | yaml.Node) -> yaml.Node | None:  # type: ignore[override]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(f"nested deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)  # type: ignore[arg-type]  # a mapping's index is its key node
        finally:
            self._depth -= 1


class _TooDeep(Exception):
    pass


def expanded_size(root: yaml.Node, limit: int = MAX_NODES) -> int:
    """Number of nodes ``root`` stands for with every alias expanded; stops counting past ``limit``."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            raise _TooDeep("an alias refers to a node that contains it")
        active.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                n += size(child)
                if n > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                n += size(k) + size(v)
                if n > limit:
                    break
        active.discard(key)
        memo[key] = n
        return n

    return size(root)


def decode(data: bytes | str, what: str) -> str:
    """UTF-8 text of ``data``, or a one-line refusal naming ``what``."""
    return files.decode(data, what, "a YAML or JSON file")


def compose_all(data: bytes | str, what: str, yaml_errors: bool = False) -> list[yaml.Node]:
    """The bounded node graphs of every document in ``data`` (``None`` documents dropped).

    ``yaml_errors=True`` lets syntax errors (``yaml.YAMLError``) through for a caller that words
    them itself; the bounds are always :class:`InputError`."""
    text = decode(data, what)
    try:
        loader = _DepthLimited(text)
    except yaml.YAMLError as e:   # the reader refuses control characters at once
        if yaml_errors:
            raise
        raise InputError(_syntax(e, what)) from None
    nodes: list[yaml.Node] = []
    total = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            total += expanded_size(node, MAX_NODES - total)
            if total > MAX_NODES:
                raise InputError(f"{what}: YAML expands to more than {MAX_NODES:,} nodes (aliases?); refused")
            nodes.append(node)
    except _TooDeep as e:
        raise InputError(f"{what}: {e}; refused") from None
    except RecursionError:
        raise InputError(f"{what}: nested too deeply; refused") from None
    except yaml.YAMLError as e:
        if yaml_errors:
            raise
        raise InputError(_syntax(e, what)) from None
    finally:
        loader.dispose()
    return nodes


def construct(node: yaml.Node, what: str) -> YamlValue:
    """Plain Python data of a node from :func:`compose_all`."""
    loader = yaml.SafeLoader("")
    try:
        value: YamlValue = loader.construct_document(node)
        return value
    except yaml.YAMLError as e:
        raise InputError(_syntax(e, what)) from None
    except RecursionError:
        raise InputError(f"{what}: nested too deeply; refused") from None
    finally:
        loader.dispose()


def load(data: bytes | str, what: str) -> YamlValue:
    """The single document in ``data`` (``None`` if empty); more than one document is refused."""
    nodes = compose_all(data, what)
    if len(nodes) > 1:
        raise InputError(f"{what}: {len(nodes)} YAML documents; expected one")
    return construct(nodes[0], what) if nodes else None


def load_all(data: bytes | str, what: str) -> list[YamlValue]:
    return [construct(n, what) for n in compose_all(data, what)]


def read(path: str | os.PathLike, what: str) -> YamlValue:
    """Read and :func:`load` one YAML file."""
    return load(files.read_bytes(path, what), f"{what} {path}")


def as_json(value: YamlValue, what: str) -> JsonValue:
    """``value`` as JSON data, or an ``InputError`` naming where it holds a timestamp, binary data, a
    set or a mapping key that is not a string (YAML has them, JSON does not)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [as_json(v, f"{what}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, JsonValue] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{what}: key {k!r} is not a string; quote it")
            out[k] = as_json(v, f"{what}.{k}")
        return out
    kind = "binary data" if isinstance(value, bytes) else "a set" if isinstance(value, set) else "a timestamp"
    raise InputError(f"{what}: {kind} ({value!r:.40}) where plain data is expected; quote it")


def _syntax(e: BaseException, what: str) -> str:
    """``what:LINE: not valid YAML (problem)`` in one line."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
    line = f":{mark.line + 1}" if mark is not None else ""
    return f"{what}{line}: not valid YAML ({problem})"
