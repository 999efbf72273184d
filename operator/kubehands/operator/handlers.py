"""kopf handlers: thin wrappers that find the Sandbox and its pod, then call `reconcile.converge`.

Triggers, all level-based (each one recomputes everything from current state):
- Sandbox resume/create/update: the spec changed, or the operator (re)started;
- any event of a kubehands pod: the pod progressed, crashed, or vanished;
- the culling loop (`cull_forever`): idle culling, paused TTL, and a safety net for missed pod events.
"""

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from kubehands.crd import constants
from kubehands.kube import SANDBOXES
from kubehands.operator import reconcile
from kubehands.operator.culling import CullAction, cull_decision
from kubehands.operator.plan import drifted

log = logging.getLogger(__name__)
SANDBOX_PODS = {
    constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
    constants.LABEL_COMPONENT: constants.COMPONENT_SANDBOX,
}


@kopf.index(**SANDBOXES.coordinates())
def sandbox_bodies(
    namespace: str, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """Latest body of every Sandbox, for the culling loop (indexes need no finalizer, unlike timers)."""
    return {(namespace, name): dict(body)}


@kopf.index("pods", labels=SANDBOX_PODS)
def sandbox_pods(
    namespace: str, annotations: kopf.Annotations, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    owner = annotations.get(constants.ANNOTATION_SANDBOX_NAME)
    return {(namespace, owner): dict(body)} if owner else {}


def _indexed_pod(index: kopf.Index, namespace: str, name: str) -> Mapping[str, Any] | None:
    return next(iter(index.get((namespace, name), [])), None)


async def _converge(memo: kopf.Memo, index: kopf.Index, namespace: str, name: str) -> list[str]:
    lock = memo.locks.get((namespace, name))
    if lock is None:
        lock = memo.locks[(namespace, name)] = asyncio.Lock()
    async with lock:  # `lock` stays referenced while held, so the weak dict keeps it
        return await reconcile.converge(
            memo.kube, memo.config, namespace, name, lambda: _indexed_pod(index, namespace, name)
        )


@kopf.on.resume(**SANDBOXES.coordinates())
@kopf.on.create(**SANDBOXES.coordinates())
@kopf.on.update(**SANDBOXES.coordinates())
async def reconcile_sandbox(
    namespace: str, name: str, memo: kopf.Memo, sandbox_pods: kopf.Index, **_: Any
) -> None:
    problems = await _converge(memo, sandbox_pods, namespace, name)
    if problems:
        # Status already says Ready=False/InvalidSpec; retrying cannot help until the spec changes.
        raise kopf.PermanentError("invalid spec: " + "; ".join(problems))


@kopf.on.event("pods", labels=SANDBOX_PODS)
async def pod_changed(
    namespace: str, annotations: kopf.Annotations, memo: kopf.Memo, sandbox_pods: kopf.Index, **_: Any
) -> None:
    owner = annotations.get(constants.ANNOTATION_SANDBOX_NAME)
    if owner and "kube" in memo:
        await _converge(memo, sandbox_pods, namespace, owner)


async def cull_and_resync(memo: kopf.Memo, body: Mapping[str, Any], pods: kopf.Index) -> None:
    """One Sandbox's periodic check: pause when idle, delete when paused too long, else heal drift."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    decision = cull_decision(body, memo.config, datetime.now(UTC))
    if decision is not None and decision.action == CullAction.PAUSE:
        if await reconcile.pause_idle_sandbox(memo.kube, body):  # the update handler then deletes the pod
            log.info("paused idle sandbox %s/%s: %s", namespace, name, decision.message)
    elif decision is not None and decision.action == CullAction.DELETE:
        if await reconcile.delete_expired_sandbox(memo.kube, body):
            log.info("deleted sandbox %s/%s: %s", namespace, name, decision.message)
    elif drifted(body, _indexed_pod(pods, namespace, name)):
        await _converge(memo, pods, namespace, name)


async def cull_forever(memo: kopf.Memo, sandboxes: kopf.Index, pods: kopf.Index) -> None:
    """The operator-wide culling loop, started at startup.

    Not a `@kopf.timer`: kopf puts a finalizer on every object that has a timer, and a finalizer would
    make Sandboxes undeletable whenever the operator is down or uninstalled.
    """
    while True:
        await asyncio.sleep(memo.config.cull_interval_seconds)
        for store in list(sandboxes.values()):
            for body in list(store):
                try:
                    await cull_and_resync(memo, body, pods)
                except Exception:  # noqa: BLE001 - one broken Sandbox must not stop culling for all
                    log.exception(
                        "culling %s/%s failed",
                        body["metadata"].get("namespace"),
                        body["metadata"].get("name"),
                    )
