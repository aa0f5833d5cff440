"""Load an ``audit.k8s.io/v1`` Policy file the way kube-apiserver's ``--audit-policy-file`` does.

Mirrors ``staging/src/k8s.io/apiserver/pkg/audit/policy/reader.go`` (``LoadPolicyFromBytes``) at
the 1.37 development snapshot, identical since 1.26 apart from dropping ``ioutil``:

1. Decode strictly. Since Kubernetes 1.26 a *strict-decoding* error (an unknown field, including
   a wrongly-cased one such as ``Level``, or a duplicated field) is **not** fatal: kube-apiserver
   logs ``Audit policy contains errors, falling back to lenient decoding`` and decodes again,
   dropping unknown fields (the last duplicate wins). We do the same by default and return those
   messages in ``Policy.warnings``; ``strict=True`` makes them errors (what a careful user wants,
   and what 1.24/1.25 did). Any other decoding error (bad YAML, a string where a list belongs,
   a number where a string belongs) is fatal.
2. ``apiVersion`` must be ``audit.k8s.io/v1`` (v1alpha1/v1beta1 were removed in 1.24) and ``kind``
   must be ``Policy``.
3. ``validation.ValidatePolicy`` (see :mod:`analysis.policy.validation`).
4. A policy with 0 rules is refused ("loaded illegal policy with 0 rules").

Before any of that, text pasted from a web page (typographic quotes, en/em dash list markers,
non-breaking spaces, tabs in indentation) is reported precisely (:mod:`analysis.policy.typography`).

Every error is one :class:`sim.errors.InputError` line: ``FILE:LINE: field PATH: what is wrong;
what would be valid``. Field paths are written as upstream writes them (``rules[3].level``).
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from analysis.policy.model import API_VERSION, KIND, GroupResources, Policy, Rule
from analysis.policy.typography import find_pasted_characters, spaces_for_allowed_tabs, summarize
from analysis.policy.validation import validate_policy
from sim.errors import InputError

# Fields of metav1.ObjectMeta (``metadata:`` is allowed on a Policy and ignored).
_OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields",
})
_POLICY_FIELDS = ("apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields")
_RULE_FIELDS = ("level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs",
                "omitStages", "omitManagedFields")
_GROUP_RESOURCES_FIELDS = ("group", "resources", "resourceNames")

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_MERGE = "tag:yaml.org,2002:merge"


class _Decoder:
    """Walks a composed YAML node tree into the model, tracking lines and strict-decoding findings."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.strict_errors: list[str] = []
        self.lines: dict[str, int] = {}

    # -- errors -------------------------------------------------------------------------------
    def fail(self, node: yaml.Node, path: str, msg: str) -> InputError:
        return InputError(f"{self.source}:{node.start_mark.line + 1}: field {path}: {msg}")

    @staticmethod
    def _kind(node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        return {_STR: "a string", _NULL: "null", _BOOL: "a boolean", "tag:yaml.org,2002:int": "a number",
                "tag:yaml.org,2002:float": "a number"}.get(node.tag, f"a {node.tag.rsplit(':', 1)[-1]}") + \
            f" ({node.value!r})"

    # -- mapping with known fields ------------------------------------------------------------
    def fields(self, node: yaml.Node, path: str, known: tuple[str, ...] | frozenset[str]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, path or "(top level)", f"expected a mapping, got {self._kind(node)}")
        explicit = {id(k) for k, _ in node.value if not (isinstance(k, yaml.ScalarNode) and k.tag == _MERGE)}
        if len(explicit) != len(node.value):
            try:  # YAML merge keys (<<: *anchor), which go-yaml supports; explicit keys win
                yaml.SafeLoader("").flatten_mapping(node)
            except yaml.MarkedYAMLError as e:
                raise self.fail(node, path or "(top level)", f"bad merge key: {e.problem}") from None
        out: dict[str, yaml.Node] = {}
        seen_explicit: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            full = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if key not in known:
                same = [k for k in known if k.lower() == str(key).lower()]
                near = difflib.get_close_matches(str(key), list(known), n=1)
                hint = (f" (did you mean {same[0]!r}? field names are case-sensitive)" if same
                        else f" (did you mean {near[0]!r}?)" if near else "")
                self.strict_errors.append(f"line {line}: unknown field \"{full}\"{hint}, ignored")
                continue
            if id(key_node) in explicit:
                if key in seen_explicit:
                    self.strict_errors.append(f"line {line}: duplicate field \"{full}\" (the last one is used)")
                seen_explicit.add(key)
            out[key] = value_node
            self.lines[full] = line
        return out

    # -- scalars and lists --------------------------------------------------------------------
    def string(self, node: yaml.Node, path: str) -> str:
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return ""
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
            return node.value
        hint = f"; quote it: \"{node.value}\"" if isinstance(node, yaml.ScalarNode) else ""
        raise self.fail(node, path, f"expected a string, got {self._kind(node)}{hint}")

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL:
            return node.value.lower() in ("true", "yes", "on", "y")
        raise self.fail(node, path, f"expected true or false, got {self._kind(node)}")

    def seq(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return []
        if not isinstance(node, yaml.SequenceNode):
            hint = f"; write [\"{node.value}\"]" if isinstance(node, yaml.ScalarNode) else ""
            raise self.fail(node, path, f"expected a list, got {self._kind(node)}{hint}")
        return list(node.value)

    def strings(self, node: yaml.Node, path: str) -> tuple[str, ...]:
        out = []
        for i, item in enumerate(self.seq(node, path)):
            self.lines[f"{path}[{i}]"] = item.start_mark.line + 1
            out.append(self.string(item, f"{path}[{i}]"))
        return tuple(out)

    # -- objects ------------------------------------------------------------------------------
    def group_resources(self, node: yaml.Node, path: str) -> GroupResources:
        f = self.fields(node, path, _GROUP_RESOURCES_FIELDS)
        return GroupResources(
            group=self.string(f["group"], f"{path}.group") if "group" in f else "",
            resources=self.strings(f["resources"], f"{path}.resources") if "resources" in f else (),
            resource_names=self.strings(f["resourceNames"], f"{path}.resourceNames") if "resourceNames" in f else (),
            line=node.start_mark.line + 1,
        )

    def rule(self, node: yaml.Node, path: str) -> Rule:
        f = self.fields(node, path, _RULE_FIELDS)

        def strs(key: str) -> tuple[str, ...]:
            return self.strings(f[key], f"{path}.{key}") if key in f else ()

        resources = ()
        if "resources" in f:
            items = self.seq(f["resources"], f"{path}.resources")
            resources = tuple(self.group_resources(n, f"{path}.resources[{j}]") for j, n in enumerate(items))
        return Rule(
            level=self.string(f["level"], f"{path}.level") if "level" in f else "",
            users=strs("users"), user_groups=strs("userGroups"), verbs=strs("verbs"),
            resources=resources, namespaces=strs("namespaces"), non_resource_urls=strs("nonResourceURLs"),
            omit_stages=strs("omitStages"),
            omit_managed_fields=self.boolean(f["omitManagedFields"], f"{path}.omitManagedFields")
            if "omitManagedFields" in f else None,
            line=node.start_mark.line + 1,
        )

    def policy(self, root: yaml.Node) -> tuple[Policy, dict[str, yaml.Node]]:
        f = self.fields(root, "", _POLICY_FIELDS)
        if "metadata" in f and not (isinstance(f["metadata"], yaml.ScalarNode) and f["metadata"].tag == _NULL):
            self.fields(f["metadata"], "metadata", _OBJECT_META_FIELDS)
        rules = ()
        if "rules" in f:
            rules = tuple(self.rule(n, f"rules[{i}]") for i, n in enumerate(self.seq(f["rules"], "rules")))
        omf = self.boolean(f["omitManagedFields"], "omitManagedFields") if "omitManagedFields" in f else None
        return Policy(
            rules=rules,
            omit_stages=self.strings(f["omitStages"], "omitStages") if "omitStages" in f else (),
            omit_managed_fields=bool(omf),
            source=self.source,
        ), f


def _compose(text: str, source: str) -> tuple[yaml.Node | None, int]:
    """The first YAML document (kube-apiserver's YAML-to-JSON step reads only the first) and how many follow."""
    try:
        docs = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise InputError(f"{where}: not valid YAML: {what}") from None
    docs = [d for d in docs if d is not None]
    return (docs[0] if docs else None), max(0, len(docs) - 1)


def _check_type(dec: _Decoder, f: dict[str, yaml.Node], root: yaml.Node) -> None:
    api = dec.string(f["apiVersion"], "apiVersion") if "apiVersion" in f else ""
    kind = dec.string(f["kind"], "kind") if "kind" in f else ""
    line = root.start_mark.line + 1
    if not api or not kind:
        missing = " and ".join(n for n, v in (("apiVersion", api), ("kind", kind)) if not v)
        raise InputError(f"{dec.source}:{line}: field {missing}: missing; kube-apiserver needs "
                         f"'apiVersion: {API_VERSION}' and 'kind: {KIND}' at the top")
    if api != API_VERSION:
        removed = " (removed in Kubernetes 1.24)" if api in ("audit.k8s.io/v1alpha1", "audit.k8s.io/v1beta1") else ""
        raise InputError(f"{dec.source}:{dec.lines['apiVersion']}: field apiVersion: {api!r} is not "
                         f"supported{removed}; use {API_VERSION}")
    if kind != KIND:
        raise InputError(f"{dec.source}:{dec.lines['kind']}: field kind: {kind!r} is not {KIND!r}; "
                         f"an audit policy file holds one kind: {KIND}")


def _line_for(path: str, lines: dict[str, int], fallback: int) -> int:
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return fallback


def load_policy_text(text: str, source: str = "<policy>", strict: bool = False) -> Policy:
    """Parse and validate policy YAML. ``strict=True`` turns unknown/duplicate fields into errors."""
    if text.startswith("\ufeff"):
        text = text[1:]
    pasted = find_pasted_characters(text)
    if pasted:
        first = pasted[0]
        raise InputError(f"{source}:{first.line}:{first.column}: {summarize(pasted)}")
    root, extra_docs = _compose(spaces_for_allowed_tabs(text), source)
    if root is None:
        raise InputError(f"{source}: the file is empty; expected an {API_VERSION} {KIND} with at least one rule")
    dec = _Decoder(source)
    policy, top = dec.policy(root)
    if dec.strict_errors and strict:
        more = f" (and {len(dec.strict_errors) - 1} more)" if len(dec.strict_errors) > 1 else ""
        raise InputError(f"{source}: {dec.strict_errors[0]}{more} (--strict; kube-apiserver would only log "
                         "this and fall back to lenient decoding)")
    _check_type(dec, top, root)
    errors = validate_policy(policy, dec.lines.get("omitStages", 0))
    if errors:
        e = errors[0]
        line = _line_for(e.path, dec.lines, e.line)
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        raise InputError(f"{source}:{line}: field {e.path}: {e.message}{more}")
    if not policy.rules:
        line = dec.lines.get("rules", root.start_mark.line + 1)
        raise InputError(f"{source}:{line}: field rules: the policy has no rules and kube-apiserver refuses it "
                         "(\"loaded illegal policy with 0 rules\"); add at least one, e.g. '- level: Metadata'")
    warnings = tuple(f"{source}: {w} (kube-apiserver only logs this: it falls back to lenient decoding)"
                     for w in dec.strict_errors)
    if extra_docs:
        warnings += (f"{source}: {extra_docs} more YAML document(s) after the first '---' are ignored, "
                     "as kube-apiserver reads only the first",)
    return Policy(policy.rules, policy.omit_stages, policy.omit_managed_fields, source, warnings)


def load_policy(path: str | os.PathLike[str], strict: bool = False) -> Policy:
    """Read, parse and validate a policy file; every failure is one :class:`InputError` line."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: no such policy file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a folder, expected an audit policy YAML file") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(f"{p}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None
    return load_policy_text(text, str(p), strict=strict)
