"""What a runtime object says about its pod beyond the status pair: container statuses, recent events and the last
lines of the sandbox container's log (docs/runtime-api.md §2.1, docs/gateway.md#pod-details).

Clients poll a starting sandbox every second or two, so nothing here is an API call per poll:
- container statuses come from the pod watch cache (`Caches.pods`), for every sandbox;
- events and log lines are fetched only for a sandbox that is `starting` or in `error`, in the background, at most
  once per `pod_details_ttl_seconds` per sandbox (a read answers with what was fetched last and, when that is older,
  starts one refresh), a few at a time, each call bounded (events of one object, `tailLines`, `limitBytes`, a timeout).
  The log is read only once the container has run. A failing API server leaves the last values (empty at first).

The shaping functions are pure; `kubehands sandboxes` uses them and `read_log` too.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api.observe import metrics
from kubehands.api.runtime import Details
from kubehands.api.schemas import RuntimeStatus
from kubehands.api.settings import Settings
from kubehands.crd.constants import SANDBOX_CONTAINER_NAME
from kubehands.crd.times import parse_time
from kubehands.kube import Kube, raise_for_status

log = logging.getLogger(__name__)

Obj = dict[str, Any]

MAX_EVENTS = 20  # the newest ones
MAX_EVENTS_LISTED = 200  # one object's events are few (the API server aggregates repeats); a bound all the same
MAX_MESSAGE_CHARS = 1024  # of one event or container-state message
FETCH_TIMEOUT_SECONDS = 5.0
MAX_CONCURRENT_FETCHES = 4  # per gateway replica: a burst of starting sandboxes never floods the API server
# What a runtime object carries events and log lines for: a sandbox being started or failed (never a running one).
DETAILED = (RuntimeStatus.STARTING, RuntimeStatus.ERROR)


def _bounded(value: Any) -> str:
    text = str(value or "").strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _state(state: Obj | None) -> tuple[str, Obj]:
    """("waiting" | "running" | "terminated" | "unknown", that state's details)."""
    for name in ("waiting", "running", "terminated"):
        detail = (state or {}).get(name)
        if detail is not None:
            return name, detail
    return "unknown", {}


def container_statuses(pod: Obj | None) -> list[Obj]:
    """The pod's container statuses, init containers first, in the runtime object's shape:
    `{name, image, init, ready, restart_count, state, reason, message, exit_code, last_termination}`, where
    `last_termination` (`{reason, exit_code, message, finished_at}` or null) is how the previous run ended."""
    status = (pod or {}).get("status") or {}
    shaped = []
    for init, statuses in ((True, status.get("initContainerStatuses")), (False, status.get("containerStatuses"))):
        for cs in statuses or []:
            state, detail = _state(cs.get("state"))
            last = (cs.get("lastState") or {}).get("terminated")
            shaped.append(
                {
                    "name": str(cs.get("name") or ""),
                    "image": str(cs.get("image") or ""),
                    "init": init,
                    "ready": bool(cs.get("ready")),
                    "restart_count": int(cs.get("restartCount") or 0),
                    "state": state,
                    "reason": str(detail.get("reason") or ""),
                    "message": _bounded(detail.get("message")),
                    "exit_code": detail.get("exitCode"),
                    "last_termination": {
                        "reason": str(last.get("reason") or ""),
                        "exit_code": last.get("exitCode"),
                        "message": _bounded(last.get("message")),
                        "finished_at": last.get("finishedAt"),
                    }
                    if last
                    else None,
                }
            )
    return shaped


def _event_time(event: Obj) -> str:
    moment = None
    for value in (
        event.get("lastTimestamp"),
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        try:
            moment = parse_time(value)
        except (TypeError, ValueError):
            continue
        if moment is not None:
            break
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def shape_events(items: list[Obj], limit: int = MAX_EVENTS) -> list[Obj]:
    """Core v1 Events (API JSON) as the runtime object's `events`, oldest first, the newest `limit`:
    `{type, reason, message, count, object, time}` (`object` is `Kind/name`, `time` the last occurrence)."""
    shaped: list[Obj] = [
        {
            "type": str(e.get("type") or ""),
            "reason": str(e.get("reason") or ""),
            "message": _bounded(e.get("message") or e.get("note")),
            "count": int(e.get("count") or (e.get("series") or {}).get("count") or 1),
            "object": "/".join(
                str(part)
                for part in ((e.get("involvedObject") or {}).get("kind"), (e.get("involvedObject") or {}).get("name"))
                if part
            ),
            "time": _event_time(e),
        }
        for e in items
    ]
    shaped.sort(key=lambda e: str(e["time"]))  # RFC 3339 in UTC, one spelling: sorts as text
    return shaped[-limit:] if limit > 0 else []


def log_source(pod: Obj | None, container: str = SANDBOX_CONTAINER_NAME) -> tuple[str, bool] | None:
    """(container, previous) whose log is worth reading, or None while the container never ran (no image yet:
    the kubelet would answer 400). A container waiting to be restarted has only its previous run's log."""
    for cs in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") != container:
            continue
        state, _ = _state(cs.get("state"))
        if state in ("running", "terminated"):
            return container, False
        if (cs.get("lastState") or {}).get("terminated"):
            return container, True
    return None


def last_lines(text: str, lines: int, max_bytes: int) -> str:
    """The last `lines` lines of `text`, and no more than `max_bytes` of UTF-8 (cut at a line start when one
    fits)."""
    kept = text.splitlines()[-lines:] if lines > 0 else []
    out = "\n".join(kept)
    encoded = out.encode("utf-8")
    if len(encoded) > max_bytes:
        out = encoded[-max_bytes:].decode("utf-8", errors="ignore")
        if "\n" in out:
            out = out.split("\n", 1)[1]
    return out


async def read_log(
    kube: Kube,
    namespace: str,
    pod: str,
    *,
    container: str = SANDBOX_CONTAINER_NAME,
    tail_lines: int | None = None,
    limit_bytes: int | None = None,
    previous: bool = False,
    timeout: float | aiohttp.ClientTimeout = FETCH_TIMEOUT_SECONDS,
    follow: bool = False,
) -> Any:
    """The log call (`_preload_content=False`: the caller reads the answer's body, or streams it with `follow`)."""
    kwargs: Obj = {"container": container, "previous": previous, "follow": follow}
    if tail_lines is not None:
        kwargs["tail_lines"] = tail_lines
    if limit_bytes is not None:
        kwargs["limit_bytes"] = limit_bytes
    response = await kube.core.read_namespaced_pod_log(
        pod, namespace, _preload_content=False, _request_timeout=timeout, **kwargs
    )
    return await raise_for_status(response)


async def read_events(kube: Kube, namespace: str, name: str, timeout: float = FETCH_TIMEOUT_SECONDS) -> list[Obj]:
    """The events of every object named `name`: the Sandbox (the operator's) and its pod (the scheduler's and the
    kubelet's), which share the name (`kubehands.crd.names.pod_name`)."""
    response = await kube.core.list_namespaced_event(
        namespace,
        field_selector=f"involvedObject.name={name}",
        limit=MAX_EVENTS_LISTED,
        _preload_content=False,
        _request_timeout=timeout,
    )
    body = await (await raise_for_status(response)).json()
    return list(body.get("items") or [])


@dataclass
class _Fetched:
    pod_uid: str | None
    at: float
    events: list[Obj] = field(default_factory=list)
    pod_logs: str = ""


class PodDetails:
    """Events and log lines of starting and failed sandboxes, refreshed in the background at most once per TTL each."""

    def __init__(
        self,
        settings: Settings,
        kube: Kube,
        pod_of: Callable[[str], Obj | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self._pod_of = pod_of  # runtime id -> its pod, as the watch cache holds it
        self._clock = clock
        self._fetched: dict[str, _Fetched] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)

    def details(self, runtime_id: str, status: RuntimeStatus, *, fetch: bool = True) -> Details:
        """The sandbox's details now. With `fetch`, events and log lines older than the TTL are refreshed in the
        background (this read answers with the previous ones)."""
        pod = self._pod_of(runtime_id)
        statuses = container_statuses(pod)
        if status not in DETAILED:
            self.forget(runtime_id)  # running, paused, stopped: nothing kept, nothing fetched
            return Details(container_statuses=statuses)
        pod_uid = _uid(pod)
        fetched = self._fetched.get(runtime_id)
        if fetched is not None and fetched.pod_uid != pod_uid:  # another pod: the old one's lines are not its
            fetched = None
        if fetch and (fetched is None or self._clock() - fetched.at >= self._settings.pod_details_ttl_seconds):
            self._refresh(runtime_id, pod_uid, fetched)
        if fetched is None:
            return Details(container_statuses=statuses)
        return Details(container_statuses=statuses, events=fetched.events, pod_logs=fetched.pod_logs)

    def on_event(self, kind: str, sandbox: Obj) -> None:
        """A Sandbox watch event: a deleted sandbox is forgotten (the map never grows with every sandbox ever seen)."""
        if kind == "DELETED":
            self.forget(str(sandbox["metadata"]["name"]))

    def forget(self, runtime_id: str) -> None:
        self._fetched.pop(runtime_id, None)
        task = self._tasks.pop(runtime_id, None)
        if task is not None:
            task.cancel()

    def _refresh(self, runtime_id: str, pod_uid: str | None, previous: _Fetched | None) -> None:
        if runtime_id in self._tasks:
            return  # one refresh per sandbox at a time
        # Stamped now, before the calls: reads during and after a failed fetch wait for the next TTL.
        self._fetched[runtime_id] = _Fetched(
            pod_uid, self._clock(), previous.events if previous else [], previous.pod_logs if previous else ""
        )
        fetch = self._fetch(runtime_id, pod_uid)
        task = asyncio.get_running_loop().create_task(fetch, name=f"pod-details-{runtime_id}")
        self._tasks[runtime_id] = task
        task.add_done_callback(lambda done: self._forget_task(runtime_id, done))

    def _forget_task(self, runtime_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(runtime_id) is task:
            del self._tasks[runtime_id]

    async def _fetch(self, runtime_id: str, pod_uid: str | None) -> None:
        namespace = self._settings.namespace
        async with self._slots:
            events = await self._guarded(runtime_id, "events", read_events(self._kube, namespace, runtime_id))
            logs = None
            source = log_source(self._pod_of(runtime_id))
            if source is not None and self._settings.pod_log_tail_lines > 0:
                logs = await self._guarded(runtime_id, "log", self._read_log(runtime_id, *source))
        fetched = self._fetched.get(runtime_id)
        if fetched is None or fetched.pod_uid != pod_uid:
            return  # forgotten, or another pod meanwhile
        if events is not None:
            fetched.events = shape_events(events)
        if logs is not None:
            fetched.pod_logs = logs

    async def _read_log(self, pod: str, container: str, previous: bool) -> str:
        settings = self._settings
        response = await read_log(
            self._kube,
            settings.namespace,
            pod,
            container=container,
            tail_lines=settings.pod_log_tail_lines,
            limit_bytes=settings.pod_log_max_bytes,
            previous=previous,
        )
        text = (await response.read()).decode("utf-8", errors="replace")
        return last_lines(text, settings.pod_log_tail_lines, settings.pod_log_max_bytes)

    async def _guarded(self, runtime_id: str, what: str, call: Awaitable[Any]) -> Any:
        """The call's result; None when the API server fails, is unreachable or slow (the field keeps its value)."""
        try:
            result = await asyncio.wait_for(call, FETCH_TIMEOUT_SECONDS + 1)
        except (ApiException, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            metrics.POD_DETAIL_CALLS.labels(what, "error").inc()
            status = exc.status if isinstance(exc, ApiException) else type(exc).__name__
            log.debug("could not read the %s of sandbox %s (%s)", what, runtime_id, status)
            return None
        metrics.POD_DETAIL_CALLS.labels(what, "ok").inc()
        return result

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _uid(pod: Obj | None) -> str | None:
    uid = ((pod or {}).get("metadata") or {}).get("uid")
    return str(uid) if uid else None
