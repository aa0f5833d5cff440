"""Rules that can never match: an earlier rule already matches every request they would match.

Because the first matching rule wins (``checker.go``), a later rule B is dead when an earlier
rule A matches a **superset** of B's requests. Deciding that exactly is a set-inclusion problem
over users, groups, verbs, namespaces, (group, resource, subresource, name) and paths; this
module implements a **conservative** check: it reports B only when inclusion can be proven
field by field from A against B alone, so every report is true (no false positives) but some
dead rules are not reported, notably:

* B covered only by the *union* of several earlier rules (e.g. A1 covers reads, A2 writes);
* B that matches nothing on its own (e.g. an impossible user/group combination);
* coverage that depends on a user's name implying a group (``system:node:x`` is in
  ``system:nodes``): names and groups are treated as independent.

Field rules (A covers B when all hold):

* ``users``, ``userGroups``, ``verbs``, ``namespaces``: A's list is empty ("any"), or B's list is
  non-empty and a subset of A's.
* Scope: A with no resource or URL selectors covers everything. A resource rule covers only
  resource rules; a non-resource rule covers only non-resource rules (mixed scopes never match
  the other kind of request).
* ``resources``: A's list empty, or every (group, pattern, resourceNames) of B is covered by a
  single ``GroupResources`` of A: same group or A's group ``"*"``; A lists no resources, or one
  of A's patterns covers B's pattern (``"*"`` covers all; equal patterns; ``"r/*"`` covers ``"r"``
  and ``"r/s"``; ``"*/s"`` covers ``"r/s"``) and A's ``resourceNames`` are empty or a superset of
  B's non-empty ones. A B entry with no resources (a whole group) is only covered by an A entry
  with no resources.
* ``nonResourceURLs``: every URL of B is covered by one URL of A: ``"*"`` covers all; equal URLs;
  ``"/p*"`` covers any URL of B that starts with ``/p`` (exact or wildcard).
"""
from __future__ import annotations

from dataclasses import dataclass

from audit_tune.sim.policy.model import GroupResources, Policy, Rule


@dataclass(frozen=True)
class Shadowed:
    """Rule ``index`` (0-based) is unreachable because rule ``by`` (earlier) covers it."""

    index: int
    by: int


def _list_covers(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return not a or (bool(b) and set(b) <= set(a))


def _pattern_covers(pa: str, pb: str) -> bool:
    if pa == "*" or pa == pb:
        return True
    b_res, _, b_sub = pb.partition("/")
    if "/" in b_sub or b_res in ("", "*") or b_sub == "*" and pa != f"{b_res}/*":
        return False
    if pa.endswith("/*") and pa.count("/") == 1 and pa[:-2] not in ("", "*"):
        return b_res == pa[:-2]
    if pa.startswith("*/") and pa.count("/") == 1 and pa[2:] not in ("", "*"):
        return b_sub == pa[2:]
    return False


def _gr_covers(ga: GroupResources, group: str, pattern: str | None, names: tuple[str, ...]) -> bool:
    """Does ``ga`` match every request that B's (group, pattern, names) atom matches?"""
    if ga.group != "*" and ga.group != group:
        return False
    if not ga.resources:
        return True
    if pattern is None:  # B matches the whole group
        return False
    if ga.resource_names and not (names and set(names) <= set(ga.resource_names)):
        return False
    return any(_pattern_covers(pa, pattern) for pa in ga.resources)


def _resources_cover(a: tuple[GroupResources, ...], b: tuple[GroupResources, ...]) -> bool:
    if not a:
        return True
    if not b:
        return False
    for gb in b:
        atoms = [None] if not gb.resources else list(gb.resources)
        for pattern in atoms:
            if not any(_gr_covers(ga, gb.group, pattern, gb.resource_names) for ga in a):
                return False
    return True


def _url_covers(ua: str, ub: str) -> bool:
    if ua == "*" or ua == ub:
        return True
    if ub == "*" or not ua.endswith("*"):
        return False
    return ub.startswith(ua.rstrip("*"))


def rule_covers(a: Rule, b: Rule) -> bool:
    """Provably: every request that ``b`` matches, ``a`` matches too (conservative)."""
    if not (_list_covers(a.users, b.users) and _list_covers(a.user_groups, b.user_groups)
            and _list_covers(a.verbs, b.verbs)):
        return False
    if a.is_resource_rule:
        if not b.is_resource_rule:
            return False
        return _list_covers(a.namespaces, b.namespaces) and _resources_cover(a.resources, b.resources)
    if a.non_resource_urls:
        if not b.is_non_resource_rule:
            return False
        return all(any(_url_covers(ua, ub) for ua in a.non_resource_urls) for ub in b.non_resource_urls)
    return True


def shadowed_rules(policy: Policy) -> list[Shadowed]:
    """Each rule that an earlier single rule provably covers, with the first such earlier rule."""
    out = []
    for j, b in enumerate(policy.rules):
        for i in range(j):
            if rule_covers(policy.rules[i], b):
                out.append(Shadowed(j, i))
                break
    return out
