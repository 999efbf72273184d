"""Watch-based caches (the informer pattern): list, then watch from the list's resourceVersion.

Every read endpoint answers from these caches; nothing does an API round trip per GET.
Failures back off exponentially up to `MAX_BACKOFF`; a 410 Gone relists at once.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api.keys import LABEL_API_KEY, KeyRecord, record_from_secret
from kubehands.api.pools.claims import claimable
from kubehands.api.runtime import secret_session_key
from kubehands.crd.constants import (
    COMPONENT_SANDBOX,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_OWNER,
    LABEL_POOL,
    LABEL_SESSION,
    MANAGED_BY,
)
from kubehands.crd.names import pod_name
from kubehands.kube import SANDBOX_POOLS, Kube, labels, raise_for_status
from kubehands.spec.constants import LABEL_RUNTIME_ID, LABEL_SESSION_KEY

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
WATCH_TIMEOUT_SECONDS = 300

ListFn = Callable[..., Awaitable[Any]]
Obj = dict[str, Any]


# The operator's sandbox pods; of each, only what runtime objects and `kubehands sandboxes` show.
POD_SELECTOR = f"{LABEL_COMPONENT}={COMPONENT_SANDBOX},{LABEL_MANAGED_BY}={MANAGED_BY}"
_POD_METADATA = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "labels")
_POD_STATUS = ("phase", "reason", "message", "podIP", "initContainerStatuses", "containerStatuses")


def trim_pod(pod: Obj) -> Obj:
    """A pod as the gateway keeps it: its identity, node and container statuses (a pod's spec and managed fields
    are most of its size, and a thousand sandboxes are a thousand pods)."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    return {
        "metadata": {k: metadata[k] for k in _POD_METADATA if k in metadata},
        "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
        "status": {k: status[k] for k in _POD_STATUS if k in status},
    }


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class LabelIndex:
    """Names of a reflector's objects grouped by a key made of labels, kept current by its events, so a
    lookup costs the size of its group, not of the cache (a thousand sandboxes, one GET each)."""

    def __init__(self, reflector: "Reflector", key: Callable[[Obj], tuple[str, ...] | None]) -> None:
        self._reflector = reflector
        self._key = key
        self._key_of: dict[str, tuple[str, ...]] = {}
        self._names: dict[tuple[str, ...], set[str]] = {}
        reflector.add_listener(self._on_event)

    def _on_event(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        old = self._key_of.pop(name, None)
        if old is not None:
            group = self._names[old]
            group.discard(name)
            if not group:
                del self._names[old]
        new = None if kind == "DELETED" else self._key(obj)
        if new is not None:
            self._key_of[name] = new
            self._names.setdefault(new, set()).add(name)

    def keys(self) -> list[tuple[str, ...]]:
        return list(self._names)

    def get(self, *key: str) -> list[Obj]:
        items = self._reflector.items
        return [items[name] for name in self._names.get(key, ()) if name in items]


class Reflector:
    """A cache of one kind of object in one namespace, kept current by list+watch."""

    def __init__(
        self,
        name: str,
        list_fn: ListFn,
        namespace: str,
        label_selector: str | None = None,
        transform: Callable[[Obj], Obj] | None = None,
    ) -> None:
        self.name = name
        self._transform = transform or (lambda obj: obj)  # what of each object is kept (memory)
        self._list_fn = list_fn
        self._namespace = namespace
        self._selector = label_selector
        self.items: dict[str, Obj] = {}
        self.synced = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[str, Obj], None]] = []

    def add_listener(self, fn: Callable[[str, Obj], None]) -> None:
        self._listeners.append(fn)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"reflector-{self.name}")

    async def load(self) -> None:
        """Fill the cache with one list and no watch (a command that reads the state once)."""
        await self._list()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait_changed(self, timeout: float) -> None:
        """Return at the next change of this cache, or after `timeout`."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    def notify_waiters(self) -> None:
        """Wake everyone in `wait_changed` (also used when derived state, like /alive, changes)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _notify(self, event: str, obj: Obj) -> None:
        self.notify_waiters()
        for fn in self._listeners:
            try:
                fn(event, obj)
            except Exception:  # a listener must never stop the watch
                log.exception("cache listener failed")

    def upsert(self, obj: Obj) -> None:
        """Record an object the gateway itself just wrote (read-your-writes before the watch sees it)."""
        name = obj["metadata"]["name"]
        if name in self.items and _rv(self.items[name]) >= _rv(obj):
            return
        self.items[name] = obj
        self._notify("MODIFIED", obj)

    def discard(self, name: str) -> None:
        obj = self.items.pop(name, None)
        if obj is not None:
            self._notify("DELETED", obj)

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self._selector:
            kwargs["label_selector"] = self._selector
        return kwargs

    async def _list(self) -> str:
        response = await self._list_fn(self._namespace, _preload_content=False, **self._kwargs())
        body = await (await raise_for_status(response)).json()  # an error's Status is no empty list
        fresh = {item["metadata"]["name"]: self._transform(item) for item in body.get("items") or []}
        for name in set(self.items) - set(fresh):
            self._notify("DELETED", self.items.pop(name))
        for name, item in fresh.items():
            if self.items.get(name) != item:
                self.items[name] = item
                self._notify("MODIFIED", item)
        self.synced.set()
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, resource_version: str) -> None:
        while True:
            stream = watch.Watch(return_type="object")  # plain dicts, like the list
            async with stream:
                async for event in stream.stream(
                    self._list_fn,
                    self._namespace,
                    resource_version=resource_version,
                    timeout_seconds=WATCH_TIMEOUT_SECONDS,
                    allow_watch_bookmarks=True,
                    _request_timeout=WATCH_TIMEOUT_SECONDS + 30,
                    **self._kwargs(),
                ):
                    kind, obj = event["type"], self._transform(event["raw_object"])
                    resource_version = str(
                        (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                    )
                    if kind == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    if kind == "DELETED":
                        self.items.pop(name, None)
                    elif name in self.items and _rv(self.items[name]) > _rv(obj):
                        continue  # older than what the gateway itself wrote (upsert)
                    else:
                        self.items[name] = obj
                    self._notify(kind, obj)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                resource_version = await self._list()
                backoff = 0.5
                await self._watch(resource_version)
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    log.info("%s watch expired; relisting", self.name)
                    continue
                log.warning("%s list/watch failed (%s); retrying in %.1fs", self.name, exc.status, backoff)
            except Exception as exc:
                log.warning("%s list/watch failed (%s); retrying in %.1fs", self.name, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)


class Caches:
    """The gateway's caches and the lookups the endpoints need.

    With `secrets=False` (a router without the control API) only Sandboxes are watched: such a router has
    no RBAC on Secrets, and checks session keys against the Sandbox's sha256 annotation instead. The two
    Secret caches then stay empty and are never started, so they never fail nor hold up readiness.

    SandboxPools are watched with the control API (only /start claims), but never hold up readiness: a cluster
    without the pool CRD, or a gateway without RBAC on pools, serves every /start cold (docs/gateway.md).
    The sandbox pods likewise (container statuses in runtime objects; empty without them).
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        keys_namespace: str,
        *,
        secrets: bool = True,
        slot_of: Callable[[str], int] | None = None,
    ) -> None:
        """`slot_of` (port mode): a runtime id's block of gateway ports (`urls.port_slot`)."""

        async def list_pools(namespace: str, **kwargs: Any) -> Any:
            return await kube.list_objects(SANDBOX_POOLS, namespace, **kwargs)

        self.sandboxes = Reflector("sandboxes", kube.list_sandboxes, namespace)
        self.pools = Reflector("pools", list_pools, namespace)
        self.pods = Reflector("pods", kube.core.list_namespaced_pod, namespace, POD_SELECTOR, trim_pod)
        self.session_keys = Reflector(
            "session-keys", kube.core.list_namespaced_secret, namespace, f"{LABEL_SESSION_KEY}=true"
        )
        self.api_keys = Reflector(
            "api-keys", kube.core.list_namespaced_secret, keys_namespace, f"{LABEL_API_KEY}=true"
        )
        self.secrets = secrets
        self._all = (self.sandboxes, self.session_keys, self.api_keys) if secrets else (self.sandboxes,)
        # Pods only give runtime objects their container statuses: without them (no RBAC) those stay empty.
        self._optional = (self.pools, self.pods) if secrets else ()
        self._by_owner = LabelIndex(self.sandboxes, lambda s: _label_key(s, LABEL_OWNER))
        self._members = LabelIndex(self.sandboxes, lambda s: _label_key(s, LABEL_POOL))
        self._by_session = LabelIndex(self.sandboxes, lambda s: _label_key(s, LABEL_OWNER, LABEL_SESSION))
        self._claims_by_runtime = LabelIndex(self.session_keys, lambda s: _label_key(s, LABEL_RUNTIME_ID))
        self._slot_of = slot_of
        self._by_slot = LabelIndex(self.sandboxes, self._slot_key) if slot_of else None
        self._key_records: list[KeyRecord] | None = None
        self._key_by_name: dict[str, KeyRecord] | None = None
        self.api_keys.add_listener(self._keys_changed)

    def _slot_key(self, sandbox: Obj) -> tuple[str, ...] | None:
        if self._slot_of is None or LABEL_POOL in labels(sandbox):  # an unclaimed pool member holds no port
            return None
        return (str(self._slot_of(sandbox["metadata"]["name"])),)

    def _keys_changed(self, kind: str, obj: Obj) -> None:
        self._key_records = None
        self._key_by_name = None

    def start(self) -> None:
        for reflector in (*self._all, *self._optional):
            reflector.start()

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in (*self._all, *self._optional)))

    async def load(self) -> None:
        """Fill every cache once, without watching (`kubehands sandboxes`). Pools and pods stay optional: without
        them (no CRD, no RBAC) nothing is claimed and no pod is shown."""
        await asyncio.gather(*(r.load() for r in self._all))
        await asyncio.gather(*(r.load() for r in self._optional), return_exceptions=True)

    @property
    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self._all)

    async def wait_synced(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.gather(*(r.synced.wait() for r in self._all)), timeout)
        except TimeoutError:
            return False
        return True

    # ---- lookups --------------------------------------------------------------------------------

    def key_records(self) -> list[KeyRecord]:
        if self._key_records is None:
            records = (record_from_secret(s) for s in self.api_keys.items.values())
            self._key_records = [r for r in records if r is not None]
        return self._key_records

    def key_record(self, name: str) -> KeyRecord | None:
        """The API key named `name`; None when unknown or when this gateway does not read API keys."""
        if not self.secrets:
            return None
        if self._key_by_name is None:
            self._key_by_name = {record.name: record for record in self.key_records()}
        return self._key_by_name.get(name)

    def sandbox(self, runtime_id: str) -> Obj | None:
        return self.sandboxes.items.get(runtime_id)

    def owned_sandboxes(self, tenant: str) -> list[Obj]:
        return self._by_owner.get(tenant)

    def session_sandboxes(self, tenant: str, session_label: str) -> list[Obj]:
        """The tenant's sandboxes labelled with this session (several: a label is a hash prefix)."""
        return self._by_session.get(tenant, session_label)

    def claim(self, name: str) -> Obj | None:
        return self.session_keys.items.get(name)

    def claim_for_runtime(self, runtime_id: str) -> Obj | None:
        claims = self._claims_by_runtime.get(runtime_id)
        return claims[0] if claims else None

    def sandboxes_in_slot(self, slot: int) -> list[Obj]:
        """Port mode: the session sandboxes whose ports are the block `slot` (one, unless made outside the gateway)."""
        return self._by_slot.get(str(slot)) if self._by_slot else []

    def claimed_in_slot(self, slot: int) -> str | None:
        """Port mode: the runtime id of a session claim (a Sandbox being created) in the block `slot`, if any."""
        if self._slot_of is None:
            return None
        for claim in self.session_keys.items.values():
            runtime_id = labels(claim).get(LABEL_RUNTIME_ID)
            if runtime_id and self._slot_of(runtime_id) == slot:
                return runtime_id
        return None

    def used_slots(self) -> set[int]:
        """Port mode: the slots of every session sandbox and of every session claim (a Sandbox being created)."""
        if self._slot_of is None or self._by_slot is None:
            return set()
        slots = {int(key[0]) for key in self._by_slot.keys()}
        for claim in self.session_keys.items.values():
            runtime_id = labels(claim).get(LABEL_RUNTIME_ID)
            if runtime_id:
                slots.add(self._slot_of(runtime_id))
        return slots

    def pool_list(self) -> list[Obj]:
        """The SandboxPools, by name (empty while their watch has not synced or cannot run)."""
        return [self.pools.items[name] for name in sorted(self.pools.items)]

    def claimable_members(self, pool: Obj) -> list[Obj]:
        """The pool's members a /start may claim now (`pools.claimable`)."""
        return [m for m in self._members.get(str(pool["metadata"]["name"])) if claimable(m, pool)]

    def pod(self, runtime_id: str) -> Obj | None:
        """The sandbox's pod (trimmed, `trim_pod`); None when it has none or pods are not watched."""
        return self.pods.items.get(pod_name(runtime_id))

    def session_key(self, sandbox: Obj) -> str | None:
        """The sandbox's session key from the Secret cache; None when unknown (or Secrets are not watched)."""
        ref = (sandbox.get("spec") or {}).get("sessionKeySecretRef") or {}
        return secret_session_key(self.session_keys.items.get(str(ref.get("name") or "")))


def _label_key(obj: Obj, *keys: str) -> tuple[str, ...] | None:
    found = labels(obj)
    values = tuple(found.get(key) for key in keys)
    return None if None in values else values  # type: ignore[return-value]
