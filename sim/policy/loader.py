"""Load an ``audit.k8s.io/v1`` Policy file the way kube-apiserver's ``--audit-policy-file`` does.

Mirrors ``staging/src/k8s.io/apiserver/pkg/audit/policy/reader.go`` (``LoadPolicyFromBytes``) at
the 1.37 development snapshot, identical since 1.26 apart from dropping ``ioutil``:

1. Decode strictly (:mod:`analysis.policy.decode`). Since Kubernetes 1.26 a *strict-decoding*
   error (an unknown field, including a wrongly-cased one such as ``Level``, or a duplicated
   field) is **not** fatal: kube-apiserver logs ``Audit policy contains errors, falling back to
   lenient decoding`` and decodes again, dropping unknown fields (the last duplicate wins). We do
   the same by default and return those messages in ``Policy.warnings``; ``strict=True`` makes
   them errors (what a careful user wants, and what 1.24/1.25 did). Any other decoding error
   (bad YAML, a string where a list belongs, a number where a string belongs) is fatal. Only the
   first YAML document is read (a warning says so if there are more).
2. ``apiVersion`` must be ``audit.k8s.io/v1`` (v1alpha1/v1beta1 were removed in 1.24) and ``kind``
   must be ``Policy``.
3. ``validation.ValidatePolicy`` (see :mod:`analysis.policy.validation`).
4. A policy with 0 rules is refused ("loaded illegal policy with 0 rules").

Before any of that, text pasted from a web page (typographic quotes, en/em dash list markers,
non-breaking spaces, tabs where go-yaml rejects them) is reported precisely (:mod:`analysis.policy.typography`).

Every error is one :class:`sim.errors.InputError` line: ``FILE:LINE: field PATH: what is wrong;
what would be valid``. Field paths are written as upstream writes them (``rules[3].level``).
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from audit_tune.basics import files, yamlsafe
from audit_tune.basics.errors import InputError
from audit_tune.sim.policy.decode import Decoder
from audit_tune.sim.policy.model import API_VERSION, KIND, Policy
from audit_tune.sim.policy.typography import find_pasted_characters, spaces_for_allowed_tabs, summarize
from audit_tune.sim.policy.validation import validate_policy


def _compose(text: str, source: str) -> tuple[yaml.Node | None, int]:
    """The first YAML document (kube-apiserver's YAML-to-JSON step reads only the first) and how many follow."""
    try:
        docs = yamlsafe.compose_all(text, source, yaml_errors=True)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise InputError(f"{where}: not valid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise InputError(f"{source}: not valid YAML: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    docs = [d for d in docs if d is not None]
    return (docs[0] if docs else None), max(0, len(docs) - 1)


def _check_type(dec: Decoder, f: dict[str, yaml.Node], root: yaml.Node) -> None:
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
    dec = Decoder(source)
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
    if not p.exists():
        raise InputError(f"{p}: no such policy file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected an audit policy YAML file")
    raw = files.read_bytes(p, "policy file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(f"{p}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None
    return load_policy_text(text, str(p), strict=strict)
