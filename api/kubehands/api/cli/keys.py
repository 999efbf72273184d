"""`kubehands keys create NAME | list | revoke NAME [--delete-sandboxes]`: manage API keys (Secrets holding sha256
hashes).

The raw key is printed once, at creation; only its hash is stored. `revoke` does all of a revocation itself, so it
holds with no gateway running: it marks the key's admission ledger revoked (no request admits anything for the key
from then on: `kubehands.api.admission`), deletes the key, and pauses the key's sandboxes (or deletes them, with their
session Secrets). `create` of a revoked name takes the revocation back: the name's paused sandboxes are the new key's.
"""

import argparse
import asyncio
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from kubehands.api.admission import Ledgers
from kubehands.api.keys import (
    LABEL_API_KEY,
    build_key_secret,
    generate_key,
    hash_key,
    record_from_secret,
    secret_name,
    validate_key_name,
)
from kubehands.cli_options import add_options
from kubehands.crd.constants import LABEL_OWNER
from kubehands.crd.model import DesiredState
from kubehands.kube import CONFLICT, NOT_FOUND, Kube, json_body
from kubehands.spec.constants import LABEL_SESSION_KEY
from kubehands.spec.profile import Profile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("name", help="key name = tenant (lower-case letters, digits, '-')")
    create.add_argument(
        "--profile", type=Path, help="YAML/JSON sandbox profile (volumes, env, nodeSelector, ...)"
    )
    create.add_argument("--max-running", type=int, help="running-sandbox limit for this key")
    create.add_argument(
        "--max-lifetime-seconds", type=int, help="ceiling of the lifetime of each sandbox this key starts"
    )
    sub.add_parser("list", help="list key names and their profiles")
    revoke = sub.add_parser("revoke", help="delete a key and pause its sandboxes")
    revoke.add_argument("name")
    revoke.add_argument(
        "--delete-sandboxes", action="store_true", help="delete the key's sandboxes (and their workspaces) instead"
    )
    # Before or after the subcommand.
    kubeconfig = {"default": os.environ.get("KUBEHANDS_KUBECONFIG"), "help": "kubeconfig path"}
    namespace = {
        "default": os.environ.get("KUBEHANDS_KEYS_NAMESPACE") or os.environ.get("KUBEHANDS_NAMESPACE") or "default",
        "help": "namespace of the key Secrets (the gateway's namespace)",
    }
    sandbox_namespace = {
        "default": os.environ.get("KUBEHANDS_NAMESPACE"),
        "help": "namespace of the sandboxes (the gateway's KUBEHANDS_NAMESPACE); default: the keys' namespace",
    }
    add_options(
        parser,
        sub.choices.values(),
        [
            (("--kubeconfig",), kubeconfig),
            (("-n", "--namespace"), namespace),
            (("--sandbox-namespace",), sandbox_namespace),
        ],
    )


def load_profile(path: Path | None, max_running: int | None, max_lifetime_seconds: int | None = None) -> Profile:
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {} if path else {}
    if max_running is not None:
        data["maxRunning"] = max_running
    if max_lifetime_seconds is not None:
        data["maxLifetimeSeconds"] = max_lifetime_seconds
    return Profile.model_validate(data)


def run(args: argparse.Namespace) -> int:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_run(args))
    # Called from a thread whose event loop is running (async code, a notebook), where asyncio.run
    # refuses: the command gets a loop of its own in a worker thread.
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(asyncio.run, _run(args)).result()


async def _run(args: argparse.Namespace) -> int:
    try:
        # Bad input is refused before any connection to the API server.
        name = validate_key_name(args.name) if args.keys_command in ("create", "revoke") else ""
        profile = (
            load_profile(args.profile, args.max_running, args.max_lifetime_seconds)
            if args.keys_command == "create"
            else Profile()
        )
        kube = await Kube.connect(args.kubeconfig)
        try:
            sandboxes = args.sandbox_namespace or args.namespace
            if args.keys_command == "revoke":
                explicit = bool(args.sandbox_namespace)
                await _revoke(kube, args.namespace, sandboxes, name, delete=args.delete_sandboxes, again=explicit)
                if not explicit and not await _owns_any(kube, sandboxes, name):
                    print(
                        f"no sandboxes of key {name!r} in namespace {sandboxes!r}; if the gateway's sandboxes are in "
                        "another namespace, run this again there with --sandbox-namespace",
                        file=sys.stderr,
                    )
            else:
                await _execute(kube, args.keys_command, args.namespace, sandboxes, name, profile)
        finally:
            await kube.close()
    except ApiException as exc:
        if exc.status == CONFLICT:
            print(f"error: key {args.name!r} already exists", file=sys.stderr)
        elif exc.status == NOT_FOUND:
            print(f"error: no key {args.name!r}", file=sys.stderr)
        else:
            print(f"error: Kubernetes API: {exc.status} {exc.reason}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, TimeoutError) as exc:  # caught before OSError, which both can be
        print(f"error: Kubernetes API not reachable: {exc}", file=sys.stderr)
        return 1
    except (ValueError, ValidationError, OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


async def _execute(kube: Kube, command: str, namespace: str, sandboxes: str, name: str, profile: Profile) -> None:
    if command == "create":
        await Ledgers(kube.core, sandboxes).clear_revoked(name)  # a revoked name is given back (its sandboxes too)
        raw = generate_key()
        secret = build_key_secret(name, hash_key(raw), profile, namespace)
        await kube.core.create_namespaced_secret(namespace, json_body(secret, client.V1Secret))
        print(raw)
        print(f"created key {name!r}; store it now, it cannot be shown again", file=sys.stderr)
    elif command == "list":
        found = await kube.core.list_namespaced_secret(namespace, label_selector=f"{LABEL_API_KEY}=true")
        for item in found.items:
            record = record_from_secret(kube.to_dict(item))
            if record is not None:
                listed = record.profile.model_dump(by_alias=True, exclude_defaults=True)
                print(f"{record.name}\t{json.dumps(listed)}")


async def _owns_any(kube: Kube, namespace: str, name: str) -> bool:
    listed = await kube.list_sandboxes(namespace, label_selector=f"{LABEL_OWNER}={name}", limit=1)
    return bool(listed.get("items"))


async def _revoke(kube: Kube, namespace: str, sandboxes: str, name: str, *, delete: bool, again: bool) -> None:
    """Revoke first (nothing is admitted for the key from then on), then delete the key, then its sandboxes stop
    holding resources: paused, or deleted. `again` (a sandbox namespace given): a key already deleted is revoked in
    that namespace all the same (a revocation that named the wrong one, or a key deleted by hand)."""
    try:
        await kube.core.read_namespaced_secret(secret_name(name), namespace)
        exists = True
    except ApiException as exc:
        if exc.status != NOT_FOUND or not again:
            raise  # no such key: nothing is touched
        exists = False
    await Ledgers(kube.core, sandboxes).mark_revoked(name)
    if exists:
        await kube.core.delete_namespaced_secret(secret_name(name), namespace)
    print(f"revoked key {name!r}" + ("" if exists else " (its Secret was already gone)"), file=sys.stderr)
    listed = await kube.list_sandboxes(sandboxes, label_selector=f"{LABEL_OWNER}={name}")
    done: list[str] = []
    for sandbox in listed.get("items") or []:
        runtime_id = sandbox["metadata"]["name"]
        try:
            if delete:
                await kube.delete_sandbox(sandboxes, runtime_id)
            elif (sandbox.get("spec") or {}).get("state") != DesiredState.PAUSED:
                await kube.patch_sandbox(sandboxes, runtime_id, {"spec": {"state": DesiredState.PAUSED.value}})
            else:
                continue
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                raise
        done.append(runtime_id)
    if delete:  # their session Secrets go with them (owned), and so do claims of starts still on their way
        await kube.core.delete_collection_namespaced_secret(
            sandboxes, label_selector=f"{LABEL_OWNER}={name},{LABEL_SESSION_KEY}=true"
        )
    if done:
        print(f"{'deleted' if delete else 'paused'} its sandboxes: {' '.join(sorted(done))}", file=sys.stderr)
