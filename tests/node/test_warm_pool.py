"""Warm pools end to end on the local cluster: the operator keeps dormant agent servers, and the gateway's
/start claims one and hands it the session through POST /api/init (docs/gateway.md "Warm pools").

The pool's template is what the gateway itself derives for a plain /start of the agent-server image with the
gateway's settings (`objects.build_sandbox`), so it matches such a /start by construction."""

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from kubehands.api.keys import KeyRecord
from kubehands.api.settings import Settings
from kubehands.crd import constants
from kubehands.kube import SANDBOX_POOLS, SANDBOXES
from kubehands.spec import objects, pools
from kubehands.spec.request import StartRequest
from tests.helpers.kube import api_client
from tests.helpers.metrics import sample
from tests.helpers.processes import GatewayProcess, OperatorProcess, free_port
from tests.helpers.wait import wait_for
from tests.node.test_chaos import create_key

pytestmark = pytest.mark.node

RESOURCES = '{"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}'
GATEWAY_ENV = {"KUBEHANDS_BASE_RESOURCES": RESOURCES, "KUBEHANDS_IMAGE_PULL_POLICY": "Never"}
# A warm start is one claim patch and one POST /api/init; the pod is already up. Generous for 2 loaded cores,
# and still far below a cold start of this image (~5 s of agent-server boot alone).
WARM_RUNNING_SECONDS = 15.0


@dataclass
class Cluster:
    kubeconfig: str
    namespace: str
    custom: client.CustomObjectsApi
    core: client.CoreV1Api

    def create_pool(self, name: str, size: int, template: dict[str, Any]) -> None:
        body = {
            "apiVersion": constants.API_VERSION,
            "kind": constants.POOL_KIND,
            "metadata": {"name": name},
            "spec": {"size": size, "template": template},
        }
        self.custom.create_namespaced_custom_object(namespace=self.namespace, body=body, **SANDBOX_POOLS.coordinates())

    def pool_status(self, name: str) -> dict[str, Any]:
        pool = self.custom.get_namespaced_custom_object(
            namespace=self.namespace, name=name, **SANDBOX_POOLS.coordinates()
        )
        return dict(pool.get("status") or {})

    def members(self, pool: str) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(
            namespace=self.namespace, label_selector=f"{constants.LABEL_POOL}={pool}", **SANDBOXES.coordinates()
        )
        return [m for m in listed["items"] if not m["metadata"].get("deletionTimestamp")]

    def sandbox(self, name: str) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(namespace=self.namespace, name=name, **SANDBOXES.coordinates())
        )

    def ready_members(self, pool: str, count: int) -> list[str]:
        """Wait until the pool reports `count` ready members, and return their names."""
        wait_for(lambda: self.pool_status(pool).get("ready") == count, 300, f"pool {pool} to have {count} ready")
        return sorted(m["metadata"]["name"] for m in self.members(pool))


def pool_template(gateway_url: str, image: str) -> dict[str, Any]:
    """The template that serves a plain /start of `image` on a gateway configured like the test's."""
    settings = Settings(public_url=gateway_url, base_resources=json.loads(RESOURCES), image_pull_policy="Never")
    request = StartRequest(image=image, session_id="template")
    caller = KeyRecord(name="template", digest="0" * 64)
    return pools.template_from_spec(
        objects.build_sandbox(request, caller, settings, objects.mint_runtime_id(), "unused")["spec"]
    )


@pytest.fixture
def kube(kubeconfig: str, namespace: str) -> Iterator[Cluster]:
    with api_client(kubeconfig) as api:
        yield Cluster(kubeconfig, namespace, client.CustomObjectsApi(api), client.CoreV1Api(api))


@pytest.fixture
def operator(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubeconfig, namespace, tmp_path / "operator.log", metrics_port=free_port())
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print("--- operator.log\n" + (tmp_path / "operator.log").read_text()[-4000:])


def start_gateway(kubeconfig: str, namespace: str, log: Path, **env: str) -> GatewayProcess:
    gateway = GatewayProcess(kubeconfig, namespace, free_port(), log, **{**GATEWAY_ENV, **env})
    gateway.start()
    return gateway


def miss_count(metrics: str, reason: str) -> float:
    prefix = f'kubehands_pool_misses_total{{reason="{reason}"}} '
    return sum(float(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix))


def starts(operator: OperatorProcess, start: str) -> tuple[float, float]:
    """(count, sum) of the operator's start-latency histogram for one kind of start."""
    text = operator.scrape() or ""
    count = sample(text, "kubehands_operator_sandbox_start_seconds_count", start=start)
    total = sample(text, "kubehands_operator_sandbox_start_seconds_sum", start=start)
    return count or 0.0, total or 0.0


def show_log(path: Path) -> None:
    print(f"--- {path.name}\n" + path.read_text()[-4000:])


@pytest.mark.timeout(900)
def test_a_start_claims_a_dormant_member_and_runs_the_session(
    kube: Cluster, operator: OperatorProcess, agent_server_image: str, tmp_path: Path
) -> None:
    gateway = start_gateway(kube.kubeconfig, kube.namespace, tmp_path / "gateway.log")
    try:
        key = create_key(kube.kubeconfig, kube.namespace, "warm")
        api = {"X-API-Key": key}
        kube.create_pool("agents", 2, pool_template(gateway.url, agent_server_image))
        members = kube.ready_members("agents", 2)
        init_keys = {  # each member's throw-away key: a claim deletes the Secret that holds it
            m: base64.b64decode(kube.core.read_namespaced_secret(f"{m}-init", kube.namespace).data["session-api-key"])
            for m in members
        }
        # the gateway's cache must see them ready too before the /start (its metrics say so)
        wait_for(
            lambda: 'kubehands_pool_ready{pool="agents"} 2.0' in gateway.metrics(),
            60,
            "the gateway to see both members ready",
        )
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            began = time.monotonic()
            started = http.post(
                "/start",
                json={"image": agent_server_image, "session_id": "warm-1", "environment": {"KH_WARM_PROBE": "yes"}},
                headers=api,
            )
            answered = time.monotonic() - began
            assert started.status_code == 200, started.text
            runtime = started.json()
            rid, url, session_key = runtime["runtime_id"], runtime["url"], runtime["session_api_key"]
            assert rid in members, (rid, members)
            # answered running: the claimed server took the session within the request (no poll needed)
            assert (runtime["status"], runtime["pod_status"], runtime["start"]) == ("running", "ready", "warm")
            assert runtime["cold_start_reason"] is None

            def status() -> str:
                return str(http.get(f"/runtime/{rid}", headers=api).json()["status"])

            wait_for(lambda: status() == "running", WARM_RUNNING_SECONDS, "the warm sandbox to run")
            running = time.monotonic() - began
            print(f"warm /start answered in {answered:.2f}s; running after {running:.2f}s")
            # the operator's start-latency histogram: both members' boots, then this one warm start (claim to init)
            assert starts(operator, "pool_member")[0] >= 2
            warm = wait_for(lambda: starts(operator, "warm")[0] == 1 and starts(operator, "warm"), 30,
                            "the operator to observe the warm start")
            assert 0 <= warm[1] < 60, warm  # claim to init mark: about a second (docs/benchmarks.md)
            assert starts(operator, "cold") == (0, 0)

            claimed = kube.sandbox(rid)
            annotations = claimed["metadata"]["annotations"]
            assert annotations[constants.ANNOTATION_CLAIMED_FROM] == "agents"
            assert annotations[constants.ANNOTATION_INIT] == constants.INIT_READY
            # the dormant pod was kept: the one running now is the one the claim named
            assert claimed["status"]["podUID"] == annotations[constants.ANNOTATION_CLAIMED_POD]
            assert constants.LABEL_POOL not in claimed["metadata"].get("labels", {})
            assert not claimed["metadata"].get("ownerReferences")

            def bash(command: str, key: str = session_key) -> httpx.Response:
                return http.post(
                    f"{url}/api/bash/execute_bash_command",
                    json={"command": command, "timeout": 60},
                    headers={"X-Session-API-Key": key},
                )

            def output(command: str) -> str:
                ran = bash(command)
                assert ran.status_code == 200, ran.text
                assert ran.json()["exit_code"] == 0, ran.json()
                return str(ran.json()["stdout"]).strip()

            # the session's environment reached the shell (the server's os.environ, which its shells inherit)
            assert output("echo $KH_WARM_PROBE") == "yes"
            # the pool booted it with $(RUNTIME_ID) references, which are this sandbox's own now
            assert output("echo $RUNTIME_URL") == url
            assert output("echo $OH_VSCODE_BASE_PATH") == f"/{rid}/vscode"
            # the member's init key (its throw-away session key) and a wrong key are refused
            init_key = init_keys[rid].decode()
            assert init_key != session_key
            # and its Secret is gone: the sandbox can never pass for a pool member again (claims.forgery)
            wait_for(
                lambda: not kube.core.list_namespaced_secret(
                    kube.namespace, field_selector=f"metadata.name={rid}-init"
                ).items,
                30,
                "the claim to delete the init Secret",
            )
            for refused in (init_key, "wrong-key"):
                answer = bash("echo no", key=refused)
                assert answer.status_code in (401, 403), (answer.status_code, answer.text)

            # the pool makes a new member for the claimed one
            refilled = kube.ready_members("agents", 2)
            assert rid not in refilled and len(set(refilled) - set(members)) == 1

            # pause, then resume: a cold pod from the session's spec, the workspace and the environment kept
            assert output("echo kept > /workspace/warm-file && cat /workspace/warm-file") == "kept"
            assert http.post("/pause", json={"runtime_id": rid}, headers=api).json()["status"] == "paused"
            wait_for(lambda: kube.sandbox(rid)["status"].get("phase") == "Paused", 180, "the pause to finish")
            assert http.post("/resume", json={"runtime_id": rid}, headers=api).status_code == 200
            wait_for(lambda: status() == "running", 240, "the resumed sandbox to run")
            # the resume is a cold start, measured from the resume to the new pod's Ready, observed once
            cold = wait_for(lambda: starts(operator, "cold")[0] == 1 and starts(operator, "cold"), 30,
                            "the operator to observe the cold start")
            assert 0 < cold[1] < 240, cold
            resumed = kube.sandbox(rid)
            assert resumed["status"]["podUID"] != annotations[constants.ANNOTATION_CLAIMED_POD]
            assert output("cat /workspace/warm-file") == "kept"
            assert output("echo $KH_WARM_PROBE") == "yes"
            assert output("echo ${OH_DEFERRED_INIT:-unset}") == "unset"  # booted from the session's spec
            assert output("echo $RUNTIME_URL") == url  # expanded by Kubernetes from the spec's $(RUNTIME_ID)
            for refused in (init_key, "wrong-key"):
                assert bash("echo no", key=refused).status_code in (401, 403)
    finally:
        gateway.stop()
        show_log(tmp_path / "gateway.log")


@pytest.mark.timeout(900)
def test_two_gateways_racing_for_the_last_member_claim_it_once(
    kube: Cluster, operator: OperatorProcess, agent_server_image: str, tmp_path: Path
) -> None:
    # two replicas behind one public URL, as in a deployment: both derive the same spec for a /start
    public = {"KUBEHANDS_PUBLIC_URL": "http://gateway.test"}
    first = start_gateway(kube.kubeconfig, kube.namespace, tmp_path / "gateway-1.log", **public)
    second = start_gateway(kube.kubeconfig, kube.namespace, tmp_path / "gateway-2.log", **public)
    try:
        key = create_key(kube.kubeconfig, kube.namespace, "race")
        kube.create_pool("one", 1, pool_template(public["KUBEHANDS_PUBLIC_URL"], agent_server_image))
        members = kube.ready_members("one", 1)
        for gateway in (first, second):
            wait_for(
                lambda g=gateway: 'kubehands_pool_ready{pool="one"} 1.0' in g.metrics(),
                60,
                f"{gateway.url} to see the member ready",
            )
        answers: dict[str, httpx.Response] = {}
        barrier = threading.Barrier(2)

        def start(gateway: GatewayProcess, session_id: str) -> None:
            barrier.wait()
            answers[session_id] = httpx.post(
                f"{gateway.url}/start",
                json={"image": agent_server_image, "session_id": session_id},
                headers={"X-API-Key": key},
                timeout=60,
            )

        threads = [
            threading.Thread(target=start, args=(first, "race-a")),
            threading.Thread(target=start, args=(second, "race-b")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for answer in answers.values():
            assert answer.status_code == 200, answer.text
        runtime_ids = sorted(a.json()["runtime_id"] for a in answers.values())
        claimed = [rid for rid in runtime_ids if rid in members]
        assert len(claimed) == 1, (runtime_ids, members)
        cold = next(rid for rid in runtime_ids if rid not in members)
        # the loser lost the claim patch (409: `conflict`), or its cache already saw the member taken (`empty`)
        losses = {
            reason: sum(miss_count(g.metrics(), reason) for g in (first, second))
            for reason in ("conflict", "empty")
        }
        print(f"race: claimed {claimed[0]}, cold {cold}; misses {losses}")
        assert sum(losses.values()) == 1
        # each says how it started; the loser why it started cold
        assert {a.json()["runtime_id"]: a.json()["start"] for a in answers.values()} == {claimed[0]: "warm",
                                                                                         cold: "cold"}
        loser = next(a.json() for a in answers.values() if a.json()["runtime_id"] == cold)
        assert loser["cold_start_reason"] in ("conflict", "empty"), loser
        assert constants.ANNOTATION_CLAIMED_POD not in kube.sandbox(cold)["metadata"].get("annotations", {})
        for session_id, answer in answers.items():
            rid = answer.json()["runtime_id"]
            wait_for(
                lambda rid=rid: (
                    httpx.get(f"{first.url}/runtime/{rid}", headers={"X-API-Key": key}).json()["status"] == "running"
                ),
                240,
                f"{session_id} to run",
            )
    finally:
        for gateway, log in ((first, "gateway-1.log"), (second, "gateway-2.log")):
            gateway.stop()
            show_log(tmp_path / log)
