#!/usr/bin/env python3
"""The SandboxPool whose members serve a given /start: print it, or create or replace it in the cluster.

Usage: .venv/bin/python hack/pool-manifest.py --name NAME --size N [--start BODY.json] [--apply]
       .venv/bin/python hack/pool-manifest.py --name NAME --delete

BODY is a /start request body as JSON (from stdin without --start). `make run` (hack/run.sh) declares its warm
pool with it, for the body the OpenHands app server sends by default (docs/pools.md).

The template is built by the gateway's own code (`kubehands.spec.objects.build_sandbox`, with `Settings` read from
the same KUBEHANDS_* environment the gateway gets), so it matches that /start by construction
(`kubehands.spec.pools.matches`). Its env is what the gateway derives from its settings (RUNTIME_URL, the VS Code
base paths in path mode) plus the body's boot-only variables (`kubehands.spec.pools.boot_only`): a member can only
have been booted with those, while POST /api/init delivers every other variable of a claiming /start, so the pool
also serves /starts that add or change them (an LLM_* key, the app's webhook and CORS variables).

--apply creates the pool, or replaces the spec of an existing one (the operator then replaces members built from
an older template); --delete deletes it (its members go with it). Both use $KUBEHANDS_KUBECONFIG, else $KUBECONFIG.
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from kubehands.api.keys import KeyRecord
from kubehands.api.settings import Settings
from kubehands.crd import constants
from kubehands.crd.pool_model import SandboxPool
from kubehands.kube import CONFLICT, NOT_FOUND, SANDBOX_POOLS
from kubehands.spec import objects, pools
from kubehands.spec.errors import InvalidRequest
from kubehands.spec.request import StartRequest

# The /start is derived as for a key without a profile: a profile's env, nodeSelector, tolerations or volumes
# would change the Sandbox (and a key with volumes never gets a warm start).
TEMPLATE_CALLER = KeyRecord(name="pool-template", digest="0" * 64)
LABELS = {constants.LABEL_PART_OF: constants.PART_OF, "app.kubernetes.io/component": "warm-pool"}
REPLACE_ATTEMPTS = 5


def pool_template(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The pool template for /starts like `body`, on a gateway with `settings`."""
    request = StartRequest.model_validate({"session_id": "pool-template", **body})
    spec = objects.build_sandbox(request, TEMPLATE_CALLER, settings, objects.mint_runtime_id(), "unused")["spec"]
    without_env = request.model_copy(update={"environment": None})
    derived = {e["name"] for e in objects.build_environment(without_env, TEMPLATE_CALLER, settings)}
    template = pools.template_from_spec(spec)
    env = [e for e in spec.get("env") or [] if e["name"] in derived or pools.boot_only(e["name"])]
    if env:
        template["env"] = env
    else:
        template.pop("env", None)
    return template


def pool_manifest(name: str, size: int, body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The SandboxPool, checked against the CRD's model."""
    manifest = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.POOL_KIND,
        "metadata": {"name": name, "namespace": settings.namespace, "labels": dict(LABELS)},
        "spec": {"size": size, "template": pool_template(body, settings)},
    }
    SandboxPool.model_validate(manifest)
    return manifest


def _custom_api(kubeconfig: str | None) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))


def apply(custom: client.CustomObjectsApi, manifest: dict[str, Any]) -> str:
    """Create the pool, or replace the spec and labels of the existing one; returns what was done."""
    metadata = manifest["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    coordinates = SANDBOX_POOLS.coordinates()
    try:
        custom.create_namespaced_custom_object(namespace=namespace, body=manifest, **coordinates)
        return "created"
    except ApiException as exc:
        if exc.status != CONFLICT:
            raise
    for _ in range(REPLACE_ATTEMPTS):
        current = custom.get_namespaced_custom_object(namespace=namespace, name=name, **coordinates)
        if current.get("spec") == manifest["spec"]:
            return "unchanged"
        # Keep what others wrote into metadata (the operator's annotations, finalizers); replace the spec.
        kept = dict(current["metadata"])
        kept["labels"] = {**(kept.get("labels") or {}), **metadata["labels"]}
        body = {**manifest, "metadata": kept}
        try:
            custom.replace_namespaced_custom_object(namespace=namespace, name=name, body=body, **coordinates)
            return "replaced"
        except ApiException as exc:  # changed meanwhile (409): read it again
            if exc.status != CONFLICT:
                raise
    raise RuntimeError(f"sandboxpool/{name} kept changing; not replaced")


def delete(custom: client.CustomObjectsApi, namespace: str, name: str) -> str:
    try:
        custom.delete_namespaced_custom_object(
            namespace=namespace, name=name, propagation_policy="Background", **SANDBOX_POOLS.coordinates()
        )
    except ApiException as exc:
        if exc.status == NOT_FOUND:
            return "absent"
        raise
    return "deleted"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hack/pool-manifest.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="the SandboxPool's name (a DNS label)")
    parser.add_argument("--size", type=int, default=1, help="dormant members to keep (default 1)")
    parser.add_argument("--start", type=Path, help="the /start body as a JSON file (default: stdin)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--apply", action="store_true", help="create or replace the pool in the cluster")
    action.add_argument("--delete", action="store_true", help="delete the pool (and its members)")
    args = parser.parse_args(argv)
    if args.size < 0:
        parser.error("--size must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"error: the gateway settings (KUBEHANDS_*) do not validate: {exc}", file=sys.stderr)
        return 1
    kubeconfig = settings.kubeconfig or os.environ.get("KUBECONFIG")
    manifest: dict[str, Any] | None = None
    if not args.delete:
        try:
            text = args.start.read_text() if args.start else sys.stdin.read()
            body = json.loads(text)
            if not isinstance(body, dict):
                raise ValueError("the /start body must be a JSON object")
            manifest = pool_manifest(args.name, args.size, body, settings)
        except (OSError, ValueError) as exc:  # ValidationError and JSONDecodeError are ValueErrors
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except InvalidRequest as exc:  # what the gateway would answer 422 to
            print(f"error: the gateway would refuse this /start: {exc.detail}", file=sys.stderr)
            return 1
        if not args.apply:
            yaml.safe_dump(manifest, sys.stdout, sort_keys=False)
            return 0
    try:
        custom = _custom_api(kubeconfig)
        if manifest is None:
            outcome = delete(custom, settings.namespace, args.name)
        else:
            outcome = apply(custom, manifest)
    except ApiException as exc:
        print(f"error: the API server answered {exc.status} {exc.reason}: {exc.body}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError, config.ConfigException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"sandboxpool/{args.name} {outcome} (namespace {settings.namespace})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
