"""Builders: one exact-dict test for the minimal Sandbox, then one focused test per feature."""

from typing import Any

import pytest

from kubehands.crd.model import Sandbox
from kubehands.operator import builders
from kubehands.operator.config import OperatorConfig

pytestmark = pytest.mark.unit
UID = "0a1b2c3d-0000-4000-8000-000000000000"


def make_sandbox(**spec: Any) -> Sandbox:
    return Sandbox.model_validate(
        {
            "apiVersion": "kubehands.dev/v1alpha1",
            "kind": "Sandbox",
            "metadata": {
                "name": "kh-abc",
                "namespace": "tenant",
                "uid": UID,
                "generation": 1,
                "labels": {
                    "kubehands.dev/owner": "team-a",
                    "kubehands.dev/session": "f" * 32,
                    "other": "not-copied",
                },
            },
            "spec": {"image": "agent:1", "sessionKeySecretRef": {"name": "kh-abc-session"}, **spec},
        }
    )


def config(**values: Any) -> OperatorConfig:
    return OperatorConfig(**values)


OWNER = {
    "apiVersion": "kubehands.dev/v1alpha1",
    "kind": "Sandbox",
    "name": "kh-abc",
    "uid": UID,
    "controller": True,
    "blockOwnerDeletion": True,
}


def labels(component: str) -> dict[str, str]:
    return {
        "kubehands.dev/owner": "team-a",
        "kubehands.dev/session": "f" * 32,
        "app.kubernetes.io/part-of": "kubehands",
        "app.kubernetes.io/managed-by": "kubehands-operator",
        "app.kubernetes.io/component": component,
        "kubehands.dev/sandbox": "kh-abc",
    }


def test_minimal_pod() -> None:
    sandbox = make_sandbox()
    key = {"secretKeyRef": {"name": "kh-abc-session", "key": "session-api-key"}}
    assert builders.build_pod(sandbox, config()) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "kh-abc",
            "namespace": "tenant",
            "labels": labels("sandbox"),
            "annotations": {
                "kubehands.dev/sandbox-name": "kh-abc",
                "kubehands.dev/spec-hash": builders.pod_spec_hash(sandbox.spec),
            },
            "ownerReferences": [OWNER],
        },
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "securityContext": {
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "sandbox",
                    "image": "agent:1",
                    "env": [
                        {"name": "OH_SESSION_API_KEYS_0", "valueFrom": key},
                        {"name": "SESSION_API_KEY", "valueFrom": key},
                        {"name": "OH_SECRET_KEY", "valueFrom": key},
                        {"name": "RUNTIME_ID", "value": "kh-abc"},
                        {"name": "VSCODE_PORT", "value": "60001"},
                        {"name": "OH_VSCODE_PORT", "value": "60001"},
                        {"name": "WORKER_1", "value": "12000"},
                        {"name": "WORKER_2", "value": "12001"},
                        {"name": "LITELLM_LOCAL_MODEL_COST_MAP", "value": "True"},
                    ],
                    "ports": [
                        {"name": "agent", "containerPort": 60000, "protocol": "TCP"},
                        {"name": "vscode", "containerPort": 60001, "protocol": "TCP"},
                        {"name": "work-1", "containerPort": 12000, "protocol": "TCP"},
                        {"name": "work-2", "containerPort": 12001, "protocol": "TCP"},
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": "/alive", "port": "agent"},
                        "periodSeconds": 1,
                        "timeoutSeconds": 1,
                        "successThreshold": 1,
                        "failureThreshold": 3,
                    },
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
                }
            ],
            "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": "kh-abc-workspace"}}],
        },
    }


def test_minimal_pvc() -> None:
    assert builders.build_pvc(make_sandbox()) == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "kh-abc-workspace",
            "namespace": "tenant",
            "labels": labels("workspace"),
            "annotations": {"kubehands.dev/sandbox-name": "kh-abc"},
            "ownerReferences": [OWNER],
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
    }


def test_pvc_storage_class_and_size() -> None:
    pvc = builders.build_pvc(make_sandbox(workspace={"size": "1Gi", "storageClassName": "fast"}))
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pvc["spec"]["resources"] == {"requests": {"storage": "1Gi"}}


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def test_command_replaces_entrypoint_and_working_dir() -> None:
    container = _container(
        builders.build_pod(make_sandbox(command=["/bin/server", "--port", "60000"], workingDir="/"), config())
    )
    assert container["command"] == ["/bin/server", "--port", "60000"]
    assert "args" not in container
    assert container["workingDir"] == "/"


def test_user_env_follows_managed_env_and_cannot_override_it() -> None:
    sandbox = make_sandbox(
        env=[
            {"name": "SESSION_API_KEY", "value": "stolen"},
            {"name": "LLM_MODEL", "value": "m"},
            {"name": "WORKER_1", "value": "1"},
        ]
    )
    env = _container(builders.build_pod(sandbox, config()))["env"]
    assert env[-1] == {"name": "LLM_MODEL", "value": "m"}
    assert [e["name"] for e in env].count("SESSION_API_KEY") == 1
    assert {"name": "WORKER_1", "value": "12000"} in env


def test_the_secret_key_comes_from_the_session_secret_and_cannot_be_overridden() -> None:
    """The agent server defaults OH_SECRET_KEY to the first session key: same value, and a pool member's init
    key (which must equal it) is never in the pod spec."""
    sandbox = make_sandbox(env=[{"name": "OH_SECRET_KEY", "value": "chosen"}])
    env = _container(builders.build_pod(sandbox, config()))["env"]
    assert [e for e in env if e["name"] == "OH_SECRET_KEY"] == [
        {"name": "OH_SECRET_KEY", "valueFrom": {"secretKeyRef": {"name": "kh-abc-session", "key": "session-api-key"}}}
    ]


def test_custom_secret_key() -> None:
    env = _container(
        builders.build_pod(make_sandbox(sessionKeySecretRef={"name": "s", "key": "k"}), config())
    )["env"]
    assert env[0] == {
        "name": "OH_SESSION_API_KEYS_0",
        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
    }


def test_security_context_from_spec() -> None:
    pod = builders.build_pod(make_sandbox(securityContext={"runAsUser": 1000, "fsGroup": 42}), config())
    assert pod["spec"]["securityContext"] == {
        "runAsUser": 1000,
        "runAsGroup": 10001,
        "fsGroup": 42,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert _container(pod)["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_pod_says_run_as_non_root_even_if_an_id_0_slipped_through() -> None:
    """The CRD and the settings refuse 0; should a 0 still get here, the kubelet refuses to start the
    container rather than run it as root."""
    unchecked = OperatorConfig.model_construct(**{**config().model_dump(), "run_as_user": 0})
    assert builders.build_pod(make_sandbox(), unchecked)["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize(
    ("requested", "expected"), [("gvisor", "gvisor"), ("sysbox-runc", None), ("kata", None), (None, None)]
)
def test_runtime_class_goes_through_the_map(requested: str | None, expected: str | None) -> None:
    cfg = config(runtime_class_map={"sysbox-runc": "", "gvisor": "gvisor"})
    pod = builders.build_pod(make_sandbox(runtimeClassName=requested), cfg)
    assert pod["spec"].get("runtimeClassName") == expected


@pytest.mark.parametrize(
    ("requested", "expected"), [(None, "gvisor"), ("", "gvisor"), ("kata", "kata-qemu"), ("sysbox-runc", None)]
)
def test_default_runtime_class_when_the_sandbox_names_none(requested: str | None, expected: str | None) -> None:
    cfg = config(
        runtime_class_map={"sysbox-runc": "", "gvisor": "gvisor", "kata": "kata-qemu"},
        default_runtime_class="gvisor",
    )
    pod = builders.build_pod(make_sandbox(runtimeClassName=requested), cfg)
    assert pod["spec"].get("runtimeClassName") == expected


def test_resources_from_spec_replace_the_base() -> None:
    sandbox = make_sandbox(resources={"requests": {"cpu": "10m"}})
    assert _container(builders.build_pod(sandbox, config()))["resources"] == {"requests": {"cpu": "10m"}}


def test_base_resources_come_from_config() -> None:
    cfg = config(base_resources={"requests": {"memory": "64Mi"}, "limits": {}})
    assert _container(builders.build_pod(make_sandbox(), cfg))["resources"] == {
        "requests": {"memory": "64Mi"}
    }


def test_image_pull_policy_and_scheduling() -> None:
    pod = builders.build_pod(
        make_sandbox(
            imagePullPolicy="Never",
            nodeSelector={"pool": "sandboxes"},
            tolerations=[{"key": "dedicated", "operator": "Exists"}],
        ),
        config(),
    )
    assert _container(pod)["imagePullPolicy"] == "Never"
    assert pod["spec"]["nodeSelector"] == {"pool": "sandboxes"}
    assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]


def test_operator_placement_defaults_merge_under_the_sandbox_own() -> None:
    operator_defaults = config(
        node_selector={"pool": "sandboxes", "zone": "a"},
        tolerations=[{"key": "sandboxes-only", "operator": "Exists", "effect": "NoSchedule"}],
    )
    pod = builders.build_pod(
        make_sandbox(nodeSelector={"zone": "b"}, tolerations=[{"key": "gpu", "operator": "Exists"}]),
        operator_defaults,
    )
    assert pod["spec"]["nodeSelector"] == {"pool": "sandboxes", "zone": "b"}
    assert pod["spec"]["tolerations"] == [
        {"key": "sandboxes-only", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "gpu", "operator": "Exists"},
    ]


def test_extra_volumes() -> None:
    sandbox = make_sandbox(
        workspace={"mountPath": "/ws"},
        volumes=[
            {
                "name": "data",
                "mountPath": "/data",
                "readOnly": True,
                "persistentVolumeClaim": {"claimName": "shared"},
            },
            {"name": "cfg", "mountPath": "/etc/cfg", "configMap": {"name": "cm"}},
            {"name": "sec", "mountPath": "/etc/sec", "secret": {"secretName": "sc"}},
            {"name": "host", "mountPath": "/host", "hostPath": {"path": "/srv"}},
        ],
    )
    pod = builders.build_pod(sandbox, config())
    assert pod["spec"]["volumes"][1:] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "shared", "readOnly": True}},
        {"name": "cfg", "configMap": {"name": "cm"}},
        {"name": "sec", "secret": {"secretName": "sc"}},
        {"name": "host", "hostPath": {"path": "/srv"}},
    ]
    assert _container(pod)["volumeMounts"] == [
        {"name": "workspace", "mountPath": "/ws"},
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": False},
        {"name": "sec", "mountPath": "/etc/sec", "readOnly": False},
        {"name": "host", "mountPath": "/host", "readOnly": False},
    ]


def test_workspace_chown_init_container() -> None:
    pod = builders.build_pod(make_sandbox(imagePullPolicy="Never"), config(workspace_chown=True))
    [init] = pod["spec"]["initContainers"]
    assert init["command"] == ["chown", "10001:10001", "/workspace"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    # The one root process, explicitly, overriding the pod's runAsNonRoot for this container only.
    assert (init["securityContext"]["runAsUser"], init["securityContext"]["runAsNonRoot"]) == (0, False)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "runAsUser" not in _container(pod)["securityContext"]
    assert init["imagePullPolicy"] == "Never"
    assert init["resources"] == _container(pod)["resources"]


def test_spec_hash_ignores_fields_that_do_not_shape_the_pod() -> None:
    base = builders.pod_spec_hash(make_sandbox().spec)
    unshaping = make_sandbox(state="Paused", idleTimeoutSeconds=5, maxLifetimeSeconds=60, sessionID="x")
    assert builders.pod_spec_hash(unshaping.spec) == base
    assert builders.pod_spec_hash(make_sandbox(image="agent:2").spec) != base
    assert builders.pod_spec_hash(make_sandbox(workspace={"mountPath": "/w"}).spec) != base


# Today's hashes of two fixed specs. Every running pod carries its hash: if these change, an operator upgrade
# replaces every running pod. Change them only together with a deliberate migration.
PINNED_HASHES = [
    ({}, "111eccdeb8a7f466"),
    (
        {
            "image": "agent:2",
            "env": [{"name": "A", "value": "b"}],
            "runtimeClassName": "gvisor",
            "securityContext": {"runAsUser": 1000},
            "workspace": {"mountPath": "/w", "size": "1Gi"},
            "nodeSelector": {"a": "b"},
            "command": ["x"],
        },
        "9eb1e6456d81dbab",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), PINNED_HASHES)
def test_spec_hash_without_a_restart_is_what_it_always_was(spec: dict[str, Any], expected: str) -> None:
    sandbox = make_sandbox(**spec)
    assert builders.pod_spec_hash(sandbox.spec) == expected
    assert builders.sandbox_pod_hash(sandbox) == expected
    assert builders.build_pod(sandbox, config())["metadata"]["annotations"]["kubehands.dev/spec-hash"] == expected


def test_a_restart_request_changes_the_spec_hash() -> None:
    """The gateway restarts a session in error with `restarted-at`: the pod is replaced, the claim kept."""
    first = make_sandbox()
    first.metadata["annotations"] = {"kubehands.dev/restarted-at": "2026-01-02T03:04:05Z"}
    again = make_sandbox()
    again.metadata["annotations"] = {"kubehands.dev/restarted-at": "2026-01-02T04:00:00Z"}
    hashes = {builders.sandbox_pod_hash(s) for s in (make_sandbox(), first, again)}
    assert len(hashes) == 3
    pod = builders.build_pod(first, config())
    assert pod["metadata"]["annotations"]["kubehands.dev/spec-hash"] == builders.sandbox_pod_hash(first)
    assert builders.build_pvc(first) == builders.build_pvc(make_sandbox())


def test_an_event_about_a_sandbox_names_it_and_outlives_it() -> None:
    from datetime import UTC, datetime

    body = {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": {"name": "kh-a", "namespace": "ns", "uid": "u-1", "resourceVersion": "42"},
    }
    event = builders.build_event(body, "Normal", "MaxLifetimeExceeded", "deleted", datetime(2026, 1, 2, tzinfo=UTC))
    assert event["metadata"] == {"generateName": "kh-a.", "namespace": "ns"}
    assert event["involvedObject"] == {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "Sandbox",
        "name": "kh-a",
        "namespace": "ns",
        "uid": "u-1",
        "resourceVersion": "42",
    }
    assert (event["type"], event["reason"], event["message"], event["count"]) == (
        "Normal",
        "MaxLifetimeExceeded",
        "deleted",
        1,
    )
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-01-02T00:00:00Z"
    assert event["source"] == {"component": "kubehands-operator"}
