"""Start latency: POST /start → `status: running` → a passing GET {url}/alive, sequential and concurrent,
against a bare Pod of the same image created directly (create → Ready), in the same run."""

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from kubernetes.client.rest import ApiException

from bench import stats
from bench.system import BENCH_RESOURCES, System
from bench.watcher import Watcher
from kubehands.crd import constants
from kubehands.crd.times import parse_time

NAME = "start"
POLL_SECONDS = 0.1  # how often the benchmark client polls GET /sessions/{id} (OpenHands: 2 s)
TIMEOUT = 300

# (stage, from checkpoint, to checkpoint): checkpoints are client-observed wall-clock times
STAGES = [
    ("API: POST /start → Sandbox created", "t0", "sandbox_added"),
    ("operator: Sandbox → Pod created", "sandbox_added", "pod_added"),
    ("scheduler + PVC bind: Pod created → scheduled", "pod_added", "pod_scheduled"),
    ("kubelet: scheduled → container started", "pod_scheduled", "pod_running"),
    ("agent-server boot: started → Pod Ready", "pod_running", "pod_ready"),
    ("operator: Pod Ready → Sandbox status ready", "pod_ready", "sandbox_ready"),
    ("gateway /alive check + client poll → running", "sandbox_ready", "reported_running"),
    ("first GET {url}/alive through the router", "reported_running", "alive_ok"),
]
BARE_STAGES = [
    ("API: create → Pod created", "t0", "pod_added"),
    ("scheduler: Pod created → scheduled", "pod_added", "pod_scheduled"),
    ("kubelet: scheduled → container started", "pod_scheduled", "pod_running"),
    ("agent-server boot: started → Pod Ready", "pod_running", "pod_ready"),
]
STATUS_STAGES = [
    ("createdTime → podCreatedTime", "createdTime", "podCreatedTime"),
    ("podCreatedTime → podScheduledTime", "podCreatedTime", "podScheduledTime"),
    ("podScheduledTime → startedTime", "podScheduledTime", "startedTime"),
    ("startedTime → readyTime", "startedTime", "readyTime"),
]


def bare_pod(name: str, image: str) -> dict[str, Any]:
    """The agent-server container as the operator runs it (probe, security, resources), minus kubehands:
    no PVC (an emptyDir), no session Secret, no operator, no gateway."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "bare"}},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "runAsNonRoot": True,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "sandbox",
                "image": image,
                "imagePullPolicy": "Never",
                "workingDir": "/",
                # a session key, as the operator injects one (without it the agent server binds 127.0.0.1)
                "env": [{"name": "LITELLM_LOCAL_MODEL_COST_MAP", "value": "True"},
                        {"name": "OH_SESSION_API_KEYS_0", "value": "bench"},
                        {"name": "SESSION_API_KEY", "value": "bench"}],
                "ports": [{"name": "agent", "containerPort": constants.AGENT_PORT}],
                "readinessProbe": {"httpGet": {"path": "/alive", "port": "agent"}, "periodSeconds": 1,
                                   "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "resources": BENCH_RESOURCES,
                "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
            }],
            "volumes": [{"name": "workspace", "emptyDir": {}}],
        },
    }


async def start_ours(system: System, http: aiohttp.ClientSession, session_id: str, **extra: Any) -> dict[str, Any]:
    """POST /start (`system.start_body(session_id, **extra)`) → polled `running` → GET {url}/alive; the sample."""
    gw = system.gateway.url  # type: ignore[union-attr]
    sample: dict[str, Any] = {"session_id": session_id, "t0": time.time()}
    async with http.post(f"{gw}/start", json=system.start_body(session_id, **extra), headers=system.headers) as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"/start: {r.status} {body}")
    sample["api_answered"] = time.time()
    sample["runtime_id"], url = body["runtime_id"], body["url"]
    deadline = time.monotonic() + TIMEOUT
    while body.get("status") != "running":  # a warm start answers running: the client has nothing to poll
        async with http.get(f"{gw}/sessions/{session_id}", headers=system.headers) as r:
            body = await r.json()
        status = body.get("status")
        if status == "running":
            break
        if status == "error" or time.monotonic() > deadline:
            raise RuntimeError(f"sandbox {sample['runtime_id']} is {status}")
        await asyncio.sleep(POLL_SECONDS)
    sample["reported_running"] = time.time()
    async with http.get(f"{url}/alive") as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}/alive: {r.status}")
    sample["alive_ok"] = time.time()
    sample["total_ms"] = (sample["alive_ok"] - sample["t0"]) * 1000
    return sample


def start_bare(system: System, watcher: Watcher, name: str) -> dict[str, Any]:
    sample: dict[str, Any] = {"pod": name, "t0": time.time()}
    system.core.create_namespaced_pod(system.namespace, bare_pod(name, system.image))
    sample["api_answered"] = time.time()
    sample["pod_ready"] = watcher.wait_pod(name, "ready", TIMEOUT)
    sample["total_ms"] = (sample["pod_ready"] - sample["t0"]) * 1000
    return sample


def enrich_ours(system: System, watcher: Watcher, sample: dict[str, Any]) -> None:
    rid = sample["runtime_id"]
    pod = watcher.pod_of(rid)
    sandbox = watcher.sandboxes.get(rid, {})
    sample |= {"sandbox_added": sandbox.get("added"), "sandbox_ready": sandbox.get("ready"),
               "pod_added": pod.get("added"), "pod_scheduled": pod.get("scheduled"),
               "pod_running": pod.get("running"), "pod_ready": pod.get("ready")}
    try:
        status = system.sandbox_status(rid)
        sample["status_times"] = {k: status.get(k) for k in ("createdTime", "podCreatedTime", "podScheduledTime",
                                                              "startedTime", "readyTime")}
    except ApiException:
        sample["status_times"] = {}


def enrich_bare(watcher: Watcher, sample: dict[str, Any]) -> None:
    pod = watcher.pods.get(sample["pod"], {})
    sample |= {"pod_added": pod.get("added"), "pod_scheduled": pod.get("scheduled"),
               "pod_running": pod.get("running")}


def stage_durations(samples: list[dict[str, Any]], stages: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Per-stage durations in ms; checkpoints are made monotonic (a checkpoint seen before its predecessor
    counts as 0 ms), so the stages add up to the total."""
    values: dict[str, list[float]] = {name: [] for name, _, _ in stages}
    for sample in samples:
        last = sample["t0"]
        for name, _, to in stages:
            at = sample.get(to)
            if at is None:
                continue
            at = max(at, last)
            values[name].append((at - last) * 1000)
            last = at
    return stats.breakdown([(name, values[name]) for name, _, _ in stages])


def status_durations(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    values: dict[str, list[float]] = {name: [] for name, _, _ in STATUS_STAGES}
    for sample in samples:
        times = {k: parse_time(v) for k, v in (sample.get("status_times") or {}).items() if v}
        for name, a, b in STATUS_STAGES:
            if a in times and b in times:
                values[name].append((times[b] - times[a]).total_seconds() * 1000)
    return stats.breakdown([(name, values[name]) for name, _, _ in STATUS_STAGES])


async def _run(system: System, sizes: dict[str, int]) -> dict[str, Any]:
    sequential, concurrent = sizes["start_sequential"], sizes["start_concurrent"]
    tag = uuid.uuid4().hex[:4]
    ours: dict[str, list[dict[str, Any]]] = {"sequential": [], "concurrent": []}
    bare: dict[str, list[dict[str, Any]]] = {"sequential": [], "concurrent": []}
    with Watcher(system.kubeconfig, system.namespace) as watcher:
        await asyncio.sleep(1)  # the watches are open
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            # warm-up (not counted): first image use, first PVC, first gateway connections
            if sizes.get("start_warmup", True):
                warm = await start_ours(system, http, f"warm-{tag}")
                await asyncio.to_thread(start_bare, system, watcher, f"bare-warm-{tag}")
                await asyncio.to_thread(system.stop_and_settle, [warm["runtime_id"]])
            # sequential, alternating ours and bare so drift hits both alike
            for i in range(sequential):
                sample = await start_ours(system, http, f"seq-{tag}-{i}")
                await asyncio.sleep(0.2)  # the watch events of the last transitions
                await asyncio.to_thread(enrich_ours, system, watcher, sample)
                ours["sequential"].append(sample)
                await asyncio.to_thread(system.stop_and_settle, [sample["runtime_id"]])
                bare["sequential"].append(await asyncio.to_thread(start_bare, system, watcher, f"bare-s{i}-{tag}"))
                await asyncio.to_thread(system.stop_and_settle, [])
            # concurrent: all at once, ours then bare
            ours["concurrent"] = list(await asyncio.gather(
                *(start_ours(system, http, f"con-{tag}-{i}") for i in range(concurrent))))
            await asyncio.sleep(0.2)
            for sample in ours["concurrent"]:
                await asyncio.to_thread(enrich_ours, system, watcher, sample)
            await asyncio.to_thread(system.stop_and_settle, [s["runtime_id"] for s in ours["concurrent"]])
            with ThreadPoolExecutor(concurrent) as pool:
                bare["concurrent"] = list(pool.map(lambda i: start_bare(system, watcher, f"bare-c{i}-{tag}"),
                                                   range(concurrent)))
        await asyncio.sleep(0.5)
        for mode in bare:
            for sample in bare[mode]:
                enrich_bare(watcher, sample)
    await asyncio.to_thread(system.stop_and_settle, [])

    figures: dict[str, Any] = {}
    comparisons: dict[str, Any] = {}
    breakdowns: dict[str, Any] = {}
    for mode in ("sequential", "concurrent"):
        figures[f"ours_{mode}"] = stats.summarize(s["total_ms"] for s in ours[mode])
        figures[f"bare_pod_{mode}"] = stats.summarize(s["total_ms"] for s in bare[mode])
        figures[f"post_start_{mode}"] = stats.summarize(
            (s["api_answered"] - s["t0"]) * 1000 for s in ours[mode])
        figures[f"ours_pod_created_to_ready_{mode}"] = stats.summarize(
            (s["pod_ready"] - s["pod_added"]) * 1000 for s in ours[mode] if s.get("pod_ready") and s.get("pod_added"))
        figures[f"bare_pod_created_to_ready_{mode}"] = stats.summarize(
            (s["pod_ready"] - s["pod_added"]) * 1000 for s in bare[mode] if s.get("pod_ready") and s.get("pod_added"))
        comparisons[f"start_{mode}"] = stats.comparison(figures, f"ours_{mode}", f"bare_pod_{mode}")
        comparisons[f"pod_created_to_ready_{mode}"] = stats.comparison(
            figures, f"ours_pod_created_to_ready_{mode}", f"bare_pod_created_to_ready_{mode}")
        breakdowns[f"ours_{mode}"] = stage_durations(ours[mode], STAGES)
        breakdowns[f"bare_{mode}"] = stage_durations(bare[mode], BARE_STAGES)
        breakdowns[f"status_{mode}"] = status_durations(ours[mode])
    seq = breakdowns["ours_sequential"]
    dominant = max(seq, key=lambda s: s["median"] or 0)["stage"] if seq else None
    return {
        "sizes": {"sequential": sequential, "concurrent": concurrent, "poll_seconds": POLL_SECONDS},
        "figures": figures,
        "comparisons": comparisons,
        "breakdowns": breakdowns,
        "dominant_cost": dominant,
        "notes": [
            "ours: POST /start → first GET /sessions/{id} with status running (polled every "
            f"{POLL_SECONDS * 1000:.0f} ms) → GET {{url}}/alive through the router answers 200.",
            "bare pod: the same image, container, readiness probe and resources, created directly "
            "(create → Ready, seen by a watch); it has no PVC, no Secret, no operator and no gateway.",
            "stage times are watch events seen by the benchmark (ms); Sandbox status times have 1 s "
            "resolution (Kubernetes timestamps) and are listed separately.",
        ],
        "samples": {"ours": ours, "bare": bare},
    }


def run(system: System, sizes: dict[str, int]) -> dict[str, Any]:
    return asyncio.run(_run(system, sizes))
