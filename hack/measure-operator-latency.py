#!/usr/bin/env python3
"""Measure the operator's own latency on a running cluster, as seen by a client watching the API:

  Sandbox created  -> its Pod exists                      (operator reaction + pod create)
  Pod Ready        -> Sandbox status.phase == Running     (operator status update)

Usage: .venv/bin/python hack/measure-operator-latency.py [--count N] [--image REF]
Starts `kubehands operator` for a scratch namespace, creates N Sandboxes one after another, and
prints one JSON line with the samples and their medians. Needs the local cluster and the image.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.sandbox import SandboxApi, sandbox_manifest  # noqa: E402
from tests.helpers.wait import wait_for  # noqa: E402


class Observer:
    """Records when each pod first exists and first turns Ready, and when each Sandbox reports Running."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self._threads = [
            threading.Thread(target=self._pods, args=(core, namespace), daemon=True),
            threading.Thread(target=self._sandboxes, args=(custom, namespace), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _mark(self, key: tuple[str, str]) -> None:
        self.seen.setdefault(key, time.monotonic())

    def _pods(self, core: client.CoreV1Api, namespace: str) -> None:
        for event in watch.Watch().stream(core.list_namespaced_pod, namespace, timeout_seconds=600):
            pod = event["object"]
            self._mark(("pod", pod.metadata.name))
            if any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])):
                self._mark(("ready", pod.metadata.name))
            if self._stop.is_set():
                return

    def _sandboxes(self, custom: client.CustomObjectsApi, namespace: str) -> None:
        stream = watch.Watch().stream(custom.list_namespaced_custom_object, "kubehands.dev", "v1alpha1",
                                      namespace, "sandboxes", timeout_seconds=600)
        for event in stream:
            obj = event["object"]
            if (obj.get("status") or {}).get("phase") == "Running":
                self._mark(("running", obj["metadata"]["name"]))
            if self._stop.is_set():
                return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--image", default="kubehands/agent-server:1.58.2")
    args = parser.parse_args()
    kubeconfig = os.environ.get("KUBECONFIG", str(Path.home() / ".cache/kubehands/cluster/kubeconfig"))
    api = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api)
    namespace = f"kh-measure-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    operator = subprocess.Popen(
        [str(Path(sys.executable).parent / "kubehands"), "operator", "-n", namespace],
        env={**os.environ, "KUBECONFIG": kubeconfig}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    to_pod, to_running = [], []
    try:
        observer = Observer(api, namespace)
        sandboxes = SandboxApi(api, namespace)
        for i in range(args.count):
            name = f"kh-m{i}"
            created = time.monotonic()
            sandboxes.create(sandbox_manifest(name, args.image))
            wait_for(lambda n=name: ("running", n) in observer.seen, 180, f"{name} Running", interval=0.05)
            to_pod.append(observer.seen[("pod", name)] - created)
            to_running.append(observer.seen[("running", name)] - observer.seen[("ready", name)])
            sandboxes.delete(name)
    finally:
        operator.terminate()
        operator.wait(20)
        core.delete_namespace(namespace, grace_period_seconds=0)
    print(json.dumps({
        "count": args.count,
        "sandbox_created_to_pod_exists_s": [round(x, 3) for x in to_pod],
        "pod_ready_to_phase_running_s": [round(x, 3) for x in to_running],
        "median_created_to_pod_s": round(statistics.median(to_pod), 3),
        "median_ready_to_running_s": round(statistics.median(to_running), 3),
    }))


if __name__ == "__main__":
    main()
