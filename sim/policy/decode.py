"""Turn a composed YAML node tree into the policy model, the way the apiserver's decoders do.

Mirrors the JSON decoding kube-apiserver applies after converting YAML to JSON (sigs.k8s.io/yaml,
then sigs.k8s.io/json into ``apis/audit/v1`` types):

* field names are case-sensitive; a field not in ``types.go`` is a *strict-decoding finding*
  (recorded in ``strict_errors``) and is skipped, as the lenient decoder drops it;
* a duplicated field is a strict-decoding finding too, and the last value is used;
* YAML merge keys (``<<: *anchor``) are expanded, explicit keys winning, as go-yaml does;
* wrong types are fatal, as ``json.Unmarshal`` fails: a string where a list belongs, a number or
  boolean where a string belongs; ``null`` means "absent" (empty string, empty list).

Every field read records its YAML line in ``lines`` (keyed by upstream-style path such as
``rules[2].omitStages[0]``) so validation errors can point at the file.
"""
from __future__ import annotations

import difflib

import yaml

from audit_tune.basics.errors import InputError
from audit_tune.sim.policy.model import GroupResources, Policy, Rule

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


class Decoder:
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
