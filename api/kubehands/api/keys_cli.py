"""`kubehands keys create NAME | list | revoke NAME`: manage API keys (Secrets holding sha256 hashes).

The raw key is printed once, at creation; only its hash is stored.
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kubehands.api.constants import LABEL_API_KEY
from kubehands.api.keys import (
    Profile,
    build_key_secret,
    generate_key,
    hash_key,
    record_from_secret,
    secret_name,
    validate_key_name,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", default=os.environ.get("KUBEHANDS_KUBECONFIG"), help="kubeconfig path"
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get("KUBEHANDS_KEYS_NAMESPACE")
        or os.environ.get("KUBEHANDS_NAMESPACE")
        or "default",
        help="namespace of the key Secrets (the gateway's namespace)",
    )
    sub = parser.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("name", help="key name = tenant (lower-case letters, digits, '-')")
    create.add_argument(
        "--profile", type=Path, help="YAML/JSON sandbox profile (volumes, env, nodeSelector, ...)"
    )
    create.add_argument("--max-running", type=int, help="running-sandbox limit for this key")
    sub.add_parser("list", help="list key names and their profiles")
    revoke = sub.add_parser("revoke", help="delete a key")
    revoke.add_argument("name")


def _core(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.CoreV1Api()


def load_profile(path: Path | None, max_running: int | None) -> Profile:
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {} if path else {}
    if max_running is not None:
        data["maxRunning"] = max_running
    return Profile.model_validate(data)


def run(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        if args.keys_command == "create":
            name = validate_key_name(args.name)
            profile = load_profile(args.profile, args.max_running)
            raw = generate_key()
            body = build_key_secret(name, hash_key(raw), profile, args.namespace)
            _core(args.kubeconfig).create_namespaced_secret(args.namespace, body)
            print(raw)
            print(f"created key {name!r}; store it now, it cannot be shown again", file=sys.stderr)
        elif args.keys_command == "list":
            secrets = _core(args.kubeconfig).list_namespaced_secret(
                args.namespace, label_selector=f"{LABEL_API_KEY}=true"
            )
            from kubernetes.client import ApiClient

            for item in secrets.items:
                record = record_from_secret(ApiClient().sanitize_for_serialization(item))
                if record is not None:
                    profile = record.profile.model_dump(by_alias=True, exclude_defaults=True)
                    print(f"{record.name}\t{json.dumps(profile)}")
        elif args.keys_command == "revoke":
            _core(args.kubeconfig).delete_namespaced_secret(
                secret_name(validate_key_name(args.name)), args.namespace
            )
            print(f"revoked key {args.name!r}", file=sys.stderr)
    except ApiException as exc:
        if exc.status == 409:
            print(f"error: key {args.name!r} already exists", file=sys.stderr)
        elif exc.status == 404:
            print(f"error: no key {args.name!r}", file=sys.stderr)
        else:
            print(f"error: Kubernetes API: {exc.status} {exc.reason}", file=sys.stderr)
        return 1
    except (ValueError, ValidationError, OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
