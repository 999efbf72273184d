"""Warm start: a /start served from a SandboxPool (docs/gateway.md "Warm pools") → `status: running` → a passing
GET {url}/alive through the router, sequential and in a burst, against cold starts of the same request in the same
run; the pool's refill rate after the burst; the memory of a dormant member, of a claimed (initialised) one and of
a cold-started one (the cost of keeping a pool).

Warm and cold /starts are the same request but for one plain variable, `KH_BENCH_START` (`warm` or `cold`), which
nothing in the image reads. The pool's template is what the gateway derives for the warm request
(`objects.build_sandbox` with the gateway's settings, as tests/node/test_warm_pool.py does), so the warm request
matches it by construction, and the cold one does not, on that variable alone: a template variable must be in the
request with the same value. No pod-shaping field differs (a different `resource_factor` would change the pod's CPU
weight under contention) and no boot-only variable is added (an unknown `OH_*` variable may change what the agent
server does at boot).
"""

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes.client.rest import ApiException

from bench import stats
from bench.start import POLL_SECONDS, STAGES, enrich_ours, stage_durations, start_ours
from bench.system import BENCH_RESOURCES, System
from bench.watcher import Watcher
from kubehands.api.keys import KeyRecord
from kubehands.api.settings import Settings
from kubehands.crd import constants
from kubehands.crd.model import Phase, PodStatus
from kubehands.crd.times import parse_time
from kubehands.kube import SANDBOX_POOLS, SANDBOXES
from kubehands.spec import objects, pools
from kubehands.spec.request import StartRequest

NAME = "warm"
MARK = "KH_BENCH_START"  # the one difference between the warm and the cold /start (see the module docstring)
TIMEOUT = 600  # a pool filling, or a burst of cold starts, on 2 loaded cores
MB = 1e6
CGROUP_ROOT = Path("/sys/fs/cgroup")  # the benchmark runs on the (single) node: its pods' cgroups are here
# the targets: (figure, median ≤ ms, p99 ≤ ms, at least n samples)
TARGETS = (("warm_sequential", 300.0, 1000.0, 20), ("warm_burst", None, 2000.0, 10))

# (stage, from checkpoint, to checkpoint): client wall-clock times, the gateway's claimed-at annotation (same host
# clock, microseconds) and watch events of the claimed Sandbox
WARM_STAGES = [
    ("gateway: POST /start → member claimed (claim Secret, init key)", "t0", "claimed_at"),
    ("gateway: claim patch + POST /api/init → init marked done", "claimed_at", "init_ready"),
    # the /start waits for the operator's status of the claimed spec, then answers `running` (no /alive probe: the
    # init's answer is the agent server's): `claimed_current` falls inside this stage
    ("gateway: init done → operator's status current → POST /start answered", "init_ready", "api_answered"),
    ("client: POST /start answered → running seen (a poll only when not answered running)", "api_answered",
     "reported_running"),
    ("first GET {url}/alive through the router", "reported_running", "alive_ok"),
]

# each new member after the burst, from the burst's first POST /start (watch events)
REFILL_STAGES = [
    ("claims seen → member Sandbox created (operator)", "t0", "sandbox_added"),
    ("operator: Sandbox → Pod created", "sandbox_added", "pod_added"),
    ("scheduler + PVC bind: Pod created → scheduled", "pod_added", "pod_scheduled"),
    ("kubelet: scheduled → container started", "pod_scheduled", "pod_running"),
    ("agent-server boot (dormant): started → Pod Ready", "pod_running", "pod_ready"),
    ("operator: Pod Ready → member ready", "pod_ready", "member_ready"),
]


# ---- pure helpers ---------------------------------------------------------------------------------------------


def metric_value(text: str, name: str, labels: Mapping[str, str]) -> float | None:
    """The value of one sample of a Prometheus text exposition (`name{k="v",...} value`); None when absent."""
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "} "
    for line in text.splitlines():
        if line.startswith(want):
            return float(line[len(want) :].split()[0])
    return None


def pod_memory(summary: Mapping[str, Any], namespace: str, pods: Sequence[str], since: float) -> dict[str, Any]:
    """Memory (and CPU) of `pods` from a kubelet summary (`/stats/summary`), per pod: its containers' `rssBytes`
    and `workingSetBytes` summed, and `usageNanoCores`. Only pods whose container figures were taken at `since`
    (wall-clock seconds) or later are returned, so a caller can wait for fresh ones."""
    found: dict[str, Any] = {}
    for pod in summary.get("pods") or []:
        ref = pod.get("podRef") or {}
        if ref.get("namespace") != namespace or ref.get("name") not in pods:
            continue
        containers = pod.get("containers") or []
        memories = [c.get("memory") or {} for c in containers]
        times = [parse_time(m.get("time")) for m in memories]
        if not containers or any(t is None or t.timestamp() < since for t in times):
            continue
        cpus = [(c.get("cpu") or {}).get("usageNanoCores") for c in containers]

        def total(values: list[Any]) -> float | None:
            return None if any(v is None for v in values) else float(sum(values))

        found[ref["name"]] = {"rss": total([m.get("rssBytes") for m in memories]),
                              "working_set": total([m.get("workingSetBytes") for m in memories]),
                              "nano_cores": total(cpus)}
    return found


def cgroup_memory_stat_paths(root: Path, pod_uid: str, qos: str, container_id: str) -> list[Path]:
    """Where a container's `memory.stat` lives under the cgroup mount `root`: cgroup v1 (`memory/` controller) or
    v2, cgroupfs or systemd driver, for the pod's QoS class (`Guaranteed` pods sit directly under kubepods)."""
    qos = qos.lower()
    under = "" if qos == "guaranteed" else f"{qos}/"
    slice_qos = "" if qos == "guaranteed" else f"-{qos}"
    uid_ = pod_uid.replace("-", "_")
    systemd = (f"kubepods.slice/{'' if not slice_qos else f'kubepods{slice_qos}.slice/'}"
               f"kubepods{slice_qos}-pod{uid_}.slice/cri-containerd-{container_id}.scope")
    relative = [f"kubepods/{under}pod{pod_uid}/{container_id}", systemd]
    return [root / base / rel / "memory.stat" for base in ("memory", "") for rel in relative]


def parse_memory_stat(text: str) -> dict[str, float | None]:
    """RSS (anonymous memory: v1 `total_rss`, v2 `anon`) and page cache (v1 `total_cache`, v2 `file`) in bytes."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = float(value)
    return {"rss": values.get("total_rss", values.get("anon")), "cache": values.get("total_cache", values.get("file"))}


def target_check(figure: Mapping[str, Any], median_max: float | None, p99_max: float | None,
                 min_n: int) -> dict[str, Any]:
    """Whether a latency figure meets a target (median and p99 at most, at least `min_n` samples)."""
    problems = []
    if (figure.get("n") or 0) < min_n:
        problems.append(f"n {figure.get('n')} < {min_n}")
    for key, limit in (("median", median_max), ("p99", p99_max)):
        value = figure.get(key)
        if limit is not None and (value is None or value > limit):
            problems.append(f"{key} {'–' if value is None else f'{value:.0f}'} ms > {limit:.0f} ms")
    return {"median_max": median_max, "p99_max": p99_max, "min_n": min_n, "met": not problems,
            "problems": problems}


# ---- the pool ---------------------------------------------------------------------------------------------------


def gateway_settings(system: System) -> Settings:
    """The settings `system.serve_gateway` gives the gateway (its environment is this process's plus these)."""
    return Settings(namespace=system.namespace, public_url=system.gateway.url,  # type: ignore[union-attr]
                    base_resources=BENCH_RESOURCES, image_pull_policy="Never")


def derived_spec(system: System, session_id: str, start: str) -> dict[str, Any]:
    """The Sandbox spec the gateway derives for the benchmark's /start (warm or cold)."""
    request = StartRequest.model_validate(system.start_body(session_id, environment={MARK: start}))
    caller = KeyRecord(name=system.key_name, digest="0" * 64)
    return dict(objects.build_sandbox(request, caller, gateway_settings(system), objects.mint_runtime_id(),
                                      "unused")["spec"])


def pool_template(system: System) -> dict[str, Any]:
    """The template whose members serve the warm /start; checked to refuse the cold one on `MARK` alone."""
    template = pools.template_from_spec(derived_spec(system, "template", "warm"))
    warm = pools.difference(template, derived_spec(system, "check", "warm"))
    cold = pools.difference(template, derived_spec(system, "check", "cold"))
    if warm is not None or cold != f"env.{MARK}":
        raise RuntimeError(f"the pool template does not tell warm from cold by {MARK}: warm {warm}, cold {cold}")
    return template


class Pool:
    """One SandboxPool of the benchmark's namespace, seen through the API and through the gateway's cache."""

    def __init__(self, system: System, name: str, size: int) -> None:
        self.system, self.name, self.size = system, name, size

    def create(self, template: dict[str, Any]) -> None:
        body = {"apiVersion": constants.API_VERSION, "kind": constants.POOL_KIND, "metadata": {"name": self.name},
                "spec": {"size": self.size, "template": template}}
        self.system.custom.create_namespaced_custom_object(namespace=self.system.namespace, body=body,
                                                           **SANDBOX_POOLS.coordinates())

    def delete(self) -> None:
        try:
            self.system.custom.delete_namespaced_custom_object(namespace=self.system.namespace, name=self.name,
                                                               **SANDBOX_POOLS.coordinates())
        except ApiException as e:
            if e.status != 404:
                raise

    def status(self) -> dict[str, Any]:
        pool = self.system.custom.get_namespaced_custom_object(namespace=self.system.namespace, name=self.name,
                                                               **SANDBOX_POOLS.coordinates())
        return dict(pool.get("status") or {})

    def members(self) -> list[dict[str, Any]]:
        listed = self.system.custom.list_namespaced_custom_object(
            namespace=self.system.namespace, label_selector=f"{constants.LABEL_POOL}={self.name}",
            **SANDBOXES.coordinates())
        return [m for m in listed["items"] if not m["metadata"].get("deletionTimestamp")]

    def member_names(self) -> set[str]:
        return {m["metadata"]["name"] for m in self.members()}

    def full(self) -> bool:
        """The operator reports `size` ready members, and `size` members exist, every one Running and Ready
        (so a status written before the latest claims cannot pass)."""
        if self.status().get("ready") != self.size:
            return False
        members = self.members()
        return len(members) == self.size and all(
            (m.get("status") or {}).get("phase") == Phase.RUNNING
            and (m.get("status") or {}).get("podStatus") == PodStatus.READY
            for m in members)

    def gateway_sees_full(self) -> bool:
        ready = metric_value(self.system.gateway_metrics(), "kubehands_pool_ready", {"pool": self.name})
        return ready == self.size

    def wait_full(self, timeout: float = TIMEOUT) -> float:
        """Wait until the pool is full (the time it was seen so), then until the gateway's cache sees it full too
        (a /start served from it must find every member claimable)."""
        self.system.wait(self.full, timeout, f"pool {self.name} to have {self.size} ready members", 0.1)
        full_at = time.time()
        self.system.wait(self.gateway_sees_full, 60, f"the gateway to see pool {self.name} full")
        return full_at

    def settle(self, runtime_ids: list[str]) -> float:
        """Stop these runtimes, wait for the pool to be full again and for a quiet node; when it was full."""
        self.system.stop(runtime_ids)
        self.system.clear_pods(keep=self.member_names)
        full_at = self.wait_full()
        self.system.clear_pods(keep=self.member_names)
        self.system.wait_quiet()
        return full_at


def pods_of(system: System, sandboxes: Sequence[str]) -> dict[str, Any]:
    """sandbox name → its pod that is not being deleted (V1Pod)."""
    out = {}
    for pod in system.core.list_namespaced_pod(system.namespace).items:
        owner = (pod.metadata.annotations or {}).get(constants.ANNOTATION_SANDBOX_NAME)
        if owner in sandboxes and not pod.metadata.deletion_timestamp:
            out[owner] = pod
    return out


def cgroup_rss(pod: Any) -> dict[str, float | None]:
    """The sandbox container's RSS and page cache from its cgroup's memory.stat on this host (None when not found:
    the kubelet's summary through CRI carries no rssBytes)."""
    container_id = next((cs.container_id or "" for cs in pod.status.container_statuses or []
                         if cs.name == "sandbox"), "").rpartition("://")[2]
    if container_id:
        for path in cgroup_memory_stat_paths(CGROUP_ROOT, pod.metadata.uid, pod.status.qos_class or "", container_id):
            try:
                return parse_memory_stat(path.read_text())
            except OSError:
                continue
    return {"rss": None, "cache": None}


def memory_of(system: System, sandboxes: Sequence[str], since: float) -> list[dict[str, Any]]:
    """Fresh (taken at `since` or later) kubelet figures for the pods of these sandboxes, with the RSS and page cache
    of their containers' cgroups read at the same time."""
    pods = pods_of(system, sandboxes)
    missing = set(sandboxes) - set(pods)
    if missing:
        raise RuntimeError(f"no pod for sandboxes {sorted(missing)}")
    names = [pod.metadata.name for pod in pods.values()]
    node = next(iter(pods.values())).spec.node_name
    found: dict[str, Any] = {}

    def fresh() -> bool:
        found.update(pod_memory(system.kubelet_summary(node), system.namespace, names, since))
        return len(found) == len(names)

    system.wait(fresh, 120, "fresh kubelet memory figures of the pods", 1.0)
    rows = []
    for sandbox, pod in pods.items():
        row = {"sandbox": sandbox, "pod": pod.metadata.name, **found[pod.metadata.name], "cache": None}
        row |= {k: v for k, v in cgroup_rss(pod).items() if v is not None}  # else the summary's rssBytes, if any
        rows.append(row)
    return rows


# ---- samples ----------------------------------------------------------------------------------------------------


def enrich_warm(system: System, watcher: Watcher, pool: str, sample: dict[str, Any]) -> None:
    """The claim's checkpoints: the gateway's claimed-at annotation and the watch events of the claimed Sandbox.
    Raises when the /start was not served from `pool`."""
    rid = sample["runtime_id"]
    annotations = system.custom.get_namespaced_custom_object(
        namespace=system.namespace, name=rid, **SANDBOXES.coordinates())["metadata"].get("annotations") or {}
    if annotations.get(constants.ANNOTATION_CLAIMED_FROM) != pool:
        raise RuntimeError(f"the warm /start {sample['session_id']} was not served from pool {pool}: {rid} "
                           f"was started cold")
    claimed_at = parse_time(annotations.get(constants.ANNOTATION_CLAIMED_AT))
    watcher.seen("sandboxes", rid, ("init_ready", "claimed_current"), 10)
    seen = watcher.sandboxes.get(rid, {})
    sample |= {"claimed_at": claimed_at.timestamp() if claimed_at else None,
               "init_ready": seen.get("init_ready"), "claimed_current": seen.get("claimed_current")}


def check_cold(system: System, sample: dict[str, Any]) -> None:
    annotations = system.custom.get_namespaced_custom_object(
        namespace=system.namespace, name=sample["runtime_id"], **SANDBOXES.coordinates())["metadata"].get(
        "annotations") or {}
    if annotations.get(constants.ANNOTATION_CLAIMED_POD):
        raise RuntimeError(f"the cold /start {sample['session_id']} claimed a pool member")


def enrich_cold(system: System, watcher: Watcher, sample: dict[str, Any]) -> None:
    check_cold(system, sample)
    watcher.seen("sandboxes", sample["runtime_id"], ("ready",), 10)
    enrich_ours(system, watcher, sample)


def was_claimed(system: System, pool: str, sample: dict[str, Any]) -> bool:
    obj = system.custom.get_namespaced_custom_object(namespace=system.namespace, name=sample["runtime_id"],
                                                     **SANDBOXES.coordinates())
    return bool((obj["metadata"].get("annotations") or {}).get(constants.ANNOTATION_CLAIMED_FROM) == pool)


async def one(system: System, http: aiohttp.ClientSession, session_id: str, start: str) -> dict[str, Any]:
    """A /start of the benchmark's request, warm or cold (`MARK`), to running and a passing /alive."""
    return await start_ours(system, http, session_id, environment={MARK: start})


async def together(system: System, http: aiohttp.ClientSession, prefix: str, start: str,
                   count: int) -> list[dict[str, Any]]:
    """`count` such /starts at once."""
    return list(await asyncio.gather(*(one(system, http, f"{prefix}-{i}", start) for i in range(count))))


async def _run(system: System, sizes: dict[str, Any]) -> dict[str, Any]:
    sequential, burst = sizes["warm_sequential"], sizes["warm_burst"]
    tag = uuid.uuid4().hex[:4]
    pool = Pool(system, f"bench-warm-{tag}", burst)
    warm: dict[str, list[dict[str, Any]]] = {"sequential": [], "burst": []}
    cold: dict[str, list[dict[str, Any]]] = {"sequential": [], "burst": []}
    refill_one: list[float] = []
    refill: list[dict[str, Any]] = []  # the checkpoints of each new member after the burst
    memory: dict[str, list[dict[str, Any]]] = {}
    timing: dict[str, float] = {}
    burst_warm_served = 0

    template = await asyncio.to_thread(pool_template, system)
    with Watcher(system.kubeconfig, system.namespace) as watcher:
        try:
            created = time.time()
            await asyncio.to_thread(pool.create, template)
            timing["fill_seconds"] = await asyncio.to_thread(pool.wait_full) - created
            await asyncio.to_thread(system.wait_quiet)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
                # sequential, alternating warm (from a full pool) and cold, so drift hits both alike
                for i in range(sequential):
                    sample = await one(system, http, f"warm-s{i}-{tag}", "warm")
                    await asyncio.to_thread(enrich_warm, system, watcher, pool.name, sample)
                    warm["sequential"].append(sample)
                    refilled = await asyncio.to_thread(pool.settle, [sample["runtime_id"]])
                    refill_one.append((refilled - sample["t0"]) * 1000)
                    sample = await one(system, http, f"cold-s{i}-{tag}", "cold")
                    await asyncio.to_thread(enrich_cold, system, watcher, sample)
                    cold["sequential"].append(sample)
                    await asyncio.to_thread(pool.settle, [sample["runtime_id"]])

                # the dormant members of the full pool, idle since their boot
                members = sorted(await asyncio.to_thread(pool.member_names))
                memory["dormant"] = await asyncio.to_thread(memory_of, system, members, time.time())

                # a burst of N warm /starts against the pool of N, then its refill
                before = set(members)
                t_burst = time.time()
                warm["burst"] = await together(system, http, f"warm-b-{tag}", "warm", burst)
                claimed = [s for s in warm["burst"] if s["runtime_id"] in before]
                for sample in claimed:
                    await asyncio.to_thread(enrich_warm, system, watcher, pool.name, sample)
                burst_warm_served = len(claimed)
                refilled = await asyncio.to_thread(pool.wait_full)
                timing["refill_seconds"] = refilled - t_burst
                timing["refilled"] = len(claimed)
                for member in sorted(await asyncio.to_thread(pool.member_names) - before):
                    await asyncio.to_thread(watcher.seen, "sandboxes", member, ("ready",), 10)
                    seen = watcher.sandboxes.get(member, {})
                    pod = {f"pod_{k}": v for k, v in watcher.pod_of(member).items()}
                    refill.append({"member": member, "t0": t_burst, "sandbox_added": seen.get("added"), **pod,
                                   "member_ready": seen.get("ready")})
                memory["claimed"] = await asyncio.to_thread(
                    memory_of, system, [s["runtime_id"] for s in claimed], max(s["alive_ok"] for s in warm["burst"])
                ) if claimed else []
                await asyncio.to_thread(pool.settle, [s["runtime_id"] for s in warm["burst"]])

                # the same burst cold, against the full pool
                t_burst = time.time()
                cold["burst"] = await together(system, http, f"cold-b-{tag}", "cold", burst)
                timing["cold_burst_seconds"] = max(s["alive_ok"] for s in cold["burst"]) - t_burst
                for sample in cold["burst"]:
                    await asyncio.to_thread(enrich_cold, system, watcher, sample)
                memory["cold"] = await asyncio.to_thread(
                    memory_of, system, [s["runtime_id"] for s in cold["burst"]],
                    max(s["alive_ok"] for s in cold["burst"]))
                await asyncio.to_thread(system.stop, [s["runtime_id"] for s in cold["burst"]])
        finally:
            # the pool goes (its members with it, by owner reference): the next benchmark finds no sandbox
            await asyncio.to_thread(pool.delete)
            await asyncio.to_thread(system.wait, lambda: not system.list_sandboxes(), 300, "every sandbox gone", 0.5)
            await asyncio.to_thread(system.stop_and_settle, [])
    return result(sequential, burst, warm, cold, refill_one, refill, memory, timing, burst_warm_served)


def result(sequential: int, burst: int, warm: dict[str, list[dict[str, Any]]], cold: dict[str, list[dict[str, Any]]],
           refill_one: list[float], refill: list[dict[str, Any]], memory: dict[str, list[dict[str, Any]]],
           timing: dict[str, float],
           burst_warm_served: int) -> dict[str, Any]:
    """The result body (figures, comparisons, breakdowns, targets, notes) from the samples."""
    figures: dict[str, Any] = {}
    comparisons: dict[str, Any] = {}
    breakdowns: dict[str, Any] = {}
    for mode in ("sequential", "burst"):
        figures[f"warm_{mode}"] = stats.summarize(s["total_ms"] for s in warm[mode])
        figures[f"cold_{mode}"] = stats.summarize(s["total_ms"] for s in cold[mode])
        figures[f"post_start_warm_{mode}"] = stats.summarize((s["api_answered"] - s["t0"]) * 1000 for s in warm[mode])
        figures[f"post_start_cold_{mode}"] = stats.summarize((s["api_answered"] - s["t0"]) * 1000 for s in cold[mode])
        comparisons[f"start_{mode}"] = stats.comparison(figures, f"warm_{mode}", f"cold_{mode}")
        comparisons[f"post_start_{mode}"] = stats.comparison(figures, f"post_start_warm_{mode}",
                                                             f"post_start_cold_{mode}")
        breakdowns[f"warm_{mode}"] = stage_durations([s for s in warm[mode] if s.get("claimed_at")], WARM_STAGES)
        breakdowns[f"cold_{mode}"] = stage_durations(cold[mode], STAGES)
    figures["refill_one_member"] = stats.summarize(refill_one)
    breakdowns["refill_after_burst"] = stage_durations(refill, REFILL_STAGES)
    figures["refill_after_burst"] = stats.summarize([timing["refill_seconds"] * 1000])
    figures["refill_members_per_second"] = stats.rate_figure(
        stats.throughput(int(timing["refilled"]), timing["refill_seconds"]), "1/s")
    figures["cold_burst_started_per_second"] = stats.rate_figure(
        stats.throughput(burst, timing["cold_burst_seconds"]), "1/s")
    figures["initial_fill_members_per_second"] = stats.rate_figure(
        stats.throughput(burst, timing["fill_seconds"]), "1/s")
    comparisons["refill_rate"] = stats.comparison(figures, "refill_members_per_second",
                                                  "cold_burst_started_per_second", higher_is_better=True)
    for kind in ("dormant", "claimed", "cold"):
        rows = memory.get(kind) or []
        for key, figure in (("rss", "rss"), ("working_set", "working_set"), ("cache", "page_cache")):
            values = [r[key] / MB for r in rows if r.get(key) is not None]
            if values:
                figures[f"{kind}_pod_{figure}"] = stats.summarize(values, unit="MB")
        cores = [r["nano_cores"] / 1e6 for r in rows if r.get("nano_cores") is not None]
        if cores:
            figures[f"{kind}_pod_cpu"] = stats.summarize(cores, unit="millicores")
    for key in ("rss", "working_set"):
        for kind in ("dormant", "claimed"):
            if f"{kind}_pod_{key}" in figures and f"cold_pod_{key}" in figures:
                comparisons[f"{kind}_{key}"] = stats.comparison(figures, f"{kind}_pod_{key}", f"cold_pod_{key}")
    targets = {name: target_check(figures[name], median, p99, n) for name, median, p99, n in TARGETS}
    seq = breakdowns["warm_sequential"]
    dominant = max(seq, key=lambda s: s["median"] or 0)["stage"] if seq else None
    dormant_mb = (figures.get("dormant_pod_rss") or figures.get("dormant_pod_working_set") or {}).get("median")
    notes = [
        "warm: POST /start served by claiming a dormant member of a full SandboxPool (its template is what the "
        "gateway derives for the request) → first GET /sessions/{id} with status running (polled every 100 ms) → "
        "GET {url}/alive through the router answers 200. Each sequential sample starts from a full pool: the "
        "refill between samples is waited for and not timed.",
        f"cold: the same /start but for `{MARK}=cold` instead of `warm` (a plain variable nothing reads; the "
        "template has `warm`, so no pool matches): the agent server boots. Sequential samples alternate warm and "
        "cold; the cold burst runs against the full pool.",
        f"burst: {burst} concurrent /starts against a pool of {burst}, all reached running; "
        + (f"all {burst} were served warm." if burst_warm_served == burst else
           f"{burst_warm_served} were served warm, the others fell back to a cold start (every member they tried "
           "was taken) and count in `warm_burst` as the client saw them."),
        f"refill: from the burst's first POST /start until the pool reported {burst} ready members again "
        f"({timing['refilled']:.0f} new members in {timing['refill_seconds']:.1f} s; breakdown `refill_after_burst`), "
        "against the cold burst's starts per second; refill_one_member: from a sequential warm /start until the pool "
        f"was full again; the initial fill of {burst} members took {timing['fill_seconds']:.1f} s.",
        "memory of each pod once running: the pool's dormant members (idle since boot), the burst's claimed "
        "(initialised) ones and the cold burst's. RSS and page cache from the container's cgroup `memory.stat` on "
        "this host (the kubelet's summary through CRI has no rssBytes); working set and CPU from the kubelet's "
        "summary API (`/api/v1/nodes/<node>/proxy/stats/summary`). Keeping a pool of "
        f"{burst} costs about {burst} × {'–' if dormant_mb is None else f'{dormant_mb:.0f}'} MB.",
        f"a warm /start answers `running` once the operator has reported on the claim, so the client does not poll; "
        f"one answered `starting` is polled every {POLL_SECONDS * 1000:.0f} ms (as in §1; OpenHands polls every 2 s).",
        "warm stage times: client wall-clock times, the gateway's claimed-at annotation and watch events of the "
        "claimed Sandbox (init marked done; the operator's first status of the claimed spec), made monotonic.",
    ]
    for name, check in targets.items():
        limits = ", ".join(f"{k.split('_')[0]} ≤ {check[k]:.0f} ms" for k in ("median_max", "p99_max") if check[k])
        notes.append(f"target `{name}` ({limits}, n ≥ {check['min_n']}): "
                     + ("met" if check["met"] else "missed: " + "; ".join(check["problems"])))
    return {
        "sizes": {"sequential": sequential, "burst": burst, "pool": burst, "poll_seconds": POLL_SECONDS},
        "figures": figures,
        "comparisons": comparisons,
        "breakdowns": breakdowns,
        "targets": targets,
        "dominant_cost": dominant,
        "notes": notes,
        "burst_warm_served": burst_warm_served,
        "timing": timing,
        "memory": memory,
        "samples": {"warm": warm, "cold": cold, "refill_one_member_ms": refill_one, "refill": refill},
    }


def run(system: System, sizes: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_run(system, sizes))
