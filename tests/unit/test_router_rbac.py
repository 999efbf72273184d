"""The router's RBAC and a claim's check of membership are designed together (docs/gateway.md "Warm pools"): the
router serves the sandboxes' untrusted traffic, so it may patch Sandboxes (resume, activity), and a claim therefore
trusts nothing a Sandbox carries. It trusts a member's init Secret, its Pod and its SandboxPool
(`kubehands.api.pools.claims.forgery`), on which the chart's router may do nothing at all, whatever the values."""

from typing import Any

import pytest

from tests.unit import test_chart
from tests.unit.test_chart import render

pytestmark = pytest.mark.unit
helm = test_chart.helm  # test_chart.py's session fixture: the pinned helm

# What a claim reads to decide that a Sandbox is a genuine pool member, as (API group, resource).
CLAIM_TRUSTS = {("", "secrets"), ("", "pods"), ("kubehands.dev", "sandboxpools")}
RBAC_KINDS = {"Role", "ClusterRole"}
BINDING_KINDS = {"RoleBinding", "ClusterRoleBinding"}

VALUE_SETS = {
    "router": ["--set", "router.enabled=true"],
    "router, cluster-wide operator": ["--set", "router.enabled=true,operator.clusterWide=true"],
    "router, subdomain mode": ["--set", "router.enabled=true,routing.mode=subdomain,routing.domain=sbx.example.com"],
    "router, keys managed by the gateway": ["--set", "router.enabled=true,api.rbac.manageKeys=true"],
}


def router_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule of every Role and ClusterRole bound to the router's ServiceAccount."""
    accounts = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    [account] = [name for name in accounts if name.endswith("router")]
    bound = {
        (b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace"))
        for b in docs
        if b["kind"] in BINDING_KINDS
        and any(s.get("kind") == "ServiceAccount" and s["name"] == account for s in b.get("subjects") or [])
    }
    assert bound, "the router's ServiceAccount is bound to no role"
    rules = []
    for kind, name, namespace in bound:
        [role] = [
            d
            for d in docs
            if d["kind"] == kind
            and d["metadata"]["name"] == name
            and (kind == "ClusterRole" or d["metadata"].get("namespace") == namespace)
        ]
        rules += role.get("rules") or []
    return rules


@pytest.mark.parametrize("sets", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_router_may_not_touch_what_a_claim_trusts(helm: str, sets: list[str]) -> None:
    rules = router_rules(render(helm, None, test_chart.KUBE_CURRENT, *sets))
    for rule in rules:
        groups, resources, verbs = rule.get("apiGroups") or [], rule.get("resources") or [], rule.get("verbs") or []
        assert "*" not in groups and "*" not in resources and "*" not in verbs, rule
        assert not rule.get("nonResourceURLs"), rule
        for group in groups:
            for resource in resources:
                base = resource.split("/")[0]  # pods/exec, pods/status, secrets/... are the same objects
                assert (group, base) not in CLAIM_TRUSTS, f"the router may {verbs} {resource}: {rule}"
                assert group != "rbac.authorization.k8s.io", rule  # no way to grant itself more
    # what it keeps: reading and patching Sandboxes (resume, activity), nothing that a claim relies on
    sandboxes = [r for r in rules if "sandboxes" in r.get("resources", [])]
    assert sandboxes and all("create" not in r["verbs"] and "delete" not in r["verbs"] for r in sandboxes)
