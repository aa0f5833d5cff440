"""The ``audit.k8s.io/v1`` Policy object, as plain frozen dataclasses.

Mirrors ``staging/src/k8s.io/apiserver/pkg/apis/audit/v1/types.go`` (``Policy``, ``PolicyRule``,
``GroupResources``, ``Level``, ``Stage``):

* A ``Policy`` is an ordered list of rules plus policy-wide ``omitStages`` and
  ``omitManagedFields`` (a plain bool: absent means false).
* A ``PolicyRule`` has a required ``level``; every selector list (``users``, ``userGroups``,
  ``verbs``, ``resources``, ``namespaces``, ``nonResourceURLs``) is optional and an empty or
  absent list means "any". ``omitManagedFields`` is a *pointer* upstream: ``None`` means "use
  the policy default", which is why it is ``bool | None`` here.
* ``GroupResources.group`` is the API group without version (``""`` is the core group; since
  Kubernetes 1.36 ``"*"`` means any group).

Each object also remembers the YAML line it came from (``line``), so errors and ``tune policy
explain`` can point at the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

LEVEL_NONE = "None"
LEVEL_METADATA = "Metadata"
LEVEL_REQUEST = "Request"
LEVEL_REQUEST_RESPONSE = "RequestResponse"
#: Valid levels, in increasing verbosity (``validation.go`` ``validLevels``).
LEVELS: tuple[str, ...] = (LEVEL_NONE, LEVEL_METADATA, LEVEL_REQUEST, LEVEL_REQUEST_RESPONSE)

STAGE_REQUEST_RECEIVED = "RequestReceived"
STAGE_RESPONSE_STARTED = "ResponseStarted"
STAGE_RESPONSE_COMPLETE = "ResponseComplete"
STAGE_PANIC = "Panic"
#: Valid stages, in the order a request goes through them (``validation.go`` ``validOmitStages``).
STAGES: tuple[str, ...] = (STAGE_REQUEST_RECEIVED, STAGE_RESPONSE_STARTED, STAGE_RESPONSE_COMPLETE, STAGE_PANIC)

API_VERSION = "audit.k8s.io/v1"
KIND = "Policy"


@dataclass(frozen=True)
class GroupResources:
    """One ``resources:`` entry: an API group, resource patterns in it, optional object names."""

    group: str = ""
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class Rule:
    """One ``PolicyRule``. Empty selector tuples mean "any"."""

    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool | None = None
    line: int = 0

    @property
    def is_resource_rule(self) -> bool:
        """Matches only resource requests (``checker.go``: namespaces or resources set)."""
        return bool(self.namespaces or self.resources)

    @property
    def is_non_resource_rule(self) -> bool:
        """Matches only non-resource requests (nonResourceURLs set, no resource selectors)."""
        return bool(self.non_resource_urls) and not self.is_resource_rule


@dataclass(frozen=True)
class Policy:
    """A loaded, validated policy. ``warnings`` holds what kube-apiserver would only log."""

    rules: tuple[Rule, ...]
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool = False
    source: str = "<policy>"
    warnings: tuple[str, ...] = field(default=(), compare=False)
