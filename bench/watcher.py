"""Client-side observation of pod and Sandbox transitions (millisecond wall-clock times of watch events).

Kubernetes' own timestamps (creationTimestamp, condition times, startedAt, and so the Sandbox
status times copied from them) have one-second resolution; watch events give milliseconds.
"""

import threading
import time
from typing import Any

from kubernetes import client, config, watch

from bench.system import CRD
from kubehands.crd import constants


class Watcher:
    """Records, per object name, the first time each transition was seen."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.pods: dict[str, dict[str, float]] = {}
        self.sandboxes: dict[str, dict[str, float]] = {}
        self.pod_owner: dict[str, str] = {}  # pod name -> sandbox name
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: list[watch.Watch] = []

    def _mark(self, table: dict[str, dict[str, float]], name: str, event: str, now: float) -> None:
        with self._lock:
            table.setdefault(name, {}).setdefault(event, now)

    def _on_pod(self, pod: dict[str, Any], now: float) -> None:
        meta = pod.get("metadata") or {}
        name = meta["name"]
        owner = (meta.get("annotations") or {}).get(constants.ANNOTATION_SANDBOX_NAME)
        if owner:
            self.pod_owner[name] = owner
        self._mark(self.pods, name, "added", now)
        status = pod.get("status") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        if conditions.get("PodScheduled") == "True":
            self._mark(self.pods, name, "scheduled", now)
        if any((cs.get("state") or {}).get("running") for cs in status.get("containerStatuses") or []):
            self._mark(self.pods, name, "running", now)
        if conditions.get("Ready") == "True":
            self._mark(self.pods, name, "ready", now)

    def _on_sandbox(self, sandbox: dict[str, Any], now: float) -> None:
        meta = sandbox["metadata"]
        name = meta["name"]
        self._mark(self.sandboxes, name, "added", now)
        status = sandbox.get("status") or {}
        if status.get("phase"):
            self._mark(self.sandboxes, name, f"phase:{status['phase']}", now)
        ready = (status.get("podStatus") or "").lower() == "ready"
        if ready:
            self._mark(self.sandboxes, name, "ready", now)
        # a warm start (docs/gateway.md "Warm pools"): the claim, the init marked done, and the operator's first
        # status of the claimed spec (the claim replaced the spec, so the generation moved)
        annotations = meta.get("annotations") or {}
        if annotations.get(constants.ANNOTATION_CLAIMED_POD):
            self._mark(self.sandboxes, name, "claimed", now)
            if ready and status.get("observedGeneration") == meta.get("generation"):
                self._mark(self.sandboxes, name, "claimed_current", now)
        if annotations.get(constants.ANNOTATION_INIT) == constants.INIT_READY:
            self._mark(self.sandboxes, name, "init_ready", now)

    def _run(self, kind: str) -> None:
        api = config.new_client_from_config(config_file=self.kubeconfig)
        try:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            while not self._stop.is_set():
                w = watch.Watch()
                self._watches.append(w)
                if kind == "pods":
                    stream = w.stream(core.list_namespaced_pod, self.namespace, timeout_seconds=60)
                else:
                    stream = w.stream(custom.list_namespaced_custom_object, namespace=self.namespace,
                                      timeout_seconds=60, **CRD)
                try:
                    for event in stream:
                        now = time.time()
                        obj = event["raw_object"]
                        if event["type"] == "DELETED":
                            continue
                        (self._on_pod if kind == "pods" else self._on_sandbox)(obj, now)
                        if self._stop.is_set():
                            break
                except Exception:  # noqa: BLE001 - a broken watch is restarted
                    if self._stop.is_set():
                        break
                    time.sleep(0.2)
        finally:
            api.close()

    def __enter__(self) -> "Watcher":
        for kind in ("pods", "sandboxes"):
            thread = threading.Thread(target=self._run, args=(kind,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for w in self._watches:
            w.stop()
        for thread in self._threads:
            thread.join(timeout=65)

    def pod_of(self, sandbox: str) -> dict[str, float]:
        for pod, owner in list(self.pod_owner.items()):
            if owner == sandbox:
                return dict(self.pods.get(pod, {}))
        return {}

    def seen(self, table: str, name: str, events: tuple[str, ...], timeout: float) -> bool:
        """Wait until every one of `events` was seen for `name` in `table` ("pods" or "sandboxes"); False on
        timeout (a watch restarted meanwhile can miss one)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                got = getattr(self, table).get(name, {})
                if all(e in got for e in events):
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def wait_pod(self, name: str, event: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.pods.get(name, {}).get(event)
            if seen is not None:
                return seen
            time.sleep(0.01)
        raise TimeoutError(f"pod {name} not {event} after {timeout:g}s")
