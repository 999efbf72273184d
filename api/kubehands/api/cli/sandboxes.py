"""`kubehands sandboxes list | get | stop | pause | resume | logs`: the sandboxes of every key, for an administrator.

Built on the gateway's own parts rather than beside them: the Sandboxes, session keys, API keys and sandbox pods are
read with the gateway's caches (`Caches.load`: one list each, no watch); `status` is the runtime API's
(`runtime.runtime_status`); pause, resume and stop are the gateway's `SandboxService` calls made as the sandbox's
owner key, so they do what the runtime API does (a resume checks that key's running limit, a stop deletes the
session Secret too); the details and the log come from `pod_details`. A sandbox is named by its runtime id or its
session id (`--key` tells sessions of different keys apart). Settings the gateway reads from `KUBEHANDS_*`
(e.g. `KUBEHANDS_ROTATE_SESSION_KEY_ON_RESUME`) apply here the same way.
"""

import argparse
import asyncio
import codecs
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException
from pydantic import ValidationError

from kubehands.api.errors import GatewayError, api_exception_detail
from kubehands.api.gateway import Gateway
from kubehands.api.keys import KeyRecord
from kubehands.api.observe.pod_details import container_statuses, read_events, read_log, shape_events
from kubehands.api.runtime import is_pool_member, runtime_status, sandbox_session_id
from kubehands.api.settings import Settings
from kubehands.cli_options import add_options
from kubehands.crd.activity import last_activity
from kubehands.crd.constants import ANNOTATION_CLAIMED_FROM, LABEL_OWNER
from kubehands.crd.model import DesiredState
from kubehands.crd.times import parse_time
from kubehands.kube import Kube, labels

Obj = dict[str, Any]

COLUMNS = (
    ("RUNTIME ID", "runtime_id"),
    ("SESSION ID", "session_id"),
    ("KEY", "key"),
    ("STATE", "state"),
    ("PHASE", "phase"),
    ("STATUS", "status"),
    ("POD", "pod_status"),
    ("RESTARTS", "restarts"),
    ("NODE", "node"),
    ("AGE", "age"),
    ("IDLE", "idle"),
    ("POOL", "pool"),
)
MAX_SESSION_ID_SHOWN = 40  # in the table; `-o json` and `get` show it whole


class CommandError(Exception):
    """A one-line error for the user (exit code 1)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sandboxes_command", required=True)
    listing = sub.add_parser("list", help="list sandboxes (pool members not yet claimed are left out)")
    listing.add_argument("--key", help="only the sandboxes of this API key")
    listing.add_argument("-o", "--output", choices=("table", "json"), default="table")
    get = sub.add_parser("get", help="one sandbox: status, containers, recent events")
    get.add_argument("-o", "--output", choices=("text", "json"), default="text")
    for name, text in (
        ("pause", "pause a sandbox (its pod goes, its workspace stays), as POST /pause does"),
        ("resume", "resume a paused sandbox, as POST /resume does (within its key's running limit)"),
        ("stop", "delete a sandbox with its pod, workspace and session key, as POST /stop does"),
    ):
        sub.add_parser(name, help=text)
    logs = sub.add_parser("logs", help="print the sandbox container's log")
    logs.add_argument("--tail", type=int, help="only the last N lines")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-p", "--previous", action="store_true", help="the previous (crashed) run's log")
    for command in (get, logs, *(sub.choices[n] for n in ("pause", "resume", "stop"))):
        command.add_argument("id", help="runtime id or session id")
        command.add_argument("--key", help="the API key whose session this is (when several keys use the id)")
    # Before or after the subcommand.
    add_options(parser, sub.choices.values(), [
        (("--kubeconfig",), {"default": os.environ.get("KUBEHANDS_KUBECONFIG"), "help": "kubeconfig path"}),
        (("-n", "--namespace"), {"default": os.environ.get("KUBEHANDS_NAMESPACE") or "default",
                                 "help": "namespace of the Sandboxes (KUBEHANDS_NAMESPACE)"}),
        (("--keys-namespace",), {"default": os.environ.get("KUBEHANDS_KEYS_NAMESPACE"),
                                 "help": "namespace of the API-key Secrets (KUBEHANDS_KEYS_NAMESPACE; default: -n)"}),
    ])


def run(args: argparse.Namespace) -> int:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _interruptible(args)
    # Called where an event loop runs (async code, a notebook): the command gets a loop of its own in a thread.
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(_interruptible, args).result()


def _interruptible(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:  # Ctrl-C ends `logs -f`
        return 130


async def _run(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "tail", None) is not None and args.tail < 0:
            raise ValueError("--tail must be 0 or more")
        if args.kubeconfig and not os.path.isfile(args.kubeconfig):
            raise ValueError(f"no kubeconfig file at {args.kubeconfig}")
        settings = Settings(namespace=args.namespace, keys_namespace=args.keys_namespace, kubeconfig=args.kubeconfig)
        kube = await Kube.connect(settings.kubeconfig, settings.kube_request_timeout_seconds)
        gateway = Gateway.assemble(settings, kube, httpx.AsyncClient(trust_env=False))
        try:
            await gateway.caches.load()
            await _execute(gateway, args)
        finally:
            await gateway.close()
    except (CommandError, GatewayError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiException as exc:
        print(f"error: Kubernetes API: {exc.status} {api_exception_detail(exc)}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, TimeoutError) as exc:  # before OSError, which both can be
        print(f"error: Kubernetes API not reachable: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    except ValidationError as exc:  # the KUBEHANDS_* settings, on one line
        print(f"error: invalid settings: {'; '.join(str(e['msg']) for e in exc.errors())}", file=sys.stderr)
        return 2
    except ConfigException as exc:
        print(f"error: kubeconfig: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# ---- pure parts -----------------------------------------------------------------------------------------


def owner(sandbox: Obj) -> str:
    return labels(sandbox).get(LABEL_OWNER, "")


def duration(seconds: float | None) -> str:
    """A short human duration: 42s, 5m, 3h12m, 2d4h; "-" for none."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m" if s % 3600 >= 60 else f"{s // 3600}h"
    return f"{s // 86400}d{s % 86400 // 3600}h" if s % 86400 >= 3600 else f"{s // 86400}d"


def _since(value: Any, now: datetime) -> float | None:
    moment = parse_time(value) if not isinstance(value, datetime) else value
    return (now - moment).total_seconds() if moment else None


def row(sandbox: Obj, pod: Obj | None, now: datetime) -> Obj:
    """One sandbox as `list` shows it. `status` is the runtime API's, taking a ready pod as answering /alive
    (the command cannot reach pods); `idle` is what the idle culler measures, for running sandboxes only."""
    spec, status = sandbox.get("spec") or {}, sandbox.get("status") or {}
    state = str(spec.get("state") or DesiredState.RUNNING.value)
    runtime, _ = runtime_status(sandbox, alive=True)
    claimed_from = ((sandbox.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_CLAIMED_FROM)
    return {
        "runtime_id": sandbox["metadata"]["name"],
        "session_id": sandbox_session_id(sandbox),
        "key": owner(sandbox),
        "state": state,
        "phase": str(status.get("phase") or ""),
        "status": runtime.value,
        "pod_status": str(status.get("podStatus") or ""),
        "restarts": int(status.get("restartCount") or 0),
        "node": str(((pod or {}).get("spec") or {}).get("nodeName") or ""),
        "age_seconds": _since((sandbox.get("metadata") or {}).get("creationTimestamp"), now),
        "idle_seconds": _since(last_activity(sandbox), now) if state != DesiredState.PAUSED else None,
        "pool": f"warm:{claimed_from}" if claimed_from else "cold",
    }


def table(rows: list[Obj]) -> str:
    def cell(r: Obj, field: str) -> str:
        if field in ("age", "idle"):
            return duration(r[f"{field}_seconds"])
        value = str(r[field]) if r[field] not in ("", None) else "-"
        if field == "session_id" and len(value) > MAX_SESSION_ID_SHOWN:
            value = value[: MAX_SESSION_ID_SHOWN - 3] + "..."
        return value

    cells = [[title for title, _ in COLUMNS], *([cell(r, f) for _, f in COLUMNS] for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells)


def resolve(sandboxes: list[Obj], ident: str, key: str | None) -> Obj:
    """The sandbox named by runtime id, else by session id (the newest one not being deleted), of `key` when given.

    Unclaimed pool members are nobody's sandbox and are never named."""
    mine = [s for s in sandboxes if not is_pool_member(s) and (key is None or owner(s) == key)]
    by_id = [s for s in mine if s["metadata"]["name"] == ident]
    if by_id:
        return by_id[0]
    matches = [s for s in mine if sandbox_session_id(s) == ident]
    of = f" of key {key!r}" if key else ""
    if not matches:
        raise CommandError(f"no sandbox {ident!r}{of} (neither a runtime id nor a session id)")
    owners = sorted({owner(s) for s in matches})
    if len(owners) > 1:
        raise CommandError(f"session id {ident!r} is used by several keys ({', '.join(owners)}): add --key")
    live = [s for s in matches if not s["metadata"].get("deletionTimestamp")]
    return max(live or matches, key=lambda s: str(s["metadata"].get("creationTimestamp") or ""))


# ---- commands -------------------------------------------------------------------------------------------


async def _execute(gateway: Gateway, args: argparse.Namespace) -> None:
    caches = gateway.caches
    now = datetime.now(UTC)
    sandboxes = list(caches.sandboxes.items.values())
    command = args.sandboxes_command
    if command == "list":
        chosen = [s for s in sandboxes if not is_pool_member(s) and (args.key is None or owner(s) == args.key)]
        chosen.sort(key=lambda s: (owner(s), str(s["metadata"].get("creationTimestamp") or "")))
        rows = [row(s, caches.pod(s["metadata"]["name"]), now) for s in chosen]
        print(json.dumps(rows, indent=2) if args.output == "json" else table(rows))
        return
    sandbox = resolve(sandboxes, args.id, args.key)
    name = sandbox["metadata"]["name"]
    if command == "get":
        await _get(gateway, sandbox, now, args.output)
    elif command == "logs":
        await _logs(gateway, sandbox, args)
    else:
        # As the owner key: the limit a resume checks is that key's (the defaults when it was revoked since).
        caller = caches.key_record(owner(sandbox)) or KeyRecord(name=owner(sandbox), digest="")
        service = gateway.sandboxes
        if command == "pause":
            runtime = await service.pause(caller, name)
        elif command == "resume":
            runtime = await service.resume(caller, name)
        else:
            await service.stop(caller, name)
            runtime = None
        done = {"pause": "paused", "resume": "resumed", "stop": "stopped"}[command]
        now_status = f"; status {runtime.status.value}" if runtime is not None else ""
        print(
            f"{done} sandbox {name!r} (session {sandbox_session_id(sandbox)!r}, key {owner(sandbox)!r}){now_status}",
            file=sys.stderr,
        )


async def _get(gateway: Gateway, sandbox: Obj, now: datetime, output: str) -> None:
    name = sandbox["metadata"]["name"]
    status = sandbox.get("status") or {}
    try:
        events = shape_events(await read_events(gateway.kube, gateway.settings.namespace, name))
    except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as exc:
        events = []
        print(f"warning: could not read the events: {exc}", file=sys.stderr)
    details = {
        **row(sandbox, gateway.caches.pod(name), now),
        "image": str((sandbox.get("spec") or {}).get("image") or ""),
        "message": str(status.get("message") or ""),
        "restart_reasons": list(status.get("restartReasons") or []),
        "container_statuses": container_statuses(gateway.caches.pod(name)),
        "events": events,
    }
    if output == "json":
        print(json.dumps(details, indent=2))
        return
    d = details
    lines = [
        f"Runtime ID: {d['runtime_id']}",
        f"Session ID: {d['session_id']}",
        f"Key: {d['key']}",
        f"State: {d['state']}",
        f"Phase: {d['phase'] or '-'}",
        f"Status: {d['status']}",
        f"Pod: {d['pod_status'] or '-'} (restarts {d['restarts']}, node {d['node'] or '-'})",
        f"Age: {duration(d['age_seconds'])}",
        f"Idle: {duration(d['idle_seconds'])}",
        f"Pool: {d['pool']}",
        f"Image: {d['image']}",
        f"Message: {d['message'] or '-'}",
    ]
    lines += [f"Restart reasons: {'; '.join(details['restart_reasons']) or '-'}", "Containers:"]
    for cs in details["container_statuses"]:
        how = cs["state"] + (f" ({cs['reason']})" if cs["reason"] else "")
        if cs["exit_code"] is not None:
            how += f", exit code {cs['exit_code']}"
        last = cs["last_termination"]
        if last:
            how += f"; last run: {last['reason']}, exit code {last['exit_code']}"
        lines.append(f"  {cs['name']}: {how}, restarts {cs['restart_count']}, ready {str(cs['ready']).lower()}")
        if cs["message"]:
            lines.append(f"    {cs['message']}")
    lines.append("Events:")
    lines += [f"  {e['time']}  {e['type']}  {e['reason']}  {e['object']}: {e['message']}" for e in events]
    print("\n".join(lines))


async def _logs(gateway: Gateway, sandbox: Obj, args: argparse.Namespace) -> None:
    name = sandbox["metadata"]["name"]
    pod = gateway.caches.pod(name)
    if pod is None:
        state = (sandbox.get("spec") or {}).get("state") or "Running"
        raise CommandError(f"sandbox {name!r} has no pod now (state {state}, phase {_phase(sandbox)})")
    # Following has no end; otherwise the whole log may take a while to arrive: only connecting is bounded.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=gateway.settings.kube_request_timeout_seconds)
    try:
        response = await read_log(
            gateway.kube,
            gateway.settings.namespace,
            str(pod["metadata"]["name"]),
            tail_lines=args.tail,
            previous=args.previous,
            follow=args.follow,
            timeout=timeout,
        )
    except ApiException as exc:
        if exc.status == 400:  # the kubelet's refusal, e.g. "container ... is waiting to start: ..."
            raise CommandError(api_exception_detail(exc)) from None
        raise
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    async for chunk in response.content.iter_any():
        sys.stdout.write(decoder.decode(chunk))
        sys.stdout.flush()
    sys.stdout.write(decoder.decode(b"", final=True))
    sys.stdout.flush()


def _phase(sandbox: Obj) -> str:
    return str((sandbox.get("status") or {}).get("phase") or "unknown")
