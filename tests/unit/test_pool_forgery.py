"""A claim takes only genuine pool members (`claims.forgery`): the members the operator's own builders make pass;
a Sandbox that carries a pool's label because someone who may patch Sandboxes (the router) put it there does not,
nor does anything else a Sandbox patch can forge (its status' pod, its owner references)."""

import copy
from collections.abc import Callable
from typing import Any

import pytest

from kubehands.api.pools import claims
from kubehands.crd.model import Sandbox
from kubehands.crd.pool_model import SandboxPool
from kubehands.operator.builders import build_pod
from kubehands.operator.config import OperatorConfig
from kubehands.operator.pools import build_member, template_hash

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
MEMBER = "kh-member000001"
VICTIM = "kh-victim000001"
POOL = SandboxPool.model_validate(
    {
        "metadata": {"name": "warm", "namespace": "ns", "uid": "uid-pool"},
        "spec": {"size": 1, "template": {"image": "agent:1", "workingDir": "/workspace"}},
    }
)
POOL_OBJECT = {"metadata": {"name": "warm", "namespace": "ns", "uid": "uid-pool"}}


def as_stored(obj: Obj, uid: str) -> Obj:
    """An object as the API server returns it: with its uid (and a Secret's stringData as data)."""
    stored = copy.deepcopy(obj)
    stored["metadata"]["uid"] = uid
    if "stringData" in stored:
        stored["data"] = stored.pop("stringData")
    return stored


def running_pod(sandbox: Obj) -> Obj:
    """The operator's pod of `sandbox` (its real builder), as the API server reports it once it runs."""
    built = build_pod(Sandbox.model_validate(sandbox), OperatorConfig())
    pod = as_stored(built, f"uid-pod-{sandbox['metadata']['name']}")
    pod["status"] = {"phase": "Running", "podIP": "10.88.0.7"}
    return pod


def genuine() -> tuple[Obj, Obj, Obj]:
    """(member Sandbox, its init Secret, its dormant pod) as the operator makes them (`build_member`, `build_pod`)."""
    secret, sandbox = build_member(POOL, MEMBER, template_hash(POOL), "init-key")
    member = as_stored(sandbox, "uid-member")
    pod = running_pod(member)
    member["status"] = {"podUID": pod["metadata"]["uid"], "podIP": "10.88.0.7"}
    return member, as_stored(secret, "uid-secret"), pod


def relabelled_victim() -> tuple[Obj, Obj | None, Obj]:
    """Another tenant's session sandbox, relabelled and given the pool as owner by a Sandbox patch."""
    victim: Obj = {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": {"name": VICTIM, "namespace": "ns", "uid": "uid-victim", "labels": {"kubehands.dev/owner": "b"}},
        "spec": {"image": "agent:1", "sessionKeySecretRef": {"name": "kh-session-b", "key": "session-api-key"}},
    }
    pod = running_pod(victim)
    member, _, _ = genuine()
    victim["metadata"]["labels"] = member["metadata"]["labels"]
    victim["metadata"]["ownerReferences"] = member["metadata"]["ownerReferences"]
    victim["status"] = {"podUID": pod["metadata"]["uid"], "podIP": "10.88.0.9"}
    return victim, None, pod


def test_the_operators_member_is_genuine() -> None:
    assert claims.forgery(*_with_pool(genuine())) is None


def _with_pool(objects: tuple[Obj, Obj | None, Obj | None]) -> tuple[Obj, Obj, Obj | None, Obj | None]:
    member, secret, pod = objects
    return member, POOL_OBJECT, secret, pod


def _changed(path: str, value: Any) -> Callable[[Obj], None]:
    def change(obj: Obj) -> None:
        *parents, last = path.split(".")
        for part in parents:
            obj = obj[int(part)] if isinstance(obj, list) else obj[part]
        obj[last] = value  # type: ignore[index]

    return change


# (case, which object (0 member, 1 secret, 2 pod), how it differs from the genuine one, the reason's words)
FORGED: list[tuple[str, int, Callable[[Obj], None], str]] = [
    ("the status names another pod (a status patch)", 0, _changed("status.podUID", "uid-pod-other"), "not the one"),
    ("the init Secret was made for another member", 1,
     _changed("metadata.annotations", {"kubehands.dev/sandbox-name": "kh-x"}), "not made for it"),
    ("the init Secret is another pool's", 1,
     _changed("metadata.ownerReferences.0.uid", "uid-other-pool"), "not made for it"),
    ("the init Secret names another pool", 1,
     _changed("metadata.labels", {"kubehands.dev/pool": "other"}), "not made for it"),
    ("the pod is another Sandbox's", 2, _changed("metadata.ownerReferences.0.uid", "uid-victim"), "not its own"),
    ("the pod is being deleted", 2, _changed("metadata.deletionTimestamp", "2026-01-01T00:00:00Z"), "being deleted"),
    ("the pod has no IP yet", 2, _changed("status", {"phase": "Pending"}), "no IP"),
]  # fmt: skip


@pytest.mark.parametrize(("which", "change", "words"), [c[1:] for c in FORGED], ids=[c[0] for c in FORGED])
def test_what_a_forger_may_not_change(which: int, change: Callable[[Obj], None], words: str) -> None:
    objects = list(genuine())
    change(objects[which])
    problem = claims.forgery(objects[0], POOL_OBJECT, objects[1], objects[2])
    assert problem is not None and words in problem, problem


def test_a_relabelled_session_sandbox_is_refused() -> None:
    victim, secret, pod = relabelled_victim()
    assert victim["metadata"]["labels"]["kubehands.dev/pool"] == "warm"  # a member, to whoever reads its labels
    problem = claims.forgery(victim, POOL_OBJECT, secret, pod)
    assert problem == f"it has no init Secret {VICTIM}-init"


def test_a_session_pod_with_a_forged_init_secret_name_is_refused() -> None:
    # even with a Secret of that name (made by someone who may write Secrets), the victim's pod booted as a
    # session's: not dormant, and its key from the session's Secret
    victim, _, pod = relabelled_victim()
    secret, _ = build_member(POOL, VICTIM, template_hash(POOL), "forged")
    problem = claims.forgery(victim, POOL_OBJECT, as_stored(secret, "uid-forged"), pod)
    assert problem == "its pod was not booted dormant"


def test_a_claimed_member_whose_init_secret_is_gone_is_refused() -> None:
    member, _, pod = genuine()
    assert claims.forgery(member, POOL_OBJECT, None, pod) == f"it has no init Secret {MEMBER}-init"


def test_a_pod_whose_key_comes_from_another_secret_is_refused() -> None:
    member, secret, pod = genuine()
    for entry in pod["spec"]["containers"][0]["env"]:
        if "valueFrom" in entry:
            entry["valueFrom"]["secretKeyRef"]["name"] = "kh-session-b"
    problem = claims.forgery(member, POOL_OBJECT, secret, pod)
    assert problem == "its pod's session key does not come from its init Secret"


def test_a_missing_pod_is_refused() -> None:
    member, secret, _ = genuine()
    assert claims.forgery(member, POOL_OBJECT, secret, None) == "its pod does not exist"
