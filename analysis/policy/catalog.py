"""Common request classes: who calls the apiserver, and with which verb on which resource.

Used by ``tune policy explain`` to show what a policy does to everyday traffic. The user kinds
carry the user name and groups kube-apiserver's authenticators produce:

* a ``kubectl`` user from a client certificate or OIDC: a name plus ``system:authenticated``;
* a service account: ``system:serviceaccount:NS:NAME`` in ``system:serviceaccounts``,
  ``system:serviceaccounts:NS`` and ``system:authenticated``;
* a kubelet: ``system:node:NAME`` in ``system:nodes``;
* ``system:kube-controller-manager`` and ``system:kube-proxy`` (their certificates carry no group);
* the apiserver's loopback client: ``system:apiserver`` in ``system:masters``;
* anonymous: ``system:anonymous`` in ``system:unauthenticated``.

Every authenticated identity also gets ``system:authenticated`` (the authenticated-group adder).
"""
from __future__ import annotations

from typing import NamedTuple

from audit_tune.sim.policy.matcher import RequestAttributes


class UserKind(NamedTuple):
    key: str
    user: str
    groups: tuple[str, ...]


USER_KINDS: tuple[UserKind, ...] = (
    UserKind("kubectl-user", "alice@example.com", ("developers", "system:authenticated")),
    UserKind("serviceaccount", "system:serviceaccount:default:app",
             ("system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated")),
    UserKind("node", "system:node:worker-1", ("system:nodes", "system:authenticated")),
    UserKind("controller-manager", "system:kube-controller-manager", ("system:authenticated",)),
    UserKind("kube-proxy", "system:kube-proxy", ("system:authenticated",)),
    UserKind("apiserver-loopback", "system:apiserver", ("system:masters", "system:authenticated")),
    UserKind("anonymous", "system:anonymous", ("system:unauthenticated",)),
)


class RequestClass(NamedTuple):
    """One kind of request, independent of who sends it. ``path`` set means non-resource."""

    verb: str
    resource: str = ""
    subresource: str = ""
    api_group: str = ""
    namespace: str = ""
    path: str = ""

    @property
    def label(self) -> str:
        if self.path:
            return self.path
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{res}.{self.api_group}" if self.api_group else res

    def attributes(self, who: UserKind) -> RequestAttributes:
        if self.path:
            return RequestAttributes(user=who.user, groups=who.groups, verb=self.verb, path=self.path,
                                     is_resource_request=False)
        ns_part = f"/namespaces/{self.namespace}" if self.namespace else ""
        prefix = f"/apis/{self.api_group}/v1" if self.api_group else "/api/v1"
        sub = f"/{self.subresource}" if self.subresource else ""
        name = "example" if (self.subresource or self.verb in ("get", "update", "patch", "delete")) else ""
        path = f"{prefix}{ns_part}/{self.resource}" + (f"/{name}{sub}" if name else "")
        return RequestAttributes(user=who.user, groups=who.groups, verb=self.verb, namespace=self.namespace,
                                 resource=self.resource, subresource=self.subresource, api_group=self.api_group,
                                 name=name, path=path, is_resource_request=True)


def _many(verbs: str, **kw: str) -> list[RequestClass]:
    return [RequestClass(verb=v, **kw) for v in verbs.split()]


REQUEST_CLASSES: tuple[RequestClass, ...] = tuple(
    _many("get list watch create patch delete", resource="pods", namespace="default")
    + _many("patch", resource="pods", subresource="status", namespace="default")
    + _many("get", resource="pods", subresource="log", namespace="default")
    + _many("create", resource="pods", subresource="exec", namespace="default")
    + _many("get list watch update", resource="configmaps", namespace="default")
    + _many("update", resource="configmaps", namespace="kube-system")
    + _many("get list watch", resource="secrets", namespace="default")
    + _many("create patch", resource="events", namespace="default")
    + _many("get update", resource="leases", api_group="coordination.k8s.io", namespace="kube-system")
    + _many("update", resource="leases", api_group="coordination.k8s.io", namespace="kube-node-lease")
    + _many("watch", resource="endpoints", namespace="default")
    + _many("get list watch", resource="nodes")
    + _many("patch", resource="nodes", subresource="status")
    + _many("create", resource="tokenreviews", api_group="authentication.k8s.io")
    + _many("get", path="/healthz")
    + _many("get", path="/metrics")
    + _many("get", path="/api")
)
